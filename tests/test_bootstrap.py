"""Bootstrap under a real `podvisor start`: git clone/pull from a local bare repo, mounted checkouts, the
requirements install, hooks in order, and the run manifest."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path


from conftest import base_env, wait_for
from entrypoint.state_dir import StateDir

TOKEN = "ghp_SecretGitToken0123456789"


def _git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(cwd or "/tmp")})


def _origin(tmp_path):
    """A bare repo with one commit, and a work tree to push more from."""
    bare, work = tmp_path / "origin.git", tmp_path / "author"
    _git("init", "--bare", "-b", "main", str(bare))
    _git("clone", str(bare), str(work))
    (work / "train.py").write_text("print('v1')\n")
    _git("add", ".", cwd=work)
    _git("commit", "-m", "v1", cwd=work)
    _git("push", "origin", "HEAD:main", cwd=work)
    return bare, work


def _env(tmp_path, **extra):
    settings = dict(SSH_ENABLED="false", JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false",
                    UPLOAD_WATCH_DIRS=str(tmp_path / "ckpt"), UPLOAD_DESTINATIONS=f"file://{tmp_path / 'vol'}",
                    REPO_DIR=str(tmp_path / "repo"), PODVISOR_WORKSPACE=str(tmp_path))
    return base_env(tmp_path / "state", **{**settings, **extra})


def _boot(stack_factory, env):
    """A stack whose bootstrap (it runs beside the services) has finished."""
    stack = stack_factory(env)
    stack.wait_state("uploader", "RUNNING")
    wait_for(lambda: stack.status()["bootstrap"]["state"] in ("done", "failed"), 300, 0.3,
             lambda: f"the bootstrap to finish\n{stack.output[-3000:]}")
    return stack


def _phases(tmp_path) -> list[dict]:
    return [json.loads(l) for l in (tmp_path / "state" / "timings.jsonl").read_text().splitlines()]


def test_clone_then_pull_and_the_token_stays_secret(open_tmp, stack_factory):
    tmp_path = open_tmp  # the venv is made as the login user
    bare, work = _origin(tmp_path)
    _wheel(tmp_path / "wheels")
    (work / "requirements.txt").write_text(f"--no-index\n--find-links {tmp_path / 'wheels'}\npodvisor_demo_pkg\n")
    _git("add", ".", cwd=work)
    _git("commit", "-m", "requirements", cwd=work)
    _git("push", "origin", "HEAD:main", cwd=work)
    env = _env(tmp_path, REPO_URL=f"file://{bare}", GIT_TOKEN=TOKEN, GIT_AUTO_PULL="true",
               USER_VENV=str(tmp_path / "venv"))
    stack = _boot(stack_factory, env)
    assert (tmp_path / "repo" / "train.py").read_text() == "print('v1')\n"
    assert "bootstrap: cloned into" in stack.output, stack.output
    wait_for(lambda: f"bootstrap: installed {tmp_path / 'repo' / 'requirements.txt'}" in stack.output, 30, 0.2,
             lambda: f"the requirements of a repo cloned at this boot installed at this boot\n{stack.output[-2000:]}")
    assert stack.stop() == 0
    (work / "train.py").write_text("print('v2')\n")
    _git("commit", "-am", "v2", cwd=work)
    _git("push", "origin", "HEAD:main", cwd=work)
    stack = _boot(stack_factory, env)
    assert (tmp_path / "repo" / "train.py").read_text() == "print('v2')\n"
    assert "bootstrap: pulled" in stack.output
    assert TOKEN not in stack.output
    assert TOKEN not in (tmp_path / "repo" / ".git" / "config").read_text()
    assert "bootstrap:repo" in [p["phase"] for p in _phases(tmp_path)]
    wait_for(lambda: (tmp_path / "state" / "manifest.json").exists(), 60, 0.3)
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert "GIT_TOKEN" in manifest["variables_set"] and TOKEN not in json.dumps(manifest)
    assert manifest["repo_commit"] and manifest["python"] and manifest["gpus"].startswith("no GPU")
    assert any(line.startswith("torch==") for line in manifest["pip_freeze"])


def test_a_clone_that_fails_says_gits_reason_not_the_tail_of_its_hint(tmp_path, stack_factory):
    stack = _boot(stack_factory, _env(tmp_path, REPO_URL=f"file://{tmp_path / 'missing.git'}", GIT_TOKEN=TOKEN))
    assert f"git clone failed: fatal: '{tmp_path / 'missing.git'}' does not appear to be a git repository" in \
        stack.output, stack.output[-2000:]
    assert "uploader" in stack.status()["services"] and TOKEN not in stack.output


def test_mounted_checkout_is_left_alone_and_other_content_is_skipped(tmp_path, stack_factory):
    bare, _ = _origin(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname='mine'\n")
    stack = _boot(stack_factory, _env(tmp_path, REPO_URL=f"file://{bare}"))
    assert "mounted checkout (not git); left alone" in stack.output
    assert sorted(p.name for p in repo.iterdir()) == ["pyproject.toml"]
    assert stack.stop() == 0
    (repo / "pyproject.toml").unlink()
    (repo / "notes.txt").write_text("mine")
    stack = _boot(stack_factory, _env(tmp_path, REPO_URL=f"file://{bare}"))
    assert "not empty and not a checkout; not cloning into it" in stack.output
    assert sorted(p.name for p in repo.iterdir()) == ["notes.txt"]


def _wheel(folder, name="podvisor_demo_pkg", version="1.0"):
    """A minimal pure-Python wheel, made here so the install needs no index."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def test_requirements_go_to_the_users_venv_that_the_job_and_kernels_use(open_tmp, stack_factory):
    import os
    import sys

    tmp_path, venv = open_tmp, open_tmp / "venv"
    repo = tmp_path / "repo"
    repo.mkdir()
    _wheel(tmp_path / "wheels")
    (repo / "requirements.txt").write_text(f"--no-index\n--find-links {tmp_path / 'wheels'}\npodvisor_demo_pkg\n")
    probe = "import podvisor_demo_pkg, sys; print('demo', podvisor_demo_pkg.VALUE, sys.prefix)"
    env = _env(tmp_path, USER_VENV=str(venv), SSH_USER="pvtest", JOB_COMMAND=f"python -c \"{probe}\"")
    stack = _boot(stack_factory, env)
    wait_for(lambda: "[job] demo 42" in stack.output, 300, 0.5, lambda: stack.output[-3000:])
    assert f"[job] demo 42 {venv}" in stack.output, "the job runs the user's venv"
    assert "[pip] Successfully installed podvisor_demo_pkg-1.0" in stack.output.replace("podvisor-demo-pkg", "podvisor_demo_pkg")
    assert f"bootstrap: installed {repo / 'requirements.txt'} into {venv / 'bin' / 'python'}" in stack.output
    own = subprocess.run([sys.executable, "-c", "import podvisor_demo_pkg"], capture_output=True)
    assert own.returncode != 0, "podvisor's own venv stays private"
    if os.geteuid() == 0:
        import pwd

        assert venv.stat().st_uid == pwd.getpwnam("pvtest").pw_uid, "the login user owns the venv"
        kernel = json.loads((Path(pwd.getpwnam("pvtest").pw_dir) / ".local/share/jupyter/kernels/workspace-venv/"
                             "kernel.json").read_text())
        assert kernel["argv"][:3] == [str(venv / "bin" / "python"), "-m", "ipykernel_launcher"]
        assert subprocess.run([kernel["argv"][0], "-c", "import ipykernel, podvisor_demo_pkg"]).returncode == 0
        shell = subprocess.run(["setpriv", "--reuid=pvtest", "--regid=pvtest", "--init-groups", "bash", "-c",
                                f". {StateDir(tmp_path / 'state').session_env_file}; command -v python; "
                                "command -v podvisor"],
                               capture_output=True, text=True)
        assert shell.stdout.split()[0] == str(venv / "bin" / "python"), "login shells use the venv"
        assert shell.stdout.split()[1].endswith("/podvisor"), "and still find podvisor"
    assert stack.stop() == 0
    stack = _boot(stack_factory, env)
    wait_for(lambda: "requirements unchanged; nothing to install" in stack.output, 60, 0.3, lambda: stack.output[-2000:])
    assert stack.stop() == 0
    (repo / "requirements.txt").write_text("--no-index\npodvisor-no-such-package==9.9.9\n")
    stack = _boot(stack_factory, env)
    wait_for(lambda: "bootstrap: requirements failed: pip install -r" in stack.output, 60, 0.3,
             lambda: stack.output[-2000:])
    assert stack.state("uploader") == "RUNNING"


def test_hooks_run_in_order_and_a_failing_one_does_not_stop_the_boot(open_tmp, stack_factory):
    tmp_path, workspace = open_tmp, open_tmp / "workspace"  # the workspace is the login user's; its parent root's
    workspace.mkdir()
    trail, seen = tmp_path / "trail", tmp_path / "seen"
    for shared in (trail, seen):  # on_start.sh, on the workspace, runs as the login user
        shared.touch(mode=0o666)
        shared.chmod(0o666)
    pre, post = tmp_path / "pre.sh", tmp_path / "post.sh"
    look = f"echo ${{GIT_TOKEN:-unset}} ${{VAST_API_KEY:-unset}} ${{RUNPOD_API_KEY:-unset}} ${{HF_TOKEN:-unset}} >> {seen}"
    pre.write_text(f"echo pre >> {trail}\n{look}\necho from-pre\nexit 3\n")
    post.write_text(f"echo post >> {trail}\n{look}\n")
    (workspace / "on_start.sh").write_text(f"echo on_start >> {trail}\n")
    # The user's own token reaches hooks and sessions; control credentials only when passed through by name.
    secrets = dict(GIT_TOKEN=TOKEN, VAST_API_KEY="vast-CANARY-0123456789", RUNPOD_API_KEY="rpa_CANARY0123456789",
                   HF_TOKEN="hf_CANARY0123456789", SESSION_ENV_PASSTHROUGH="runpod_api_key")
    stack = _boot(stack_factory, _env(tmp_path, PRE_START_SCRIPT=str(pre), POST_START_SCRIPT=str(post),
                                      PODVISOR_WORKSPACE=str(workspace), **secrets))
    wait_for(lambda: trail.exists() and "post" in trail.read_text(), 30, 0.2, lambda: stack.output[-2000:])
    assert trail.read_text().split() == ["pre", "on_start", "post"]
    assert "[hook:pre_start] from-pre" in stack.output
    assert "bootstrap: pre_start failed" in stack.output and "exited with 3" in stack.output
    assert seen.read_text().splitlines() == ["unset unset rpa_CANARY0123456789 hf_CANARY0123456789"] * 2
    control = StateDir(tmp_path / "state").supervisor().supervisor  # the post-start step is supervised, and done
    wait_for(lambda: control.getProcessInfo("post_start")["statename"] == "EXITED", 30, 0.2,
             lambda: str(control.getProcessInfo("post_start")))
    session = StateDir(tmp_path / "state").session_env_file.read_text()
    assert "HF_TOKEN=hf_CANARY" in session and "RUNPOD_API_KEY=rpa_CANARY" in session
    assert TOKEN not in session and "vast-CANARY" not in session


def test_a_hook_the_login_user_could_change_never_runs_as_root(open_tmp, stack_factory):
    """The login user owns the workspace, so an on_start.sh planted there (or a PRE_START_SCRIPT on the volume)
    is theirs to write: it runs as that user, without the control credentials, and status says so. A script
    that is root's alone on its whole path still runs as root."""
    import os
    import pwd

    if os.geteuid() != 0:
        import pytest
        pytest.skip("a login user other than the one running needs root")
    workspace, baked = open_tmp / "workspace", open_tmp / "image"
    workspace.mkdir()
    baked.mkdir(mode=0o755)
    seen = open_tmp / "seen"
    seen.touch(mode=0o666)
    seen.chmod(0o666)
    look = f"echo $(id -u) ${{RUNPOD_API_KEY:-unset}} ${{HF_TOKEN:-unset}} $HOME >> {seen}\n"
    (baked / "root.sh").write_text(look)
    stack = stack_factory(_env(workspace, SSH_USER="pvhook", PRE_START_SCRIPT=str(baked / "root.sh"),
                               RUNPOD_API_KEY="rpa_CANARY0123456789", HF_TOKEN="hf_CANARY0123456789"))
    stack.wait_state("uploader", "RUNNING")
    user = pwd.getpwnam("pvhook")
    assert workspace.stat().st_uid == user.pw_uid
    wait_for(lambda: stack.status()["bootstrap"]["state"] == "done", 120, 0.3, lambda: stack.output[-3000:])
    assert seen.read_text().splitlines() == ["0 unset hf_CANARY0123456789 /root"], "root's own script: as root"
    stack.stop()
    # The login user plants a hook on the volume; the next boot runs it, as that user.
    planted = workspace / "on_start.sh"
    planted.write_text(look)
    os.chown(planted, user.pw_uid, user.pw_gid)
    seen.write_text("")
    stack = stack_factory(stack.env)
    wait_for(lambda: "bootstrap: done in" in stack.output, 120, 0.3, lambda: stack.output[-3000:])
    assert seen.read_text().splitlines() == ["0 unset hf_CANARY0123456789 /root",
                                             f"{user.pw_uid} unset hf_CANARY0123456789 {user.pw_dir}"]
    assert f"hook on_start: {planted} runs as pvhook, not root: {planted} belongs to pvhook" in stack.output
    summary = stack.status()["bootstrap"]["summary"]
    assert f"on_start {planted} ran as pvhook, not root: {planted} belongs to pvhook" in summary, summary


def test_a_strict_hook_that_fails_fails_the_job_not_the_pod(tmp_path, stack_factory):
    """A missing script with HOOKS_STRICT=true: the services stay up, the job never runs, and a Job-style pod
    (JOB_ON_EXIT=stop, AUTOSTOP_ACTION=exit) ends non-zero saying why."""
    ran = tmp_path / "ran"
    env = _env(tmp_path, PRE_START_SCRIPT=str(tmp_path / "missing.sh"), HOOKS_STRICT="true",
               JOB_COMMAND=f"touch {ran}", JOB_ON_EXIT="stop", AUTOSTOP_ENABLED="true", AUTOSTOP_ACTION="exit")
    stack = stack_factory(env)
    assert stack.proc.wait(90) == 1, stack.output[-3000:]
    assert not ran.exists()
    assert "container exits 1: the bootstrap failed: pre_start:" in stack.output
    assert "does not exist (HOOKS_STRICT=true)" in stack.output


def test_a_strict_hook_failure_leaves_the_services_up_and_status_says_why(tmp_path, stack_factory):
    pre = tmp_path / "pre.sh"
    pre.write_text("exit 1\n")
    stack = _boot(stack_factory, _env(tmp_path, PRE_START_SCRIPT=str(pre), HOOKS_STRICT="true"))
    boot = stack.status()["bootstrap"]
    assert boot["state"] == "failed" and "pre_start" in boot["summary"] and "exited with 1" in boot["summary"]
    assert stack.state("uploader") == "RUNNING" and stack.proc.poll() is None


def test_ssh_answers_while_a_slow_hook_runs_and_the_job_waits_for_it(open_tmp, stack_factory):
    """A pre-start hook that takes long (a clone, a dataset download) must not leave the pod unreachable."""
    import os
    import socket
    import sys

    if os.geteuid() != 0:
        import pytest
        pytest.skip("sshd and the login user need root")
    from conftest import free_port

    tmp_path = open_tmp
    gate, trail = tmp_path / "gate", tmp_path / "trail"
    trail.touch(mode=0o666)
    trail.chmod(0o666)
    pre = tmp_path / "pre.sh"
    pre.write_text(f"echo hook-started >> {trail}\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n")
    port = free_port()
    stack = stack_factory(_env(tmp_path, SSH_ENABLED="true", SSH_PORT=str(port), SSH_USER="pvtest",
                               PODVISOR_BIND_HOST="127.0.0.1", PRE_START_SCRIPT=str(pre),
                               JOB_COMMAND=f"{sys.executable} -c \"open('{trail}', 'a').write('job\\\\n')\""))
    wait_for(lambda: trail.read_text().startswith("hook-started"), 30, 0.2, lambda: stack.output[-2000:])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(64).startswith(b"SSH-"), "sshd answers while the hook still runs"
    status = stack.status()
    assert status["bootstrap"]["summary"].startswith("running PRE_START_SCRIPT, ")
    wait_for(lambda: "job: waiting for the bootstrap (" in stack.output, 30, 0.2, lambda: stack.output[-2000:])
    assert trail.read_text().split() == ["hook-started"], "the job waits for the bootstrap"
    gate.touch()
    wait_for(lambda: "job" in trail.read_text(), 30, 0.2, lambda: stack.output[-2000:])
    assert stack.status()["bootstrap"]["state"] == "done"


def test_provisioning_script_from_a_url_runs_like_a_pre_start_hook(tmp_path, stack_factory):
    """Vast's PROVISIONING_SCRIPT is a URL: a loopback HTTP server stands in for the host serving it."""
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "provision.sh").write_text(f"echo provisioned > {tmp_path / 'provisioned'}\n")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/provision.sh"
        stack = _boot(stack_factory, _env(tmp_path, PROVISIONING_SCRIPT=url))
        wait_for(lambda: (tmp_path / "provisioned").exists(), 30, 0.2, lambda: stack.output[-2000:])
        assert "hook provisioning done" in stack.output
    finally:
        server.shutdown()
