"""`podvisor status --live`, the startup and liveness probe: is supervisord answering? Kubernetes runs it every few
seconds and kills it at the probe's timeoutSeconds; a busy node must not turn a slow answer into a restarted pod.
So it loads no schema and no service: the state dir from its variable (or the default), one XML-RPC call on the
control socket, and for a caller the socket is not shared with, the process table the event listener published.
"""
from __future__ import annotations

import json
import os
import xmlrpc.client

from entrypoint.state_dir import StateDir, SupervisorState
from entrypoint.workspace import state_dir


def probe() -> int:
    """0 when supervisord runs (it said so, or its published pid lives), 1 otherwise; one line either way."""
    paths = StateDir(state_dir())
    try:
        state = paths.supervisor().supervisor.getState()["statename"]
    except PermissionError:
        state = _published(paths)
    except (OSError, xmlrpc.client.Error) as exc:
        state = f"not answering ({type(exc).__name__})"
    print(f"supervisord: {state.lower() if state == SupervisorState.RUNNING else state}")
    return 0 if state == SupervisorState.RUNNING else 1


def _published(paths: StateDir) -> str:
    try:
        pid = int(json.loads(paths.processes_file.read_text())["supervisord_pid"])
        os.kill(pid, 0)
    except PermissionError:  # alive, and someone else's
        return SupervisorState.RUNNING
    except (OSError, ValueError, KeyError):
        return "not running (no live process table published)"
    return SupervisorState.RUNNING
