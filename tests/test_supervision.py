"""A real supervisord under `podvisor start`: restarts, FATAL without a loop, ordered stop within the grace."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from entrypoint.state_dir import StateDir
from conftest import PODVISOR, base_env, wait_for, write_service

PROGRAM = '''
import os, signal, sys, time
name, log = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(log, "a") as fh:
        fh.write(f"{name} {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(f"{name} up", flush=True)
while True:
    time.sleep(1)
'''


def _program_service(extra, name, priority, tmp_path, stop_wait="5"):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    write_service(extra, name, f'''
        import shlex, sys
        from entrypoint.registry import Program, Restart, Service
        SERVICE = Service(name="{name}", program=Program(
            priority={priority}, stop_wait={stop_wait},
            command=lambda ctx: shlex.join([sys.executable, "{script}", "{name}", "{tmp_path}/stops.log"])))
    ''')


def test_killed_program_is_restarted_and_the_other_is_untouched(tmp_path, stack_factory):
    extra = tmp_path / "extra"
    _program_service(extra, "alpha", 100, tmp_path)
    _program_service(extra, "beta", 200, tmp_path)
    stack = stack_factory(base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra)))
    alpha = stack.wait_state("alpha", "RUNNING")
    beta = stack.wait_state("beta", "RUNNING")
    os.kill(alpha["pid"], signal.SIGKILL)
    wait_for(lambda: stack.status()["services"]["alpha"].get("pid") not in (None, alpha["pid"])
             and stack.state("alpha") == "RUNNING", 20, 0.3, "alpha restarted")
    assert stack.status()["services"]["beta"]["pid"] == beta["pid"]
    wait_for(lambda: "[alpha] alpha up" in stack.output, 10, what="prefixed program output on stdout")
    assert "alpha up" in (tmp_path / "state" / "logs" / "alpha.log").read_text()
    assert stack.stop() == 0


def test_crashing_program_ends_fatal_and_the_rest_keep_running(tmp_path, stack_factory):
    extra = tmp_path / "extra"
    _program_service(extra, "steady", 100, tmp_path)
    write_service(extra, "crasher", '''
        from entrypoint.registry import Program, Restart, Service
        # A start counts as failed for 10 s: on a loaded machine the crash may come after a 1 s startsecs.
        SERVICE = Service(name="crasher", program=Program(priority=200,
                                                          restart=Restart(start_seconds=10, start_retries=2),
                                                          command=lambda ctx: "sh -c 'echo boom; exit 3'"))
    ''')
    stack = stack_factory(base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra)))
    crasher = stack.wait_state("crasher", "FATAL", timeout=40)
    assert crasher["ready"] is False
    assert stack.state("steady") == "RUNNING"
    assert stack.proc.poll() is None, "a FATAL service must never take supervisord down"
    wait_for(lambda: "service crasher is FATAL" in stack.output, 10, what="one clear FATAL line")
    # No restart loop: FATAL is supervisord's own "given up", after the first start and its two retries.
    assert stack.output.count("spawned: 'crasher'") == 3
    assert stack.stop() == 0


def test_sigterm_stops_in_reverse_start_order_within_the_grace(tmp_path, stack_factory):
    extra = tmp_path / "extra"
    for name, priority in (("first", 100), ("second", 200), ("third", 300)):
        _program_service(extra, name, priority, tmp_path)
    state = tmp_path / "state"
    # Eight services and podvisor's two one-shots stop one after another: 22 s is the least grace they can be
    # held to (`stop_floor`); 30 s leaves a loaded machine's slower exits room without hiding a broken budget.
    stack = stack_factory(base_env(state, PODVISOR_EXTRA_SERVICES=str(extra), PODVISOR_GRACE_SECONDS="30"))
    for name in ("first", "second", "third"):
        stack.wait_state(name, "RUNNING")
    started = time.monotonic()
    code = stack.stop(signal.SIGTERM)
    took = time.monotonic() - started
    assert code == 0
    assert took < 30, f"stop took {took:.1f}s, over the 30 s grace"
    assert "PODVISOR_GRACE_SECONDS" not in stack.output
    order = [line.split()[0] for line in (tmp_path / "stops.log").read_text().splitlines()]
    assert order == ["third", "second", "first"]
    phases = [json.loads(line) for line in (state / "timings.jsonl").read_text().splitlines()]
    names = [p["phase"] for p in phases]
    assert names[:2] == ["validate", "state_dirs"] and "render" in names and "services_running" in names
    assert {p["run_id"] for p in phases} == {phases[0]["run_id"]}
    assert all({"ts_epoch_ms", "run_id", "phase", "status", "elapsed_ms"} <= set(p) for p in phases)


def test_sigint_stops_cleanly_too(tmp_path, stack_factory):
    extra = tmp_path / "extra"
    _program_service(extra, "only", 100, tmp_path)
    stack = stack_factory(base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra)))
    stack.wait_state("only", "RUNNING")
    assert stack.stop(signal.SIGINT) == 0
    assert "only" in (tmp_path / "stops.log").read_text()


def test_a_program_that_ignores_sigterm_is_killed_inside_the_grace(tmp_path, stack_factory):
    extra = tmp_path / "extra"
    write_service(extra, "stubborn", '''
        from entrypoint.registry import Program, Restart, Service
        SERVICE = Service(name="stubborn", program=Program(
            priority=100, stop_wait=60, command=lambda ctx: "sh -c 'trap \\"\\" TERM; while true; do sleep 0.2; done'"))
    ''')
    # Only what this is about: five programs (stubborn, autostop, uploader, the bootstrap and post-start steps)
    # can take 12 s at worst (`stop_floor`), so a 20 s grace must hold although stubborn asks for 60. The
    # grace is well above the floor: a loaded machine's slower exits must not read as a broken budget.
    stack = stack_factory(base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra),
                                   PODVISOR_GRACE_SECONDS="20", SSH_ENABLED="false", JUPYTER_ENABLED="false",
                                   INFERENCE_ENABLED="false", UPLOAD_WATCH_DIRS=str(tmp_path / "ck")))
    stack.wait_state("stubborn", "RUNNING")
    started = time.monotonic()
    assert stack.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    assert took < 20, f"stop took {took:.2f} s"
    assert "killing 'stubborn'" in stack.output and "PODVISOR_GRACE_SECONDS" not in stack.output


def test_a_grace_too_short_for_the_programs_is_reported_with_the_least_that_holds(tmp_path, stack_factory):
    stack = stack_factory(base_env(tmp_path / "state", PODVISOR_GRACE_SECONDS="4", SSH_ENABLED="false",
                                   JUPYTER_ENABLED="false", INFERENCE_ENABLED="false",
                                   UPLOAD_WATCH_DIRS=str(tmp_path / "ck")))
    stack.wait_state("uploader", "RUNNING")
    assert "PODVISOR_GRACE_SECONDS=4 is less than the 10 s a stop of 4 programs can take" in stack.output
    assert "Set it to 10 or more" in stack.output


def test_stop_waits_fit_the_grace_and_the_uploader_is_never_killed_before_its_own_deadline():
    from entrypoint.context import STOP_MARGIN_SECONDS, STOP_STEP_SECONDS
    from entrypoint.registry import discover
    from entrypoint.bootstrap.programs import CORE_PROGRAMS
    from entrypoint.supervisor_conf import programs, stop_floor, stop_waits

    services = programs(discover())
    for grace in range(1, 3601):
        waits = stop_waits(services, grace)
        uploader = waits.pop("uploader")
        # Its own deadline, from the moment the stop began; the earliest it can be sent SIGTERM is that moment.
        assert uploader >= grace - STOP_MARGIN_SECONDS - STOP_STEP_SECONDS
        if grace >= stop_floor(services):  # the others, one by one at their full waits, leave the uploader its step
            assert sum(waits.values()) + STOP_STEP_SECONDS * (len(waits) + 1) + STOP_MARGIN_SECONDS <= grace
        assert set(waits) == {svc.name for svc in discover() if svc.name != "uploader"} | set(CORE_PROGRAMS)
        assert all(wait >= 1 for wait in waits.values())


def test_invalid_section_or_failed_prepare_disables_only_that_service(tmp_path, stack_factory):
    extra = tmp_path / "extra"
    _program_service(extra, "healthy", 100, tmp_path)
    write_service(extra, "picky", '''
        from pydantic import Field
        from entrypoint.registry import Program, Restart, Service
        from entrypoint.schema import Section
        class PickySettings(Section):
            """A service with one integer."""
            picky_count: int = Field(1, description="How many.")
        SERVICE = Service(name="picky", settings=PickySettings,
                          program=Program(priority=200, command=lambda ctx: "sleep 100"))
    ''')
    write_service(extra, "unprepared", '''
        from entrypoint.registry import Program, Restart, Service
        def prepare(ctx):
            raise RuntimeError("the disk is not there")
        SERVICE = Service(name="unprepared", prepare=prepare,
                          program=Program(priority=300, command=lambda ctx: "sleep 100"))
    ''')
    stack = stack_factory(base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra), PICKY_COUNT="many"))
    stack.wait_state("healthy", "RUNNING")
    services = stack.status()["services"]
    assert services["picky"]["state"] == "DISABLED"
    assert "PICKY_COUNT" in services["picky"]["reason"] and "whole number" in services["picky"]["reason"]
    assert services["unprepared"]["state"] == "DISABLED"
    assert "the disk is not there" in services["unprepared"]["reason"]
    assert "service picky disabled" in stack.output
    assert stack.stop() == 0


def test_a_broken_extra_service_and_a_state_dir_that_is_a_file_never_stop_the_start(tmp_path, stack_factory):
    """Either used to end `podvisor start` with a traceback and exit 1: a billed restart loop on RunPod."""
    extra = tmp_path / "extra"
    write_service(extra, "nothing_here", "X = 1\n")
    write_service(extra, "syntax", "def (:\n")
    (tmp_path / "state").write_text("a file where the state dir should be")
    env = base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra), UPLOAD_WATCH_DIRS=str(tmp_path / "ck"),
                   SSH_ENABLED="false", JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false")
    stack = stack_factory(env)
    wait_for(lambda: "all 1 services started" in stack.output or stack.proc.poll() is not None, 60, 0.2)
    assert stack.proc.poll() is None, stack.output
    assert "the state dir" in stack.output and "is unusable" in stack.output
    fallback = stack.output.split("using ", 1)[1].split(" for this boot")[0]
    assert not Path(fallback).is_relative_to(tempfile.gettempdir()), "sshd refuses keys under a world-writable folder"
    status = subprocess.run([PODVISOR, "status", "--json"], env={**env, "PODVISOR_STATE_DIR": fallback},
                            capture_output=True, text=True)
    services = json.loads(status.stdout)["services"]
    assert services["uploader"]["state"] == "RUNNING"
    assert "defines no SERVICE" in services["nothing_here"]["reason"]
    assert "SyntaxError" in services["syntax"]["reason"]
    assert stack.stop() == 0


def test_kill_9_of_supervisord_leaves_no_orphans_and_a_new_start_comes_up_clean(tmp_path, stack_factory):
    import psutil

    extra = tmp_path / "extra"
    write_service(extra, "stubborn", '''
        from entrypoint.registry import Program, Restart, Service
        SERVICE = Service(name="stubborn", program=Program(
            priority=100, command=lambda ctx: "sh -c 'trap \\"\\" TERM; while true; do sleep 0.2; done'"))
    ''')
    env = base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra), UPLOAD_WATCH_DIRS=str(tmp_path / "ck"),
                   SSH_ENABLED="false", JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false")
    stack = stack_factory(env)
    first = {name: stack.wait_state(name, "RUNNING")["pid"] for name in ("uploader", "stubborn")}
    supervisord = int((tmp_path / "state" / "supervisord.pid").read_text())
    os.kill(supervisord, signal.SIGKILL)
    assert stack.proc.wait(30) != 0
    assert "supervisord was killed (signal 9)" in stack.output
    assert not [pid for pid in first.values() if psutil.pid_exists(pid)], "every program died with supervisord"
    again = stack_factory(env)
    for name in ("uploader", "stubborn"):
        assert again.wait_state(name, "RUNNING")["pid"] not in first.values()
    time.sleep(2)
    assert again.state("uploader") == "RUNNING", again.output[-2000:]
    assert again.stop() == 0


def test_a_program_that_keeps_dying_after_its_start_time_is_left_down_not_restarted_forever(tmp_path, stack_factory):
    """startsecs=1 and a death at 1.5 s (Jupyter on a port something else holds): supervisord alone loops."""
    extra = tmp_path / "extra"
    write_service(extra, "doomed", f'''
        from entrypoint.registry import Program, Restart, Service
        SERVICE = Service(name="doomed", program=Program(
            priority=100, command=lambda ctx: "sh -c 'echo start >> {tmp_path / "starts"}; sleep 1.5; exit 1'"))
    ''')
    env = base_env(tmp_path / "state", PODVISOR_EXTRA_SERVICES=str(extra), UPLOAD_WATCH_DIRS=str(tmp_path / "ck"),
                   SSH_ENABLED="false", JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false")
    stack = stack_factory(env)
    doomed = stack.wait_state("doomed", "FATAL", timeout=60)
    assert "exited 5 times in a row" in doomed["reason"]
    # Stopped through supervisord by the listener: a stopped program is never started again on its own.
    control = StateDir(tmp_path / "state").supervisor().supervisor
    wait_for(lambda: control.getProcessInfo("doomed")["statename"] == "STOPPED", 30, 0.2,
             lambda: str(control.getProcessInfo("doomed")))
    starts = len((tmp_path / "starts").read_text().split())
    assert 5 <= starts <= 6, f"{starts} starts: five quick exits, and at most one start that raced the stop"
    assert "service doomed exited 5 times in a row" in stack.output
    assert stack.state("uploader") == "RUNNING" and stack.proc.poll() is None
    assert stack.stop() == 0


def test_a_second_start_on_a_live_state_dir_refuses_and_touches_nothing(tmp_path, stack_factory):
    env = base_env(tmp_path / "state", UPLOAD_WATCH_DIRS=str(tmp_path / "ck"), SSH_ENABLED="false",
                   JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false")
    stack = stack_factory(env)
    before = stack.wait_state("uploader", "RUNNING")
    boot = (tmp_path / "state" / "boot.json").read_text()
    second = subprocess.run([PODVISOR, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "another podvisor stack is running on" in second.stdout
    assert (tmp_path / "state" / "boot.json").read_text() == boot
    after = stack.status()["services"]["uploader"]
    assert after["state"] == "RUNNING" and after["pid"] == before["pid"], "the live stack's uploader was touched"
    assert stack.stop() == 0
    assert "with SIGKILL" not in stack.output, "a program that exits on SIGTERM was killed"
