"""Start hooks and the requirements install: child processes whose output goes to the container log with a
prefix, so a user sees what their script printed and where it failed."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("podvisor")


def run_prefixed(argv: list[str], prefix: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout
    for line in proc.stdout:
        sys.stdout.write(f"[{prefix}] {line}")
        sys.stdout.flush()
    return proc.wait()


def run_hook(path: Path, name: str, env: dict[str, str]) -> None:
    """Run one hook script in `env` (the user's, `PodContext.environment_for`); raises when it fails (the
    caller decides whether that stops the boot)."""
    if not path.exists():
        raise RuntimeError(f"{name} {path} does not exist")
    with path.open("rb") as fh:
        shebang = fh.read(2) == b"#!"
    argv = [str(path)] if shebang and path.stat().st_mode & 0o111 else ["bash", str(path)]
    code = run_prefixed(argv, f"hook:{name}", cwd=path.parent, env=env)
    if code != 0:
        raise RuntimeError(f"{name} {path} exited with {code}")
    log.info("hook %s done", name)


def fetch_script(source: str, target: Path) -> Path:
    """A hook given as a URL (Vast's PROVISIONING_SCRIPT) is downloaded to `target` first; a path is itself.
    A download that fails leaves no file, so the step reports that it does not exist."""
    if not source.startswith(("https://", "http://")):
        return Path(source)
    import requests

    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        response = requests.get(source, timeout=60)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.error("bootstrap: could not download %s: %s", source, type(exc).__name__)
        return target
    target.write_bytes(response.content)
    target.chmod(0o700)
    return target
