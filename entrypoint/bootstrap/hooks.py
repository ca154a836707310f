"""Start hooks and the requirements install: child processes whose output goes to the container log with a
prefix, so a user sees what their script printed and where it failed."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from entrypoint.login_user import become
from entrypoint.trust import unsafe_for_root

log = logging.getLogger("podvisor")


def run_prefixed(argv: list[str], prefix: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout
    for line in proc.stdout:
        sys.stdout.write(f"[{prefix}] {line}")
        sys.stdout.flush()
    return proc.wait()


def run_hook(path: Path, name: str, env: dict[str, str], user: str) -> str | None:
    """Run one hook script in `env` (the user's, `PodContext.environment_for`); raises when it fails (the
    caller decides whether that stops the boot). It runs as root only when no one else can change it, on its
    whole path (`trust.unsafe_for_root`); otherwise as the login `user`, who could have written it: returns that
    note for the log and status."""
    if not path.exists():
        raise RuntimeError(f"{name} {path} does not exist")
    with path.open("rb") as fh:
        shebang = fh.read(2) == b"#!"
    argv = [str(path)] if shebang and path.stat().st_mode & 0o111 else ["bash", str(path)]
    note = None
    reason = unsafe_for_root(path) if os.geteuid() == 0 and user != "root" else None
    if reason:
        note = f"{name} {path} ran as {user}, not root: {reason} (root runs only a script no one else can change)"
        log.warning("hook %s: %s runs as %s, not root: %s; root runs only a script that is root's alone, "
                    "on its whole path (use sudo inside it, or bake it into the image)", name, path, user, reason)
        argv = [*become(user), *argv]
    code = run_prefixed(argv, f"hook:{name}", cwd=path.parent, env=env)
    if code != 0:
        raise RuntimeError(f"{name} {path} exited with {code}")
    log.info("hook %s done", name)
    return note


def fetch_script(source: str) -> Path:
    """A hook given as a URL (Vast's PROVISIONING_SCRIPT) is downloaded first, into a fresh folder only its
    downloader can write (so root may run it: the URL came from the pod's own variables); a path is itself. A
    download that fails leaves no file, so the step reports that it does not exist."""
    if not source.startswith(("https://", "http://")):
        return Path(source)
    import requests

    target = Path(tempfile.mkdtemp(prefix="podvisor-hook-")) / "provisioning.sh"
    try:
        response = requests.get(source, timeout=60)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.error("bootstrap: could not download %s: %s", source, type(exc).__name__)
        return target
    target.write_bytes(response.content)
    target.chmod(0o700)
    return target
