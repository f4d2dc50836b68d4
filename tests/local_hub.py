"""A small model hub on 127.0.0.1 for download tests: the endpoints ``huggingface_hub`` calls, in the
hub's layout, plus plain files for the catalog's URL downloads.

- ``GET /api/models/{repo}[/revision/{rev}]``: the model info (``sha``, ``siblings`` with sizes, blob ids and
  LFS details when ``?blobs=true``), what ``model_info`` / ``repo_info`` read;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the file listing ``list_repo_tree`` / ``snapshot_download`` read;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (a large file's SHA-256, as
  ``X-Linked-Etag`` too; a small file's git blob hash), ``X-Repo-Commit``, ``Content-Length``,
  ``Accept-Ranges`` and ``Range`` requests answered with 206;
- ``GET /files/{name}``: a plain file (LaMa, MI-GAN, FastSAM's addresses), with ``Range`` too.

Test hooks: ``gated`` repositories answer 401 (``X-Error-Code: GatedRepo``) unless the request bears
``Authorization: Bearer <token>``; ``cut_once[path] = n`` drops the connection after n bytes of that
file, once; ``corrupt`` paths are served with their last byte changed (their ETag stays the good
file's); ``cdn_redirects`` sends large files through a 302 to another host name (``localhost``,
as the real hub sends them to its CDN); ``authorization`` records each path's Authorization header;
``hold_once[path] = n`` sends n bytes of that file, then waits for ``release`` (once), so a
test can act mid-download without racing the transfer; ``throttle`` seconds between 4 KB chunks; ``requests`` records (method, path, Range header).

    with LocalHub({"org/model": folder}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LARGE_SUFFIXES = (".safetensors", ".pt", ".bin", ".ckpt")  # stored in LFS on the real hub
CHUNK = 4096


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()


class LocalHub:
    """The server; ``repos`` maps a repository id to a folder (every file under it is served) or to a
    dict of path → bytes; ``files`` maps a name under ``/files/`` to bytes."""

    def __init__(self, repos: dict[str, Path | dict[str, bytes]] | None = None,
                 files: dict[str, bytes] | None = None) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        for repo, content in (repos or {}).items():
            self.add_repo(repo, content)
        self.files: dict[str, bytes] = dict(files or {})
        self.gated: dict[str, str] = {}  # repo → the token it accepts
        self.cut_once: dict[str, int] = {}  # "repo/path" or "files/name" → bytes sent before the cut
        self.hold_once: dict[str, int] = {}  # "repo/path" or "files/name" → bytes sent before waiting for release
        self.release = threading.Event()
        self.corrupt: set[str] = set()
        self.throttle = 0.0
        self.cdn_redirects = False  # large files answered with a 302 to another host name, as the real hub does
        self.authorization: dict[str, str | None] = {}  # path → the Authorization header of its last request
        self.requests: list[tuple[str, str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None

    def add_repo(self, repo: str, content: Path | dict[str, bytes]) -> None:
        if isinstance(content, dict):
            self.repos[repo] = dict(content)
        else:
            folder = Path(content)
            self.repos[repo] = {path.relative_to(folder).as_posix(): path.read_bytes()
                                for path in sorted(folder.rglob("*")) if path.is_file()}

    def commit(self, repo: str) -> str:
        digest = hashlib.sha1(repo.encode(), usedforsecurity=False)
        for path, data in sorted(self.repos[repo].items()):
            digest.update(path.encode() + hashlib.sha256(data).digest())
        return digest.hexdigest()

    @staticmethod
    def etag(path: str, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if path.endswith(LARGE_SUFFIXES) else _git_blob_sha1(data)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def file_url(self, name: str) -> str:
        return f"{self.url}/files/{name}"

    def ranges(self, fragment: str) -> list[str]:
        """The Range headers of the GET requests whose path contains ``fragment``."""
        return [header for method, path, header in self.requests if method == "GET" and fragment in path and header]

    def start(self) -> LocalHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- answers ---

    def model_info(self, repo: str, blobs: bool) -> dict:
        siblings = []
        for path, data in sorted(self.repos[repo].items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update(size=len(data), blobId=_git_blob_sha1(data))
                if path.endswith(LARGE_SUFFIXES):
                    sibling["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(sibling)
        return {"_id": repo, "id": repo, "modelId": repo, "sha": self.commit(repo), "private": False,
                "gated": "manual" if repo in self.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "siblings": siblings}

    def tree(self, repo: str, prefix: str) -> list[dict]:
        entries = []
        for path, data in sorted(self.repos[repo].items()):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            entry = {"type": "file", "oid": _git_blob_sha1(data), "size": len(data), "path": path}
            if path.endswith(LARGE_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _answer(self, head: bool) -> None:
            split = urlsplit(self.path)
            path = unquote(split.path)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            hub.authorization[path] = self.headers.get("Authorization")
            if match := (re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", path)
                         or re.fullmatch(r"/api/models/([^/]+/[^/]+)", path)):
                repo = match.group(1)
                if repo not in hub.repos:
                    return self._error(401, "RepoNotFound", "Repository not found")
                return self._json(200, hub.model_info(repo, "blobs=true" in split.query))
            if match := re.fullmatch(r"/api/models/(.+?)/tree/([0-9a-f]{40}|main)(/.*)?", path):
                repo = match.group(1)
                if repo not in hub.repos:
                    return self._error(401, "RepoNotFound", "Repository not found")
                return self._json(200, hub.tree(repo, (match.group(3) or "").lstrip("/")))
            if match := re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path):
                repo, name = match.group(1), match.group(3)
                if repo not in hub.repos:
                    return self._error(401, "RepoNotFound", "Repository not found")
                if repo in hub.gated and self.headers.get("Authorization") != f"Bearer {hub.gated[repo]}":
                    return self._error(401, "GatedRepo", f"Access to model {repo} is restricted. You must have "
                                                         "access to it and be authenticated to access it.")
                data = hub.repos[repo].get(name)
                if data is None:
                    return self._error(404, "EntryNotFound", f"{name} does not exist")
                headers = {"ETag": f'"{hub.etag(name, data)}"', "X-Repo-Commit": hub.commit(repo)}
                if name.endswith(LARGE_SUFFIXES):
                    headers.update({"X-Linked-Etag": headers["ETag"], "X-Linked-Size": str(len(data))})
                if hub.cdn_redirects and name.endswith(LARGE_SUFFIXES):
                    port = hub.url.rsplit(":", 1)[1]
                    headers["Location"] = f"http://localhost:{port}/cdn/{repo}/{name}"
                    headers["Content-Length"] = "0"
                    self.send_response(302)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    return None
                served = data[:-1] + bytes([data[-1] ^ 0xFF]) if f"{repo}/{name}" in hub.corrupt else data
                return self._send_file(f"{repo}/{name}", served, headers, head)
            if match := re.fullmatch(r"/cdn/(.+?/.+?)/(.+)", path):  # where large files are redirected to
                data = hub.repos.get(match.group(1), {}).get(match.group(2))
                if data is None:
                    return self._error(404, "EntryNotFound", "no such file")
                return self._send_file(f"{match.group(1)}/{match.group(2)}", data, {}, head)
            if match := re.fullmatch(r"/files/(.+)", path):
                data = hub.files.get(match.group(1))
                if data is None:
                    return self._error(404, "EntryNotFound", "no such file")
                return self._send_file(f"files/{match.group(1)}", data, {}, head)
            return self._error(404, "NotFound", f"{path}: not served here")

        def _send_file(self, key: str, data: bytes, headers: dict[str, str], head: bool) -> None:
            start = 0
            requested = self.headers.get("Range")
            if requested and (match := re.fullmatch(r"bytes=(\d+)-", requested.strip())):
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if head:
                return
            cut = hub.cut_once.pop(key, None)
            hold = hub.hold_once.pop(key, None)
            sent = 0
            for offset in range(0, len(body), CHUNK):
                chunk = body[offset:offset + CHUNK]
                if hold is not None and sent >= hold:
                    self.wfile.flush()
                    hub.release.wait(30)
                    hold = None
                if cut is not None and sent + len(chunk) > cut:
                    self.wfile.write(chunk[:cut - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                if hub.throttle:
                    self.wfile.flush()
                    time.sleep(hub.throttle)

    return Handler
