"""A local Hugging Face hub for tests: serves repositories from a folder over the hub's ``resolve``
API (HEAD for metadata, GET for bytes), so the download path of ``huggingface_hub`` runs for real
against ``HF_ENDPOINT`` with no internet. Other API routes answer 404, as for an unknown repo.

A repository's other revisions (branches such as Pythia's ``step1000``) live in
``root/OWNER/REPO/@revisions/BRANCH/``, each with a commit hash of its own."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalHub:
    """``root/OWNER/REPO/FILE`` served at ``url``; ``requests`` lists what was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.commits: dict[str, str] = {}  # commit hash -> the branch it was served as
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> bytes | None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                found = None
                commit = COMMIT
                if "/resolve/" in path:
                    repo, rest = path.lstrip("/").split("/resolve/", 1)
                    revision, _, name = rest.partition("/")
                    branch = hub.commits.get(revision, revision)
                    if branch in ("main", COMMIT):
                        file = hub.root / repo / name
                    else:  # another branch: its own folder and commit hash (an unknown one: 404)
                        file, commit = hub.root / repo / "@revisions" / branch / name, hashlib.sha1(branch.encode()).hexdigest()
                        hub.commits[commit] = branch
                    found = file if file.is_file() else None
                if found is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                data = found.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return data

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server protocol
                self._answer()

            def do_GET(self) -> None:  # noqa: N802
                data = self._answer()
                if data is not None:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def downloaded(self, name: str) -> bool:
        """Whether a file called ``name`` was fetched (GET)."""
        return any(r.startswith("GET ") and r.endswith(f"/{name}") for r in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
