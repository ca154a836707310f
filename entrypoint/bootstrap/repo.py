"""The user's code at REPO_DIR: cloned when missing or empty, fast-forwarded when asked, left alone when it
is a mounted checkout. A private repo's token reaches git only through GIT_ASKPASS from the environment:
never in a URL, an argument (`ps`), a log line or .git/config."""
from __future__ import annotations

import logging
import os
import pwd
import subprocess
import tempfile
from pathlib import Path

from entrypoint.bootstrap.settings import BootstrapSettings

log = logging.getLogger("podvisor")
ASKPASS = ('#!/bin/sh\ncase "$1" in Username*) printf "%s\\n" "$PODVISOR_GIT_USERNAME" ;; '
           '*) printf "%s\\n" "$PODVISOR_GIT_TOKEN" ;; esac\n')


def _git(args: list[str], settings: BootstrapSettings, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.pop("GIT_TOKEN", None)
    with tempfile.TemporaryDirectory() as tmp:
        if settings.git_token:
            askpass = Path(tmp) / "askpass.sh"
            askpass.write_text(ASKPASS)
            askpass.chmod(0o700)
            env.update(GIT_ASKPASS=str(askpass), PODVISOR_GIT_TOKEN=settings.git_token.get_secret_value(),
                       PODVISOR_GIT_USERNAME=settings.git_username)
        # The checkout belongs to the login user; root's git would refuse it as "dubious ownership".
        trust = ["-c", f"safe.directory={cwd}"] if cwd else []
        result = subprocess.run(["git", *trust, *args], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=1800)
    if result.returncode != 0:
        secret = settings.git_token.get_secret_value() if settings.git_token else None
        text = why_git_failed(result.stderr)
        raise RuntimeError(f"git {args[0]} failed: {text.replace(secret, '***') if secret else text}")
    return result.stdout.strip()


def why_git_failed(stderr: str) -> str:
    """git's reason, not its last line: that is often the tail of a hint ("and the repository exists.")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:", "remote:"))] or lines[-3:]
    return " / ".join(reasons)[:600] or "no output"


def sync(settings: BootstrapSettings, owner: str | None) -> str:
    """Bring REPO_DIR up to date; returns what was done, for the log."""
    folder = settings.repo_dir
    if not settings.repo_url:
        return "no REPO_URL"
    if (folder / ".git").exists():
        if not settings.git_auto_pull:
            return f"{folder} is a checkout; GIT_AUTO_PULL is off"
        _git(["pull", "--ff-only"], settings, cwd=folder)
        return f"pulled {folder} (fast-forward) to {_git(['rev-parse', '--short', 'HEAD'], settings, cwd=folder)}"
    if folder.exists() and any(folder.iterdir()):
        if (folder / "requirements.txt").exists() or (folder / "pyproject.toml").exists():
            return f"{folder} is a mounted checkout (not git); left alone"
        log.warning("bootstrap: %s is not empty and not a checkout; not cloning into it", folder)
        return f"{folder} is not empty and not a checkout; skipped"
    folder.mkdir(parents=True, exist_ok=True)
    _git(["clone", "--quiet", settings.repo_url, str(folder)], settings)
    if settings.repo_ref:
        _git(["checkout", "--quiet", settings.repo_ref], settings, cwd=folder)
    if owner and os.geteuid() == 0:
        user = pwd.getpwnam(owner)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(folder)], check=True)
    return f"cloned into {folder} at {_git(['rev-parse', '--short', 'HEAD'], settings, cwd=folder)}"


def commit(folder: Path) -> str | None:
    result = subprocess.run(["git", "-c", f"safe.directory={folder}", "-C", str(folder), "rev-parse", "HEAD"],
                            capture_output=True, text=True)
    return result.stdout.strip() or None if result.returncode == 0 else None
