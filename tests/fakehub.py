"""A loopback stand-in for the Hugging Face Hub: it answers what huggingface_hub's commit path calls, keeps the
committed files, and records every request (method, path, headers, body) so tests assert on what was sent."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

COMMIT = "c0ffee" + "0" * 34


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.commits: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, code: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._download(head=True)

            def do_GET(self) -> None:
                self._download(head=False)

            def _download(self, head: bool) -> None:
                """`resolve` (what hf_hub_download and snapshot_download fetch, HEAD first) and `tree` (what
                list_repo_tree and snapshot_download list), over the committed files."""
                hub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": b""})
                path = unquote(urlparse(self.path).path)
                if match := re.fullmatch(r"/api/(?:datasets|models)/[^/]+/[^/]+/tree/[^/]+/?(.*)", path):
                    prefix = match[1].strip("/")
                    under = {p: d for p, d in hub.files.items() if not prefix or p.startswith(prefix + "/")}
                    if not under:
                        self.send_response(404)
                        self.send_header("X-Error-Code", "EntryNotFound")
                        self.send_header("Content-Length", "0")
                        return self.end_headers()
                    return self._reply(200, [{"type": "file", "path": p, "size": len(d), "oid": _blob_id(d)}
                                             for p, d in sorted(under.items())])
                if match := re.fullmatch(r"/api/(?:datasets|models)/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
                    return self._reply(200, {"id": match[1], "sha": COMMIT, "siblings": [
                        {"rfilename": p, "size": len(d)} for p, d in sorted(hub.files.items())]})
                match = re.fullmatch(r"/(?:datasets/)?[^/]+/[^/]+/resolve/[^/]+/(.+)", path)
                data = hub.files.get(match[1]) if match else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{_blob_id(data)}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def do_POST(self) -> None:
                body = self._body()
                hub.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                     "body": body})
                path = urlparse(self.path).path
                if path == "/api/repos/create":
                    request = json.loads(body)
                    repo = f"{request.get('organization') or 'me'}/{request['name']}"
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo, "id": "1"})
                if "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if "/commit/" in path:
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    commit = {"header": lines[0]["value"], "paths": []}
                    for line in lines[1:]:
                        if line["key"] == "file":
                            self_path = line["value"]["path"]
                            hub.files[self_path] = base64.b64decode(line["value"]["content"])
                            commit["paths"].append(self_path)
                    hub.commits.append(commit)
                    return self._reply(200, {"commitUrl": f"{hub.url}/me/repo/commit/{'a' * 40}", "commitOid": "a" * 40,
                                             "pullRequestUrl": None})
                if "/paths-info/" in path:
                    form = parse_qs(body.decode())
                    if not form:
                        form = {"paths": json.loads(body or b"{}").get("paths", [])}
                    out = []
                    for p in form.get("paths", []):
                        if p in hub.files:
                            data = hub.files[p]
                            out.append({"type": "file", "path": p, "size": len(data), "oid": _blob_id(data)})
                    return self._reply(200, out)
                self._reply(404, {"error": f"unknown {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
