"""What stays behind `podvisor start` for the stack's whole life: it runs supervisord, passes it the stop
signals, and exits with the code a failed job asked for (else supervisord's own).

`start` execs this once the boot is prepared, so the parsed schema, pydantic and every service module it
loaded are not held for as long as the pod runs: only the standard library and two leaves of ours (logs, the
state dir's layout) are imported here (the sweep after a killed supervisord loads its helper then). Measured
on this machine: the resident `start` went from 45 MB to about 14 MB RSS.

supervisord exits 0 after any orderly shutdown; staying its parent is what lets the container say the job
failed. Under tini -g both processes get the signal; forwarding it again is harmless.
"""
from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from entrypoint import logs
from entrypoint.state_dir import StateDir

log = logging.getLogger("podvisor")
WAKE_LIMIT_SECONDS = 10.0


def wake(socket_path: Path, child: subprocess.Popen) -> None:
    """supervisord starts its programs only after its loop's first poll, which sleeps up to a second when
    nothing happens: a connection to its control socket is something happening, so sshd starts at once
    instead of a second later. Nothing is asked over it."""
    deadline = time.monotonic() + WAKE_LIMIT_SECONDS
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(socket_path))
            return
        except OSError:  # not listening yet
            time.sleep(0.005)


def supervise(state_dir: Path, argv: list[str]) -> int:
    paths = StateDir(state_dir)
    child = subprocess.Popen(argv)
    wake(paths.socket_path, child)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    code = child.wait()
    if code < 0:  # supervisord itself was killed: nothing stopped its programs in order
        from entrypoint import leftovers

        log.error("supervisord was killed (signal %d); stopping what it left running", -code)
        leftovers.sweep(state_dir)
    try:
        asked, _, why = paths.exit_code_file.read_text().partition("\n")
        log.error("container exits %d: %s", int(asked), why.strip())
        return int(asked)
    except (OSError, ValueError):
        return code


def main() -> None:
    """argv: log level, state dir, then supervisord's command line."""
    level, state_dir, *argv = sys.argv[1:]
    logs.configure(level, "podvisor: %(message)s")
    sys.exit(supervise(Path(state_dir), argv))


if __name__ == "__main__":
    main()
