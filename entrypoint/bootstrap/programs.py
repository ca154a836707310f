"""podvisor's own one-shot programs, supervised like the services: the bootstrap (clone, installs, datasets,
pre-start hooks), which runs beside sshd and Jupyter, and the post-start step (run manifest, the ready lines,
POST_START_SCRIPT), which starts once every service has settled."""
from __future__ import annotations

from entrypoint.catalog import EVERY_SECTION
from entrypoint.registry import AFTER_ALL, Program, Restart, python_module

BOOTSTRAP = "bootstrap"
POST_START = "post_start"
ONE_SHOT = Restart(when="never", start_seconds=0, start_retries=0)
"""Runs once per boot; what a stop cuts short is redone at the next boot."""

CORE_PROGRAMS = {
    # Right after sshd (10) starts: the clone and installs run while SSH already answers. A clone or install cut
    # by a stop is redone at the next boot, so it gets no more stop time than the others.
    BOOTSTRAP: Program(command=python_module("entrypoint.bootstrap"), priority=15, restart=ONE_SHOT, stop_wait=5),
    # The run manifest names every variable set (never a value), so this step keeps the whole environment; the
    # POST_START_SCRIPT it runs gets the user's, without control credentials (`hook`).
    POST_START: Program(command=python_module("entrypoint.bootstrap.post_start"), priority=900, restart=ONE_SHOT,
                        stop_wait=5, after=(AFTER_ALL,), credentials_of=(EVERY_SECTION,)),
}
