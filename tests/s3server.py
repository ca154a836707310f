"""A real S3 API server on 127.0.0.1: `rclone serve s3` over a local folder, so its objects survive a
restart of the server (an outage), and each object's inode and mtime show whether it was written twice."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import free_port, wait_for

ACCESS_KEY, SECRET_KEY = "podvisor-test-key", "podvisor-test-secret-0123456789"


class S3Server:
    def __init__(self, root: Path, bucket: str = "ckpt") -> None:
        self.root, self.bucket, self.port = root, bucket, free_port()
        (root / bucket).mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        rclone = str(Path(sys.executable).parent / "rclone")
        self.proc = subprocess.Popen([rclone, "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
                                      "--addr", f"127.0.0.1:{self.port}", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up, 20, 0.1, "the S3 server to listen")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ENDPOINT_URL": self.url,
                "AWS_REGION": "us-east-1"}

    def objects(self) -> dict[str, Path]:
        """The checkpoint objects (not the run manifest podvisor ships under _podvisor/)."""
        base = self.root / self.bucket
        return {p.relative_to(base).as_posix(): p for p in base.rglob("*")
                if p.is_file() and p.relative_to(base).parts[0] != "_podvisor"}
