"""supervisord event listener: prefixes every program's output onto the container log, names each failure
in one line, and records when every service first reached RUNNING.

supervisord can write a program's output to one file only; the files under the state dir rotate, and this
listener copies the same bytes to the container's stdout (`docker logs`, RunPod's log pane) with a prefix.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

from supervisor import childutils

from entrypoint.backoff import Backoff
from entrypoint.context import PodContext, current
from entrypoint.files import write_atomically
from entrypoint.redact import redact, secrets_of
from entrypoint.registry import discover
from entrypoint.state_dir import SETTLED, SupervisorState
from entrypoint.timings import record


QUICK_EXIT_SECONDS = 30.0
"""An unexpected exit this soon after reaching RUNNING counts as a failed start, whatever startsecs said."""
QUICK_EXITS_TO_GIVE_UP = 5
"""Failed starts in a row after which a program is left down (a port held by something else, a bad config):
supervisord's own limit only counts exits before startsecs, so a program dying at 2 s would loop forever."""
START_AGAIN = Backoff(5.0, 60.0)
"""A service never given up on (sshd) is started again after these pauses, doubling, while it stays down."""


class Listener:
    def __init__(self, ctx: PodContext, out=sys.stderr) -> None:
        self.ctx = ctx
        self.boot = ctx.paths.boot()
        self.out = out
        self.secrets = secrets_of(ctx.config)
        self.expected = set(self.boot.get("services", []))
        self.states: dict[str, str] = {}
        self.partial: dict[tuple[str, str], str] = {}
        self.all_running_seen = False
        self.post_start_started = False
        self.changed = threading.Event()
        threading.Thread(target=self._publish_processes, daemon=True).start()
        self.running_since: dict[str, float] = {}
        self.quick_exits: dict[str, int] = {}
        self.downs: dict[str, int] = {}
        """Times in a row a service never given up on was found down, for its pause before the next start."""
        self.never_given_up = {svc.name for svc in discover() if svc.never_given_up}

    def handle(self, headers: dict[str, str], payload: str) -> None:
        event = headers["eventname"]
        if event.startswith("PROCESS_LOG"):
            head, _, data = payload.partition("\n")
            fields = childutils.get_headers(head)
            self._log(fields["processname"], fields.get("channel", "stdout"), data)
        elif event == "SUPERVISOR_STATE_CHANGE_STOPPING":
            self._stopping()
        elif event.startswith("PROCESS_STATE_"):
            fields = childutils.get_headers(payload.split("\n", 1)[0])
            self._state(event.removeprefix("PROCESS_STATE_"), fields)

    def _log(self, name: str, channel: str, data: str) -> None:
        key = (name, channel)
        text = self.partial.pop(key, "") + data
        *lines, rest = text.split("\n")
        if rest:
            self.partial[key] = rest
        self._write(redact("".join(f"[{name}] {line}\n" for line in lines), self.secrets))

    def _stopping(self) -> None:
        """Note when the shutdown began: the last program to stop drains until the grace counted from here."""
        write_atomically(self.ctx.paths.stop_requested_file, f"{time.time():.3f}")

    def _state(self, state: str, fields: dict[str, str]) -> None:
        self.changed.set()
        name = fields["processname"]
        if name not in self.expected:
            return
        self.states[name] = state
        if state == SupervisorState.FATAL and name in self.never_given_up:
            self._start_again_later(name, "it kept exiting at start")
        elif state == SupervisorState.FATAL:
            self._write(f"podvisor: service {name} is FATAL: it kept exiting at start; left down, "
                        f"the rest keep running. See {name}'s log above or `podvisor status`.\n")
        elif state == SupervisorState.EXITED:
            how = "as expected" if fields.get("expected") == "1" else "unexpectedly"
            self._write(f"podvisor: service {name} EXITED {how} (from {fields.get('from_state')}, "
                        f"pid {fields.get('pid')}).\n")
            if how == "unexpectedly":
                self._count_quick_exit(name)
        elif state == SupervisorState.RUNNING:
            self.running_since[name] = time.monotonic()
            if name in self.downs:
                threading.Thread(target=self._record_given_up, args=(name, None), daemon=True).start()
        elif state == SupervisorState.BACKOFF:
            self._write(f"podvisor: service {name} exited during start; retrying.\n")
        if state == SupervisorState.RUNNING and not self.all_running_seen and self._all_running():
            self.all_running_seen = True
            self._all_running_reached()
        if not self.post_start_started and self._settled():
            self.post_start_started = True
            self._post_start()

    def _count_quick_exit(self, name: str) -> None:
        up = time.monotonic() - self.running_since.get(name, time.monotonic())
        self.quick_exits[name] = self.quick_exits.get(name, 0) + 1 if up < QUICK_EXIT_SECONDS else 0
        if not self.quick_exits[name]:
            self.downs.pop(name, None)  # it stayed up: a later failure starts the pauses over
        if self.quick_exits[name] >= QUICK_EXITS_TO_GIVE_UP and name in self.never_given_up:
            self.quick_exits[name] = 0
            threading.Thread(target=self._stop_quietly, args=(name,), daemon=True).start()
            self._start_again_later(name, f"it exited {QUICK_EXITS_TO_GIVE_UP} times in a row within "
                                          f"{QUICK_EXIT_SECONDS:.0f} s of starting")
        elif self.quick_exits[name] >= QUICK_EXITS_TO_GIVE_UP:
            reason = (f"exited {self.quick_exits[name]} times in a row within {QUICK_EXIT_SECONDS:.0f} s of starting; "
                      f"left down (see its log: a port in use, a bad setting)")
            self._write(f"podvisor: service {name} {reason}. The rest keep running.\n")
            threading.Thread(target=self._give_up, args=(name, reason), daemon=True).start()

    def _give_up(self, name: str, reason: str) -> None:
        """Stop the program for good and record why, for `podvisor status` (outside the event handler, which
        supervisord waits on)."""
        self._record_given_up(name, reason)
        self._stop_quietly(name)

    def _stop_quietly(self, name: str) -> None:
        try:
            self.ctx.paths.supervisor().supervisor.stopProcess(name, False)
        except Exception as exc:  # already stopped in between: nothing to do
            self._write(f"podvisor: could not stop {name}: {exc}\n")

    def _record_given_up(self, name: str, reason: str | None) -> None:
        """Why a service is down, for `podvisor status`; None clears it (it runs again)."""
        given = self.ctx.paths.given_up()
        if reason is None:
            given.pop(name, None)
        else:
            given[name] = reason
        write_atomically(self.ctx.paths.given_up_file, json.dumps(given))

    def _start_again_later(self, name: str, why: str) -> None:
        """A service never given up on: said so, and started again after a pause that doubles while it fails."""
        self.downs[name] = self.downs.get(name, 0) + 1
        delay = START_AGAIN.delay(self.downs[name])
        reason = f"{why}; podvisor starts it again in {delay:.0f} s, and keeps trying (it is the way in)"
        self._write(f"podvisor: service {name} is down: {reason}. See {name}'s log above.\n")
        self._record_given_up(name, reason)
        threading.Thread(target=self._start_after, args=(name, delay), daemon=True).start()

    def _start_after(self, name: str, delay: float) -> None:
        time.sleep(delay)
        try:
            self.ctx.paths.supervisor().supervisor.startProcess(name, False)
        except Exception as exc:  # it fails again: its FATAL comes back here, with a longer pause
            self._write(f"podvisor: starting {name} again failed: {exc}\n")

    def _publish_processes(self) -> None:
        """After each state change, write supervisord's process table for `podvisor status` run by a login user
        who may not use the control socket (SSH_SUDO=false). From a thread: supervisord answers the call only
        once the event handler has returned."""
        ctx = self.ctx
        while True:
            self.changed.wait()
            self.changed.clear()
            try:
                proxy = ctx.paths.supervisor().supervisor
                table = {"supervisord_pid": proxy.getPID(), "processes": proxy.getAllProcessInfo()}
            except Exception:  # supervisord stopping or not answering yet: the next change writes it
                continue
            write_atomically(ctx.paths.processes_file, json.dumps(table))

    def _settled(self) -> bool:
        """Every service up, or given up on: the moment for the manifest and the post-start hook."""
        return all(self.states.get(name) in SETTLED for name in self.expected)

    def _post_start(self) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "entrypoint.bootstrap.post_start"], stdout=self.out,
                                stderr=self.out, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=proc.wait, daemon=True).start()  # reaped when done: no zombie per boot

    def _all_running(self) -> bool:
        return all(self.states.get(name) == SupervisorState.RUNNING for name in self.expected)

    def _all_running_reached(self) -> None:
        started_ms = float(self.boot.get("started_epoch_ms", 0))
        elapsed = time.time() * 1000 - started_ms if started_ms else 0.0
        self._write(f"podvisor: all {len(self.expected)} services started, {elapsed / 1000:.2f} s after start; "
                    f"checking that they answer.\n")
        record(self.ctx.paths.timings_file, self.boot.get("run_id", ""), "services_running", "ok", elapsed)

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()


    def flush(self) -> None:
        """Write out lines still waiting for their newline (at stop, the last words of a program)."""
        for (name, _), rest in sorted(self.partial.items()):
            self._write(redact(f"[{name}] {rest}\n", self.secrets))
        self.partial.clear()


def main() -> None:
    listener = Listener(current())

    def stop(*_: object) -> None:
        listener.flush()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            listener.handle(headers, payload)
        finally:
            childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
