"""The job wrapper supervisord runs: it owns the restart policy (so each restart can be told where to resume),
runs the command as the login user, records running/succeeded/failed, and with JOB_ON_EXIT=stop waits for the
uploads to drain before stopping the pod through the autostop actions."""
from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from entrypoint import login_user
from entrypoint.backoff import Backoff
from entrypoint.bootstrap import manifest, settings_of, userenv, wait_done
from entrypoint.context import PodContext
from entrypoint.files import write_atomically
from entrypoint.gpu import inventory
from entrypoint.registry import Restores, StopsPod, active, configured, keep_files, stop_reasons
from entrypoint.steps import newest_first, step_of
from services.job.cluster import SINGLE, Cluster, detect
from services.job.layout import checkpoint_dir, status_path
from services.job.settings import JobSettings

log = logging.getLogger("job")
NCCL_DEFAULTS = {"NCCL_DEBUG": "WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_IB_DISABLE": "0"}
RESTART_BACKOFF = Backoff(2.0, 60.0)
"""The pause before the job's next attempt (JOB_RESTART=on-failure)."""
DRAIN_POLL_SECONDS = 1.0
RESTORE_RETRY_SECONDS = 10.0
"""While held for a restore (no destination answers), how often the job asks again."""


def latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    names = [p.name for p in folder.iterdir() if step_of(p.name) is not None and not p.name.startswith(".")]
    return folder / newest_first(names)[0] if names else None


def command_line(settings: JobSettings, resume: Path | None, gpus: int, cluster: Cluster = SINGLE) -> list[str]:
    """The job's argv: JOB_COMMAND (+ resume args), through torchrun when several processes are asked for: on one
    node standalone, across nodes through torchrun's c10d rendezvous on node 0, which every node finds by the same
    endpoint and id (podvisor's run id differs from node to node, so the id is the meeting point's)."""
    argv = shlex.split(settings.job_command)
    if resume and settings.job_resume_args:
        argv += shlex.split(settings.job_resume_args.replace("{checkpoint}", shlex.quote(str(resume))))
    nproc = max(gpus, 1) if settings.job_nproc == "auto" else int(settings.job_nproc)
    if nproc == 1 and not cluster.multi_node:
        return argv
    if Path(argv[0]).name.startswith("python"):
        argv = argv[1:]
    if not cluster.multi_node:
        return ["torchrun", "--standalone", f"--nproc-per-node={nproc}", *argv]
    return ["torchrun", f"--nnodes={cluster.nodes}", f"--node-rank={cluster.rank}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={cluster.endpoint}", f"--rdzv-id=podvisor-{cluster.endpoint.replace(':', '-')}",
            f"--rdzv-conf=join_timeout={settings.job_rdzv_timeout_seconds}",
            f"--max-restarts={settings.job_max_restarts}", f"--nproc-per-node={nproc}", *argv]


def job_environment(base: dict[str, str], settings: JobSettings, resume: Path | None, attempt: int,
                    nproc_many: bool, python_env: dict[str, str] | None = None,
                    cluster: Cluster = SINGLE) -> dict[str, str]:
    """The job's environment: the user's (`base`: no control credentials), the user's venv first on PATH
    (where the requirements went), and across nodes the interface the platform says inter-node traffic takes
    (NCCL's and gloo's own variables, so a value the user set wins)."""
    env = {**base, **(python_env or {})}
    env.pop("PODVISOR_SERVICE", None)
    if resume:
        env["PODVISOR_RESUME_FROM"] = str(resume)
    else:
        env.pop("PODVISOR_RESUME_FROM", None)
    env["PODVISOR_JOB_ATTEMPT"] = str(attempt)
    if not settings.wandb_mode and not (settings.wandb_api_key and settings.wandb_api_key.get_secret_value()):
        env["WANDB_MODE"] = "offline"  # a run never fails for want of a key
    if nproc_many:
        for key, value in NCCL_DEFAULTS.items():
            env.setdefault(key, value)
        env.setdefault("OMP_NUM_THREADS", "1")
    if cluster.multi_node and cluster.interface:
        env.setdefault("NCCL_SOCKET_IFNAME", cluster.interface)
        env.setdefault("GLOO_SOCKET_IFNAME", cluster.interface)
    return env


class Runner:
    def __init__(self, ctx: PodContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings(JobSettings)
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.status: dict[str, Any] = {"state": "starting", "attempts": 0, "exit_code": None}

    def write(self, **changes: Any) -> None:
        self.status.update(changes)
        path = status_path(self.ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(self.status, indent=1))

    def resume_point(self) -> Path | None:
        folder = checkpoint_dir(self.ctx)
        found = latest_checkpoint(folder)
        for restores in configured(self.ctx, Restores) if found is None else []:
            held = False
            while not self.stopping:
                try:
                    restored = restores.restore(self.ctx)
                except Exception as exc:
                    log.error("job: restoring a checkpoint failed: %s", type(exc).__name__)
                    break
                if restored.state != "held":
                    break
                if not held:  # said once; status shows it all along
                    held = True
                    log.error("job: held, not started: %s", restored.detail)
                self.write(state="held", held_reason=restored.detail)
                deadline = time.monotonic() + RESTORE_RETRY_SECONDS
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.5)
            if held and not self.stopping:
                log.info("job: restore settled; starting")
            found = latest_checkpoint(folder)
        return found

    def attempt(self, number: int) -> int:
        resume = self.resume_point()
        if self.stopping:  # stopped while held for a restore: never started
            return 0
        gpus = len(inventory()[0])
        cluster = detect(self.settings, os.environ)
        argv = command_line(self.settings, resume, gpus, cluster)
        env = job_environment(self.ctx.environment_for(), self.settings, resume, number, argv[0] == "torchrun",
                              userenv.environment(settings_of(self.ctx)), cluster)
        user = pwd.getpwnam(login_user.name(self.ctx))
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        if datasets := self.ctx.paths.dataset_dirs():
            env["PODVISOR_DATASET_DIRS"] = os.pathsep.join(datasets)
        workdir = self.settings.job_workdir or self._default_workdir()
        log.info("job: attempt %d: %s%s", number + 1, shlex.join(argv),
                 f" (resuming from {resume})" if resume else "")
        started = time.time()
        self.write(state="running", attempts=number + 1, started_epoch=started, resume_from=str(resume or "") or None,
                   exit_code=None, duration_s=None, held_reason=None,
                   cluster={"nodes": cluster.nodes, "rank": cluster.rank, "source": cluster.source,
                            "endpoint": cluster.endpoint if cluster.multi_node else None})
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.child = subprocess.Popen(argv, cwd=workdir, env=env, start_new_session=True, **as_user)
        code = self.child.wait()
        self.write(exit_code=code, duration_s=round(time.time() - started, 1))
        return code

    def _default_workdir(self) -> str:
        bootstrap = settings_of(self.ctx)
        for candidate in (bootstrap.repo_dir if bootstrap else None, self.ctx.core.podvisor_workspace):
            if candidate and candidate.is_dir():
                return str(candidate)
        return "/"

    def run(self) -> int:
        boot = wait_done(self.ctx, "job", stopping=lambda: self.stopping)
        if boot.get("state") == "failed":
            log.error("job: not started: the bootstrap failed (%s)", boot.get("reason", "see its log"))
            self.conclude("failed", 1, 0.0, 0, f"the bootstrap failed: {boot.get('reason', '')}")
            return 0
        started = time.time()
        code, number = 1, 0
        while True:
            code = self.attempt(number)
            if code == 0 or self.stopping:
                break
            if self.settings.job_restart == "never" or number >= self.settings.job_max_restarts:
                break
            number += 1
            delay = RESTART_BACKOFF.delay(number)
            log.warning("job: exited with %d; restart %d of %d in %.0f s", code, number,
                        self.settings.job_max_restarts, delay)
            self.write(state="restarting")
            time.sleep(delay)
        state = "stopped" if self.stopping else ("succeeded" if code == 0 else "failed")
        self.conclude(state, code, round(time.time() - started, 1), number + 1, f"the job failed with exit code {code}")
        return 0

    def conclude(self, state: str, code: int, duration: float, attempts: int, why: str) -> None:
        """Record how the job ended, ship that, and with JOB_ON_EXIT=stop stop the pod once uploads drained."""
        self.write(state=state, exit_code=code, total_duration_s=duration)
        log.info("job: %s (exit code %d) after %.1f s and %d attempt(s)", state, code, duration, attempts)
        if state == "failed":
            # The container's own exit code when it ends: a Kubernetes Job is Failed, not Completed.
            self.ctx.paths.exit_code_file.write_text(f"{min(max(code, 1), 255)}\n{why}\n")
        self.record(state, code, duration)
        if self.settings.job_on_exit == "stop" and not self.stopping:
            self.finish(state)

    def record(self, state: str, code: int, duration: float) -> None:
        """Put the outcome in the run manifest and ship it with the job's log, whatever JOB_ON_EXIT says."""
        path = self.ctx.paths.manifest_file
        manifest.update(path, {"job": {"state": state, "exit_code": code, "duration_s": duration,
                                       "attempts": self.status["attempts"]}})
        # The live log keeps growing (this wrapper writes to it); ship a copy frozen at the job's end.
        frozen = self.ctx.paths.service_dir("job") / "job.log"
        if (self.ctx.paths.program_log("job")).exists():
            shutil.copyfile(self.ctx.paths.program_log("job"), frozen)
        keep_files(self.ctx, [path, frozen])

    def finish(self, state: str) -> None:
        """Wait for every upload to drain, then stop the pod the way autostop would."""
        self.write(state=f"{state}, waiting for uploads")
        reasons = self.blockers()
        if reasons:
            log.info("job: %s before stopping the pod", "; ".join(reasons))
        while reasons:
            time.sleep(DRAIN_POLL_SECONDS)
            reasons = self.blockers()
        self.write(state=state)
        stoppers = configured(self.ctx, StopsPod)
        if not stoppers:
            log.error("job: JOB_ON_EXIT=stop, but no service can stop the pod (are the AUTOSTOP_* settings "
                      "valid?); the pod keeps running")
            return
        try:
            stoppers[0].stop(self.ctx)
        except Exception as exc:
            log.error("job: stopping the pod failed: %s", exc)

    def blockers(self) -> list[str]:
        return stop_reasons(self.ctx, active(self.ctx), "blocker")

    def terminate(self, *_: object) -> None:
        """The pod is stopping: pass SIGTERM to the whole job so it can save a last checkpoint."""
        self.stopping = True
        if self.child and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGTERM)


def main() -> None:
    from entrypoint import logs
    from entrypoint.context import current

    ctx = current()
    logs.configure(ctx.core.podvisor_log_level)
    runner = Runner(ctx)
    signal.signal(signal.SIGTERM, runner.terminate)
    raise SystemExit(runner.run())
