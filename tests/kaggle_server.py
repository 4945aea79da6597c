"""A local stand-in for the Kaggle API: just enough for ``KaggleApi`` to download a dataset.

How the real client gets here (kaggle 2.2.5, kagglesdk 0.1.38):

* ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` is read when ``kaggle`` is imported (``KaggleApi.args``
  gets ``--local``), so ``build_kaggle_client`` targets ``http://localhost`` and an API call
  becomes ``POST http://localhost/api/v1/<service>/<method>`` with a JSON body.
* requests sends ``http://`` URLs through ``HTTP_PROXY``, so with it pointing here every
  request reaches this server in absolute form (``POST http://localhost/api/v1/...``).
  :meth:`KaggleStub.client_env` drops any inherited proxy settings, ``NO_PROXY`` included.
* A download is ``POST .../datasets.DatasetApiService/DownloadDataset``, answered with a 302 to
  ``http://storage.localhost/files/<owner>/<name>.zip``. requests follows it with a GET and,
  the host being different, drops the ``Authorization`` header as it does for Kaggle's real
  storage host. kaggle's own retries of the transfer are GETs with ``Range``/``If-Range``.
* ``KAGGLE_API_TOKEN`` is checked with ``POST .../security.OAuthService/IntrospectToken``;
  ``KAGGLE_USERNAME``/``KAGGLE_KEY`` go out as HTTP basic auth, with no check at login.

Why the client runs in a subprocess, one per run: kaggle reads its environment when imported
(the endpoint, its config folder, which it creates) and authenticates right there. Imported
into the pytest process it would keep the first environment it saw, could pick up the
developer's own credentials and would create ``~/.kaggle``. So each run is a process of its
own, in which kaggle is imported afresh (forked from a zygote that has not imported it:
tests/zygote.py), with :meth:`KaggleStub.client_env`, an environment with its own ``HOME`` and
no inherited ``KAGGLE_*`` or proxy variables. The server itself runs in a thread of the pytest
process: a test sets faults before a run and reads :attr:`KaggleStub.log` after it.

Faults (each for the next ``times`` requests of one kind, :data:`Target`): an error status
(:meth:`KaggleStub.fail`); an answer that never comes (:meth:`KaggleStub.hang`: the request is
read, nothing is sent); an archive body cut after some bytes (:meth:`KaggleStub.cut_transfers`:
the full ``Content-Length`` is announced, then the connection is closed) or stalled after some
bytes (:meth:`KaggleStub.stall_transfers`: the connection stays open, nothing more is sent). A
hung or stalled handler waits until the stub closes (at most :data:`HANG_LIMIT` seconds), in a
daemon thread, so it never keeps pytest from exiting.

The log never holds a secret, only which kind of credentials a request carried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

#: which requests a fault applies to: the API call, the GET of the archive it redirects to, or the token check
Target = Literal["api", "file", "auth"]
Credentials = Literal["key", "token", "wrong-key"]

DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
INTROSPECT_PATH = "/api/v1/security.OAuthService/IntrospectToken"
FILE_HOST = "storage.localhost"
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: the longest a hung or stalled handler keeps its connection (the stub's close releases it sooner)
HANG_LIMIT = 300.0


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    host: str
    path: str
    status: int
    #: "basic", "bearer" or None; never the credentials themselves
    auth: str | None
    range: str | None
    time: float


@dataclass
class _Fault:
    """An error `status`; or, with `hang`, no answer at all; or, with `cut_after`/`stall_after`, an archive
    body that stops after that many bytes, closed or kept open."""

    status: int
    target: Target
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    cut_after: int | None = None
    stall_after: int | None = None


class KaggleStub:
    """The server. ``datasets`` maps ``owner/name`` to the zip bytes served for it.

    It accepts ``USERNAME``/``KEY`` (basic auth) and ``TOKEN`` (bearer), answers anything
    else with 401, and appends every request to :attr:`log`.
    """

    USERNAME = "stub-user"
    KEY = "stub-key-0123456789"
    TOKEN = "stub-token-0123456789"

    def __init__(self, datasets: dict[str, bytes]) -> None:
        self.datasets = dict(datasets)
        self.log: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        self._released = threading.Event()  # set by close(): hung and stalled handlers let go
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.stub = self  # type: ignore[attr-defined]
        # close() waits for the loop's next look at its shutdown flag: every 0.05 s, not serve_forever's 0.5 s
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="kaggle-stub", daemon=True
        )
        self._thread.start()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, status: int, *, times: int = 1, on: Target = "api", headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests of kind ``on`` with ``status`` (and ``headers``)."""
        with self._lock:
            self._faults.append(_Fault(status, on, times, dict(headers or {})))

    def hang(self, *, times: int = 1, on: Target = "api") -> None:
        """Read the next ``times`` requests of kind ``on`` and never answer them."""
        with self._lock:
            self._faults.append(_Fault(0, on, times, hang=True))

    def cut_transfers(self, after: int, *, times: int = 1) -> None:
        """Send the full ``Content-Length`` on the next ``times`` archive GETs but close after ``after`` bytes."""
        with self._lock:
            self._faults.append(_Fault(0, "file", times, cut_after=after))

    def cut_next_transfer(self, after: int) -> None:
        self.cut_transfers(after, times=1)

    def stall_transfers(self, after: int, *, times: int = 1) -> None:
        """Send the headers and ``after`` bytes on the next ``times`` archive GETs, then nothing, keeping them open."""
        with self._lock:
            self._faults.append(_Fault(0, "file", times, stall_after=after))

    def client_env(self, home: Path, credentials: Credentials | None = "key") -> dict[str, str]:
        """The environment for a client subprocess: its own HOME, this server as proxy, this checkout first."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and not k.lower().endswith("_proxy")}
        env.update(
            HOME=str(home),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_CONFIG_HOME=str(home / ".config"),
            KAGGLE_CONFIG_DIR=str(home / ".kaggle"),
            KAGGLE_API_ENVIRONMENT="LOCALHOST",
            HTTP_PROXY=self.proxy_url,
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        )
        if credentials == "key":
            env.update(KAGGLE_USERNAME=self.USERNAME, KAGGLE_KEY=self.KEY)
        elif credentials == "wrong-key":
            env.update(KAGGLE_USERNAME=self.USERNAME, KAGGLE_KEY="not-the-key")
        elif credentials == "token":
            env.update(KAGGLE_API_TOKEN=self.TOKEN)
        return env

    def requests_to(self, target: Target) -> list[LoggedRequest]:
        """The logged DownloadDataset calls (``"api"``) or archive GETs (``"file"``), in order."""
        host = FILE_HOST if target == "file" else "localhost"
        return [r for r in self.log if r.host == host and r.path != INTROSPECT_PATH]

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> KaggleStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the handler ---------------------------------------------------------------

    def _take_fault(self, target: Target) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.target == target and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _hold(self) -> None:
        """Keep a connection open, sending nothing, until the stub closes."""
        self._released.wait(HANG_LIMIT)

    def _auth_kind(self, header: str | None) -> tuple[str | None, bool]:
        """(kind of credentials, whether they are the stub's)."""
        scheme, _, value = (header or "").partition(" ")
        if scheme == "Basic":
            return "basic", base64.b64decode(value).decode() == f"{self.USERNAME}:{self.KEY}"
        if scheme == "Bearer":
            return "bearer", value == self.TOKEN
        return None, False


class _Handler(BaseHTTPRequestHandler):
    server_version = "KaggleStub/1"
    disable_nagle_algorithm = True  # as the Hub server's handler: no delayed-ACK wait between headers and body

    @property
    def stub(self) -> KaggleStub:
        return self.server.stub  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        target: Target = "auth" if path == INTROSPECT_PATH else "api"
        fault = self.stub._take_fault(target)
        if fault is not None and fault.hang:
            self._log(0)
            self.stub._hold()
            self.close_connection = True
            return
        if path == INTROSPECT_PATH:
            if fault is not None:
                self._json(fault.status, {"code": fault.status, "message": f"stub fault {fault.status}"}, fault.headers)
                return
            active = body.get("token") == self.stub.TOKEN
            self._json(200, {"active": active, "username": self.stub.USERNAME if active else ""})
            return
        if path != DOWNLOAD_PATH:
            self._json(404, {"code": 404, "message": f"the stub does not serve {path}"})
            return
        if fault is not None:
            self._json(fault.status, {"code": fault.status, "message": f"stub fault {fault.status}"}, fault.headers)
            return
        if not self.stub._auth_kind(self.headers.get("Authorization"))[1]:
            self._json(401, {"code": 401, "message": "Unauthenticated"})
            return
        slug = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if slug not in self.stub.datasets:
            self._json(404, {"code": 404, "message": f"Dataset {slug} not found"})
            return
        self._send(302, b"", {"Location": f"http://{FILE_HOST}/files/{slug}.zip"})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        fault = self.stub._take_fault("file")
        if fault is not None and fault.hang:
            self._log(0)
            self.stub._hold()
            self.close_connection = True
            return
        if fault is not None and fault.cut_after is None and fault.stall_after is None:
            self._send(
                fault.status, f"stub fault {fault.status}".encode(), {"Content-Type": "text/plain", **fault.headers}
            )
            return
        data = self.stub.datasets.get(path.removeprefix("/files/").removesuffix(".zip"))
        if data is None or not path.startswith("/files/"):
            self._send(404, b"no such file", {"Content-Type": "text/plain"})
            return
        etag = f'"{hashlib.sha1(data).hexdigest()}"'
        headers = {
            "Content-Type": "application/zip",
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": LAST_MODIFIED,
        }
        requested = self.headers.get("Range", "")
        start = 0
        if requested.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
            start = int(requested.removeprefix("bytes=").split("-")[0])
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut, stall = (fault.cut_after, fault.stall_after) if fault is not None else (None, None)
        self._send(206 if start else 200, data[start:], headers, cut=stall if stall is not None else cut)
        if stall is not None:
            self.stub._hold()
            self.close_connection = True

    def _json(self, status: int, payload: dict[str, object], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _log(self, status: int) -> None:
        """Log this request as answered with ``status`` (0: not answered)."""
        url = urlsplit(self.path)
        entry = LoggedRequest(
            method=self.command,
            host=url.hostname or "",
            path=url.path,
            status=status,
            auth=self.stub._auth_kind(self.headers.get("Authorization"))[0],
            range=self.headers.get("Range"),
            time=time.monotonic(),
        )
        with self.stub._lock:
            self.stub.log.append(entry)

    def _send(self, status: int, body: bytes, headers: dict[str, str], cut: int | None = None) -> None:
        """Answer with ``body`` and its full ``Content-Length``; only its first ``cut`` bytes if given."""
        self._log(status)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: tests read :attr:`KaggleStub.log` instead."""
