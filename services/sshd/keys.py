"""Authorized keys: each one checked by `ssh-keygen -l`, so one pasted badly never costs the user the others."""
from __future__ import annotations

import subprocess

from services.sshd.settings import SshSettings


def key_problem(line: str) -> str | None:
    """Why `line` is not a usable public key, or None when ssh-keygen accepts it."""
    result = subprocess.run(["ssh-keygen", "-l", "-f", "/dev/stdin"], input=line + "\n", capture_output=True,
                            text=True, timeout=10)
    if result.returncode == 0:
        return None
    return "is not a valid public key; expected a line such as 'ssh-ed25519 AAAA... you@laptop'"


def sort_keys(settings: SshSettings) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({where: key line} for the good keys, each key once, [(where, problem)] for the bad ones); values are
    never quoted back."""
    good: dict[str, str] = {}
    bad = []
    for where, line in settings.keys():
        if line in good.values():
            continue
        problem = key_problem(line)
        if problem:
            bad.append((where, problem))
        else:
            good[where] = line
    return good, bad


def advise(settings: SshSettings) -> list[tuple[str, str]]:
    """Bad keys for `config --check`: sshd still starts with the good ones."""
    found = []
    for where, problem in sort_keys(settings)[1]:
        source, number = where.rsplit(" key #", 1)  # the source is the problem's name; not said twice
        found.append((source, f"key #{number} {problem}"))
    return found
