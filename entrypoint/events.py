"""supervisord event listener: prefixes every program's output onto the container log, names each failure
in one line, applies the restart policy supervisord cannot express, starts the programs that wait for others,
publishes the process table and records when every service first reached RUNNING. One class per concern;
`Listener` hands each event to them.

supervisord can write a program's output to one file only; the files under the state dir rotate, and this
listener copies the same bytes to the container's stdout (`docker logs`, RunPod's log pane) with a prefix.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any, TextIO

from supervisor import childutils

from entrypoint.backoff import Backoff
from entrypoint.context import PodContext, current
from entrypoint.files import write_atomically
from entrypoint.redact import redact, secrets_of
from entrypoint.registry import AFTER_ALL, AFTER_INTERACTIVE, Program, discover
from entrypoint.state_dir import SETTLED, SupervisorState
from entrypoint.supervisor_conf import programs
from entrypoint.timings import record

QUICK_EXIT_SECONDS = 30.0
"""An unexpected exit this soon after reaching RUNNING counts as a failed start, whatever startsecs said."""
QUICK_EXITS_TO_GIVE_UP = 5
"""Failed starts in a row after which a program is left down (a port held by something else, a bad config):
supervisord's own limit only counts exits before startsecs, so a program dying at 2 s would loop forever."""
START_AGAIN = Backoff(5.0, 60.0)
"""A service never given up on (sshd) is started again after these pauses, doubling, while it stays down."""
DONE = frozenset({SupervisorState.EXITED, SupervisorState.FATAL, SupervisorState.STOPPED})
"""A one-shot program has settled once it is no longer running, whichever way it ended."""


class Output:
    """The container log: whole lines, secrets redacted, each program's prefixed with its name."""

    def __init__(self, out: TextIO, secrets: list[str]) -> None:
        self.out, self.secrets = out, secrets
        self.partial: dict[tuple[str, str], str] = {}

    def program(self, name: str, channel: str, data: str) -> None:
        key = (name, channel)
        text = self.partial.pop(key, "") + data
        *lines, rest = text.split("\n")
        if rest:
            self.partial[key] = rest
        self.write(redact("".join(f"[{name}] {line}\n" for line in lines), self.secrets))

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()

    def flush(self) -> None:
        """Write out lines still waiting for their newline (at stop, the last words of a program)."""
        for (name, _), rest in sorted(self.partial.items()):
            self.write(redact(f"[{name}] {rest}\n", self.secrets))
        self.partial.clear()


class Supervisor:
    """Calls to supervisord, from threads: it answers only once the event handler has returned."""

    def __init__(self, ctx: PodContext, output: Output) -> None:
        self.ctx, self.output = ctx, output

    def later(self, call: str, name: str, delay: float = 0.0) -> None:
        threading.Thread(target=self.call, args=(call, name, delay), daemon=True).start()

    def call(self, call: str, name: str, delay: float = 0.0) -> None:
        time.sleep(delay)
        try:
            getattr(self.ctx.paths.supervisor().supervisor, call)(name, False)
        except Exception as exc:  # stopped or started in between; a failed start comes back as an event
            self.output.write(f"podvisor: {call} {name} failed: {exc}\n")


class RestartPolicy:
    """What supervisord's restart settings cannot say (`registry.Restart`): a program that dies soon after each
    start is left down, and one never given up on (sshd) is started again after a growing pause."""

    def __init__(self, ctx: PodContext, output: Output, supervisor: Supervisor, never_give_up: set[str]) -> None:
        self.ctx, self.output, self.supervisor, self.never_give_up = ctx, output, supervisor, never_give_up
        self.running_since: dict[str, float] = {}
        self.quick_exits: dict[str, int] = {}
        self.downs: dict[str, int] = {}
        """Times in a row a service never given up on was found down, for its pause before the next start."""

    def fatal(self, name: str) -> None:
        if name in self.never_give_up:
            self._start_again_later(name, "it kept exiting at start")
        else:
            self.output.write(f"podvisor: service {name} is FATAL: it kept exiting at start; left down, "
                              f"the rest keep running. See {name}'s log above or `podvisor status`.\n")

    def running(self, name: str) -> None:
        self.running_since[name] = time.monotonic()
        if name in self.downs:
            threading.Thread(target=self._record_given_up, args=(name, None), daemon=True).start()

    def exited_unexpectedly(self, name: str) -> None:
        up = time.monotonic() - self.running_since.get(name, time.monotonic())
        self.quick_exits[name] = self.quick_exits.get(name, 0) + 1 if up < QUICK_EXIT_SECONDS else 0
        if not self.quick_exits[name]:
            self.downs.pop(name, None)  # it stayed up: a later failure starts the pauses over
        if self.quick_exits[name] < QUICK_EXITS_TO_GIVE_UP:
            return
        if name in self.never_give_up:
            self.quick_exits[name] = 0
            self.supervisor.later("stopProcess", name)
            self._start_again_later(name, f"it exited {QUICK_EXITS_TO_GIVE_UP} times in a row within "
                                          f"{QUICK_EXIT_SECONDS:.0f} s of starting")
            return
        reason = (f"exited {self.quick_exits[name]} times in a row within {QUICK_EXIT_SECONDS:.0f} s of starting; "
                  f"left down (see its log: a port in use, a bad setting)")
        self.output.write(f"podvisor: service {name} {reason}. The rest keep running.\n")
        threading.Thread(target=self._give_up, args=(name, reason), daemon=True).start()

    def _give_up(self, name: str, reason: str) -> None:
        """Stop the program for good and record why, for `podvisor status` (outside the event handler, which
        supervisord waits on)."""
        self._record_given_up(name, reason)
        self.supervisor.call("stopProcess", name)

    def _record_given_up(self, name: str, reason: str | None) -> None:
        """Why a service is down, for `podvisor status`; None clears it (it runs again)."""
        given = self.ctx.paths.given_up()
        if reason is None:
            given.pop(name, None)
        else:
            given[name] = reason
        write_atomically(self.ctx.paths.given_up_file, json.dumps(given))

    def _start_again_later(self, name: str, why: str) -> None:
        self.downs[name] = self.downs.get(name, 0) + 1
        delay = START_AGAIN.delay(self.downs[name])
        reason = f"{why}; podvisor starts it again in {delay:.0f} s, and keeps trying (it is the way in)"
        self.output.write(f"podvisor: service {name} is down: {reason}. See {name}'s log above.\n")
        self._record_given_up(name, reason)
        self.supervisor.later("startProcess", name, delay)


class Dependencies:
    """Starts each program with `Program.after` once what it waits for has settled: supervisord itself starts
    every program at once, in priority order, and knows no dependencies."""

    def __init__(self, supervised: dict[str, Program], services: set[str], interactive: set[str],
                 supervisor: Supervisor) -> None:
        self.supervised, self.services, self.supervisor = supervised, services, supervisor
        self.interactive = interactive
        self.waiting = {name: program for name, program in supervised.items() if program.after}

    def changed(self, states: dict[str, str]) -> None:
        for name, program in list(self.waiting.items()):
            if all(self._settled(dep, states) for dep in self._expand(program.after, name)):
                del self.waiting[name]
                self.supervisor.later("startProcess", name)

    def _expand(self, after: tuple[str, ...], name: str) -> set[str]:
        if AFTER_ALL in after:
            return self.services - {name}
        if AFTER_INTERACTIVE in after:
            return (self.interactive | set(after)) - {AFTER_INTERACTIVE, name}
        return set(after)

    def _settled(self, name: str, states: dict[str, str]) -> bool:
        state = states.get(name)
        one_shot = name in self.supervised and self.supervised[name].one_shot
        return state in (DONE if one_shot else SETTLED)


class ProcessTable:
    """After each state change, writes supervisord's process table for `podvisor status` run by a login user
    who may not use the control socket (SSH_SUDO=false). From a thread: supervisord answers the call only once
    the event handler has returned."""

    def __init__(self, ctx: PodContext) -> None:
        self.ctx = ctx
        self.changed = threading.Event()
        threading.Thread(target=self._publish, daemon=True).start()

    def _publish(self) -> None:
        while True:
            self.changed.wait()
            self.changed.clear()
            try:
                proxy = self.ctx.paths.supervisor().supervisor
                table = {"supervisord_pid": proxy.getPID(), "processes": proxy.getAllProcessInfo()}
            except Exception:  # supervisord stopping or not answering yet: the next change writes it
                continue
            write_atomically(self.ctx.paths.processes_file, json.dumps(table))


class Listener:
    """Hands each supervisord event to the concern it is about."""

    def __init__(self, ctx: PodContext, out: TextIO = sys.stderr) -> None:
        self.ctx = ctx
        self.boot = ctx.paths.boot()
        self.output = Output(out, secrets_of(ctx.config))
        self.expected = set(self.boot.get("services", []))
        started = [svc for svc in discover() if svc.name in self.expected]
        supervisor = Supervisor(ctx, self.output)
        self.policy = RestartPolicy(ctx, self.output, supervisor,
                                    {svc.name for svc in started if svc.program.restart.never_give_up})
        self.dependencies = Dependencies(programs(started), self.expected,
                                         {svc.name for svc in started if svc.interactive}, supervisor)
        self.table = ProcessTable(ctx)
        self.states: dict[str, str] = {}
        self.all_running_seen = False

    def handle(self, headers: dict[str, str], payload: str) -> None:
        event = headers["eventname"]
        if event.startswith("PROCESS_LOG"):
            head, _, data = payload.partition("\n")
            fields = childutils.get_headers(head)
            self.output.program(fields["processname"], fields.get("channel", "stdout"), data)
        elif event == "SUPERVISOR_STATE_CHANGE_STOPPING":
            self._stopping()
        elif event.startswith("PROCESS_STATE_"):
            fields = childutils.get_headers(payload.split("\n", 1)[0])
            self._state(event.removeprefix("PROCESS_STATE_"), fields)

    def _stopping(self) -> None:
        """Note when the shutdown began: the last program to stop drains until the grace counted from here."""
        write_atomically(self.ctx.paths.stop_requested_file, f"{time.time():.3f}")

    def _state(self, state: str, fields: dict[str, Any]) -> None:
        self.table.changed.set()
        name = fields["processname"]
        self.states[name] = state
        if name in self.expected:
            self._service_state(name, state, fields)
        self.dependencies.changed(self.states)

    def _service_state(self, name: str, state: str, fields: dict[str, Any]) -> None:
        if state == SupervisorState.FATAL:
            self.policy.fatal(name)
        elif state == SupervisorState.EXITED:
            how = "as expected" if fields.get("expected") == "1" else "unexpectedly"
            self.output.write(f"podvisor: service {name} EXITED {how} (from {fields.get('from_state')}, "
                              f"pid {fields.get('pid')}).\n")
            if how == "unexpectedly":
                self.policy.exited_unexpectedly(name)
        elif state == SupervisorState.RUNNING:
            self.policy.running(name)
        elif state == SupervisorState.BACKOFF:
            self.output.write(f"podvisor: service {name} exited during start; retrying.\n")
        if state == SupervisorState.RUNNING and not self.all_running_seen and self._all_running():
            self.all_running_seen = True
            self._all_running_reached()

    def _all_running(self) -> bool:
        return all(self.states.get(name) == SupervisorState.RUNNING for name in self.expected)

    def _all_running_reached(self) -> None:
        started_ms = float(self.boot.get("started_epoch_ms", 0))
        elapsed = time.time() * 1000 - started_ms if started_ms else 0.0
        self.output.write(f"podvisor: all {len(self.expected)} services started, {elapsed / 1000:.2f} s after "
                          f"start; checking that they answer.\n")
        record(self.ctx.paths.timings_file, self.boot.get("run_id", ""), "services_running", "ok", elapsed)


def main() -> None:
    listener = Listener(current())

    def stop(*_: object) -> None:
        listener.output.flush()
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
