"""A small local Hugging Face Hub for tests.

The real `huggingface_hub` and `datasets` clients talk HTTP to this server, so the tests exercise
the same requests as a push to, and a load from, huggingface.co. It serves dataset repos only,
speaks both upload protocols (Xet, the clients' default, through the storage service of
`tests/xet_server.py`; the legacy LFS batch protocol with `HF_HUB_DISABLE_XET=1`) and keeps every
commit as a full snapshot, so branches, tags and commit shas all stay readable.

Endpoints (as called by huggingface_hub 2.4 and datasets 3.6 / 5.2):

    GET    /api/whoami-v2
    POST   /api/validate-yaml
    POST   /api/repos/create
    GET    /api/datasets/{repo}                      and .../revision/{rev}
    POST   /api/datasets/{repo}/preupload/{rev}
    POST   /datasets/{repo}.git/info/lfs/objects/batch
    PUT    /lfs/datasets/{repo}/{oid}                (upload href handed out by the batch call)
    POST   /lfs/datasets/{repo}/{oid}/verify         (verify href handed out by the batch call)
    POST   /api/datasets/{repo}/commit/{rev}         (ndjson)
    GET    /api/datasets/{repo}/tree/{rev}[/{path}]
    POST   /api/datasets/{repo}/paths-info/{rev}
    GET    /api/datasets/{repo}/refs
    GET    /api/datasets/{repo}/commits/{rev}
    GET    /api/datasets/{repo}/auth-check           and .../auth-check/write
    POST   /api/datasets/{repo}/tag/{rev}            DELETE /api/datasets/{repo}/tag/{tag}
    HEAD   /datasets/{repo}/resolve/{rev}/{path}     GET (with Range) likewise

Environment: `HF_ENDPOINT` is read when huggingface_hub and datasets are imported, so the port is
chosen first. At the top of `tests/conftest.py`, before anything imports huggingface_hub or datasets:

    from tests.hub_server import configure_hub_environment, hub, hub_server  # noqa: F401 (fixtures)

    configure_hub_environment()

`configure_hub_environment` sets `HF_ENDPOINT=http://127.0.0.1:{free port}`, unsets `HF_HUB_DISABLE_XET`
(uploads go through Xet, as users' do), sets a temporary `HF_HOME` and removes any real token from the
environment; the session fixture `hub_server` then serves on that port, and the function fixture `hub`
resets faults and the request log for each test.

Tokens: reads are anonymous; a request carrying an unknown token gets 401. Writes need a token
with write access to the repo's namespace (401 without a token, 403 without the right).
Gated repos (`server.gate(repo_id, granted=users)`): as on the Hub, anyone may list the files (the
repo info says `gated`), but reading a file or `auth-check` needs a user granted access or one who
may write to the namespace: else 403 (401 without a token) with `X-Error-Code: GatedRepo`.
`auth-check/write` (`HfApi.auth_check(write=True)`) then needs write access to the namespace, gated
or not: a user granted access to read a gated repo gets 403 there, without `GatedRepo`.
whoami lists the namespaces a token may write to, besides the user's own, as its `orgs`.
Tag names: a tag git refuses (`git check-ref-format refs/tags/NAME`, a leading `-`) gets 400.
Listings, as on the Hub: the tree listing answers in pages of `tree_page_size` entries (10 by default, so
that every test that lists a repo of a few files pages), each linking to the next with
`Link: <...?cursor=...>; rel="next"`; the repo info lists at most `siblings_limit` files (a large repo's
`siblings` are truncated). `/preupload` answers `shouldIgnore` from the repo's `.gitignore` at the
revision (or the `gitIgnore` the client sends), read with git's rules (`gitignored`).
Fault injection: `server.fail(method, path_regex, status=..., times=..., headers=...)`; `drop=True` cuts the
connection halfway through the request body, `lose_response=True` after handling the request;
`hang=True` reads the request and never answers (nothing is handled), `stall_after=N` handles it and
sends the headers and the first N bytes of the answer, then nothing more, the connection kept open.
A hung or stalled handler waits until the test's faults are reset or the server stops (at most
`HANG_LIMIT` seconds), in a daemon thread, so it never keeps pytest from exiting. `SilentServer` is a
plain TCP port that accepts connections and never answers, for an `HF_ENDPOINT` that hangs. `body=`
(with `content_type=`) answers `status` with that body instead (an HTML page with 200: a captive portal).
Headers given to a fault win over the server's own (`X-Error-Message`, `X-Error-Code`).
`server.requests` logs every request (method, path, status, the oid of LFS uploads, the Range header, and when).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, unquote, urlencode

import pytest
import yaml

if TYPE_CHECKING:
    from tests.xet_server import XetServer

# Files stored in LFS whatever their content (the Hub's default .gitattributes has the same idea).
LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".npy", ".npz", ".bin", ".zip", ".gz", ".zst")
LFS_MIN_SIZE = 10 * 1024 * 1024
#: entries per page of the tree listing: small, so that the tests' listings of a few files page
TREE_PAGE_SIZE = 10
#: files listed at most in the repo info's `siblings`, beyond which a large repo's list is cut
SIBLINGS_LIMIT = 1000
#: the longest a hung or stalled handler waits for its release (a reset of the faults, the server's stop)
HANG_LIMIT = 300.0
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)

JSON = dict[str, Any]


# --- repository state -------------------------------------------------------------------------


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Entry:
    """One file of a commit: inline bytes for a regular file, an LFS object id otherwise."""

    size: int
    oid: str  # git blob id (of the LFS pointer file for an LFS file)
    content: bytes | None = None  # regular files only
    lfs_sha256: str | None = None  # LFS files only
    pointer_size: int | None = None
    xet_hash: str | None = None  # LFS files stored in the Xet service (tests/xet_server.py)

    @classmethod
    def regular(cls, content: bytes) -> Entry:
        return cls(size=len(content), oid=_git_oid(content), content=content)

    @classmethod
    def lfs(cls, sha256: str, size: int, xet_hash: str | None = None) -> Entry:
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        return cls(size=size, oid=_git_oid(pointer), lfs_sha256=sha256, pointer_size=len(pointer), xet_hash=xet_hash)

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.oid

    def info(self, path: str) -> JSON:
        info: JSON = {"type": "file", "path": path, "oid": self.oid, "size": self.size}
        if self.lfs_sha256 is not None:
            info["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": self.pointer_size}
        if self.xet_hash is not None:
            info["xetHash"] = self.xet_hash
        return info


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, Entry]  # full snapshot: path -> entry


@dataclass
class Repo:
    repo_id: str
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    gated: bool = False  # files readable only by `granted` users and those who may write (see HubServer.gate)
    granted: set[str] = field(default_factory=set)
    xet: XetServer | None = None  # where the repo's Xet-backed files are stored

    def resolve(self, revision: str) -> Commit | None:
        """A branch, a tag or a full commit sha."""
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)

    def read(self, entry: Entry) -> bytes:
        if entry.content is not None:
            return entry.content
        if entry.lfs_sha256 in self.lfs_objects or entry.xet_hash is None or self.xet is None:
            return self.lfs_objects[entry.lfs_sha256 or ""]
        return self.xet.served(entry.xet_hash)

    def add_commit(
        self, parent: Commit | None, files: dict[str, Entry], title: str, message: str, author: str
    ) -> Commit:
        seed = json.dumps(
            [parent.sha if parent else None, title, len(self.commits), sorted((p, e.oid) for p, e in files.items())]
        )
        commit = Commit(
            sha=hashlib.sha1(seed.encode()).hexdigest(),
            parent=parent.sha if parent else None,
            title=title,
            message=message,
            author=author,
            date=_now(),
            files=files,
        )
        self.commits[commit.sha] = commit
        return commit

    def history(self, commit: Commit) -> Iterator[Commit]:
        current: Commit | None = commit
        while current is not None:
            yield current
            current = self.commits.get(current.parent) if current.parent else None

    def last_commit(self, commit: Commit, path: str) -> Commit:
        """The most recent commit, from `commit` back, that changed `path` (a file or a folder)."""

        def view(c: Commit) -> list[tuple[str, str]]:
            return sorted((p, e.oid) for p, e in c.files.items() if p == path or p.startswith(path + "/"))

        current = view(commit)
        last = commit
        for older in list(self.history(commit))[1:]:
            if view(older) != current:
                break
            last = older
        return last


# --- tokens, faults, request log --------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """Who a token belongs to and which namespaces it may write to (empty: a read-only token)."""

    user: str
    write: frozenset[str]


@dataclass
class Fault:
    """What to do to the next `times` requests matching `method` and `path_regex` (searched in the decoded path).

    By default answer `status`; with `drop`, cut the connection halfway through the request body (a
    killed upload: nothing is stored); with `lose_response`, handle the request, then cut the
    connection instead of answering (the change is made, the client never hears of it); with
    `hang`, read the request and never answer (nothing is handled); with `stall_after`, handle the
    request, send the headers and that many bytes of the body, then stop sending and keep the
    connection open. Hung and stalled handlers wait for `released`. With `body`, answer `status`
    with that body and `content_type` (nothing is handled).
    """

    method: str
    path_regex: re.Pattern[str]
    status: int
    times: int
    drop: bool
    lose_response: bool
    headers: dict[str, str] = field(default_factory=dict)  # sent with the status, e.g. Retry-After
    hits: int = 0
    hang: bool = False
    stall_after: int | None = None
    released: threading.Event = field(default_factory=threading.Event)
    body: bytes | None = None  # the answer's body instead of the server's JSON error, e.g. an HTML page
    content_type: str = "text/html; charset=utf-8"
    stall_body: bool = False  # read half of the request's body, then stop reading and never answer
    skip: int = 0  # the first `skip` matching requests pass untouched (a fault that starts mid-run)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # URL path, percent-decoded, without the query string
    status: int | None  # None: the server dropped the connection
    lfs_oid: str | None = None  # set for LFS object uploads (PUT)
    time: float = field(default_factory=time.monotonic)  # when the request was answered
    range: str | None = None  # the request's Range header, e.g. `bytes=-65536` (a ranged read of a file's end)


class HubError(Exception):
    """An error response; `code` goes to the `X-Error-Code` header the client dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class _DropConnection(Exception):
    pass


# --- the server -------------------------------------------------------------------------------


class FaultInjector:
    """A test server (the Hub here, the Xet service in tests/xet_server.py): its HTTP thread, its faults and its
    request log. `_listen` makes the `ThreadingHTTPServer` whose handler reads this state as `server.hub`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.requests: list[LoggedRequest] = []

    def _listen(
        self,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        name: str,
        server: type[ThreadingHTTPServer] = ThreadingHTTPServer,
    ) -> None:
        self._httpd = server(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]  # the handler's name for its server's state
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release_hung()
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 500,
        times: int = 1,
        drop: bool = False,
        lose_response: bool = False,
        headers: dict[str, str] | None = None,
        hang: bool = False,
        stall_after: int | None = None,
        body: bytes | None = None,
        content_type: str = "text/html; charset=utf-8",
        stall_body: bool = False,
        skip: int = 0,
    ) -> Fault:
        """Answer the next `times` matching requests (after `skip` untouched ones) with `status` and `headers`
        (or `body`), cut the connection, hang or stall (`Fault`)."""
        fault = Fault(
            method.upper(),
            re.compile(path_regex),
            status,
            times,
            drop,
            lose_response,
            dict(headers or {}),
            hang=hang,
            stall_after=stall_after,
            body=body,
            content_type=content_type,
            stall_body=stall_body,
            skip=skip,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def reset_faults_and_log(self) -> None:
        self._release_hung()
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def _release_hung(self) -> None:
        """Let every hung or stalled handler go: its client is gone, or about to be."""
        with self._lock:
            for fault in self._faults:
                fault.released.set()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.hits < fault.times and fault.method == method and fault.path_regex.search(path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.hits += 1
                    return fault
        return None

    def log(self, request: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class HubServer(FaultInjector):
    """The Hub state plus a `ThreadingHTTPServer` serving it from a background thread."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self._repos: dict[str, Repo] = {}
        self._tokens: dict[str, TokenGrant] = {}
        #: entries per page of the tree listing; files at most in the repo info's `siblings`
        self.tree_page_size = TREE_PAGE_SIZE
        self.siblings_limit = SIBLINGS_LIMIT
        #: the Xet storage service whose URL the token routes hand out (tests/xet_server.py), if any
        self.xet: XetServer | None = None
        self._listen(port, _Handler, "hub-server")

    # test controls

    def add_token(self, token: str, user: str, *, write: Iterable[str] | None = None) -> None:
        """Accept `token` as `user`, allowed to write to `write` (default: the user's own namespace)."""
        with self._lock:
            self._tokens[token] = TokenGrant(user, frozenset([user] if write is None else write))

    def gate(self, repo_id: str, *, granted: Iterable[str] = ()) -> None:
        """Make `repo_id` a gated repo whose files only `granted` users (and those who may write to it) may read."""
        with self._lock:
            repo = self.repo(repo_id)
            repo.gated, repo.granted = True, set(granted)

    def write_files(self, repo_id: str, files: dict[str, bytes], title: str = "written by the test") -> str:
        """Commit `files` (regular, not LFS) to `main` directly, bypassing the client's own checks (e.g. that a
        README.md is UTF-8), as another tool could have; returns the new head."""
        with self._lock:
            repo = self.repo(repo_id)
            head = repo.commits[repo.branches["main"]]
            commit = repo.add_commit(
                head, {**head.files, **{p: Entry.regular(c) for p, c in files.items()}}, title, "", "test"
            )
            repo.branches["main"] = commit.sha
        return commit.sha

    def lfs_uploads(self, repo_id: str) -> list[str]:
        """Oids of the LFS objects PUT (and accepted) for `repo_id`, in arrival order."""
        prefix = f"/lfs/datasets/{repo_id}/"
        with self._lock:
            return [r.lfs_oid for r in self.requests if r.lfs_oid and r.status == 200 and r.path.startswith(prefix)]

    def reset_faults_and_log(self) -> None:
        """No pending fault, an empty request log, here and in the Xet service (and its counters zeroed)."""
        super().reset_faults_and_log()
        if self.xet is not None:
            self.xet.reset_faults_and_log()

    def uploads(self, repo_id: str) -> list[str]:
        """The sha256 of each file uploaded since the last reset: PUT through LFS for `repo_id`, or registered by
        a shard in the Xet service (which does not know repos)."""
        return self.lfs_uploads(repo_id) + (list(self.xet.counters.registered) if self.xet is not None else [])

    # request plumbing (called by the handler)

    def grant(self, authorization: str | None) -> TokenGrant | None:
        """The grant of the request's bearer token; None without a token; 401 for an unknown one."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        with self._lock:
            grant = self._tokens.get(token)
        if grant is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return grant

    def repo(self, repo_id: str) -> Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", code="RepoNotFound")
        return repo

    def commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def check_gate(self, grant: TokenGrant | None, repo: Repo) -> None:
        """A gated repo's files: granted users and those who may write to its namespace, as on the Hub."""
        allowed = grant is not None and (grant.user in repo.granted or repo.repo_id.split("/")[0] in grant.write)
        if not repo.gated or allowed:
            return
        raise HubError(
            401 if grant is None else 403,
            f"Access to dataset {repo.repo_id} is restricted and you are not in the authorized list. "
            f"Visit {self.url}/datasets/{repo.repo_id} to ask for access.",
            code="GatedRepo",
        )

    def auth_check(self, grant: TokenGrant | None, repo_id: str, write: bool) -> JSON:
        with self._lock:
            repo = self.repo(repo_id)
            self.check_gate(grant, repo)
        if write:
            self.check_write(grant, repo_id.split("/")[0])
        return {}

    def check_write(self, grant: TokenGrant | None, namespace: str) -> TokenGrant:
        if grant is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if namespace not in grant.write:
            raise HubError(403, f"You don't have the rights to write to the namespace {namespace!r}")
        return grant

    # endpoints: each returns the JSON body of its answer, or raises HubError

    def whoami(self, grant: TokenGrant | None) -> JSON:
        if grant is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        role = "write" if grant.write else "read"
        return {
            "type": "user",
            "name": grant.user,
            "orgs": [{"type": "org", "name": ns} for ns in sorted(grant.write - {grant.user})],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
        }

    def create_repo(self, grant: TokenGrant | None, body: JSON) -> tuple[int, JSON]:
        if body.get("type") != "dataset":
            raise HubError(400, f"this test Hub serves dataset repos only, got type {body.get('type')!r}")
        namespace = body.get("organization") or (grant.user if grant else "")
        repo_id = f"{namespace}/{body['name']}"
        self.check_write(grant, namespace)
        url = f"{self.url}/datasets/{repo_id}"
        with self._lock:
            if repo_id in self._repos:
                return 409, {"error": "You already created this dataset repo", "url": url}
            repo = Repo(repo_id, created_at=_now(), xet=self.xet)
            initial = repo.add_commit(
                None, {".gitattributes": Entry.regular(GITATTRIBUTES.encode())}, "initial commit", "", "system"
            )
            repo.branches["main"] = initial.sha
            self._repos[repo_id] = repo
        return 200, {"url": url, "name": repo_id, "id": repo_id}

    def repo_info(self, repo_id: str, revision: str, blobs: bool) -> JSON:
        with self._lock:
            repo = self.repo(repo_id)
            commit = self.commit_at(repo, revision)
            card = commit.files.get("README.md")
        siblings = []
        for path, entry in sorted(commit.files.items())[: self.siblings_limit]:
            sibling: JSON = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs_sha256:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.lfs_sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": _front_matter(card.content or b"") if card else {},
            "siblings": siblings,
        }

    def preupload(self, grant: TokenGrant | None, repo_id: str, revision: str, body: JSON) -> JSON:
        self.check_write(grant, repo_id.split("/")[0])
        with self._lock:
            repo = self.repo(repo_id)
            commit = self.commit_at(repo, revision)
            ignore = commit.files.get(".gitignore")
            rules = body.get("gitIgnore") if "gitIgnore" in body else repo.read(ignore).decode() if ignore else ""
        files = []
        for file in body["files"]:
            path, size = file["path"], file["size"]
            sample = base64.b64decode(file["sample"])
            lfs = path.endswith(LFS_SUFFIXES) or b"\0" in sample or size >= LFS_MIN_SIZE
            existing = commit.files.get(path)
            remote_oid = (existing.lfs_sha256 if lfs else existing.oid) if existing else None
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": gitignored(path, rules),
                    "oid": remote_oid,
                }
            )
        return {"files": files, "commitOid": commit.sha}

    def lfs_batch(self, grant: TokenGrant | None, repo_id: str, body: JSON) -> JSON:
        if body.get("operation") != "upload":
            raise HubError(400, f"only the upload operation is served, got {body.get('operation')!r}")
        self.check_write(grant, repo_id.split("/")[0])
        with self._lock:
            present = set(self.repo(repo_id).lfs_objects)
        objects = []
        for obj in body["objects"]:
            item: JSON = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in present:  # objects already stored get no action: the client skips them
                href = f"{self.url}/lfs/datasets/{repo_id}/{obj['oid']}"
                item["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            objects.append(item)
        return {"transfer": "basic", "objects": objects}

    def lfs_put(self, repo_id: str, oid: str, content: bytes) -> JSON:
        actual = hashlib.sha256(content).hexdigest()
        if actual != oid:
            raise HubError(400, f"LFS object sha256 mismatch: expected {oid}, got {actual}")
        with self._lock:
            self.repo(repo_id).lfs_objects[oid] = content
        return {}

    def lfs_verify(self, repo_id: str, body: JSON) -> JSON:
        with self._lock:
            content = self.repo(repo_id).lfs_objects.get(body["oid"])
        if content is None or len(content) != body["size"]:
            raise HubError(404, f"LFS object {body['oid']} of size {body['size']} not found")
        return {}

    def commit(self, grant: TokenGrant | None, repo_id: str, branch: str, lines: list[JSON]) -> JSON:
        grant = self.check_write(grant, repo_id.split("/")[0])
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        with self._lock:
            repo = self.repo(repo_id)
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} is not a branch", code="RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent is not None and parent != head.sha:
                raise HubError(412, f"A commit has happened since {parent}: the head of {branch} is {head.sha}")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"].strip("/")
                if key == "file":
                    files[path] = Entry.regular(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    files[path] = self._lfs_entry(repo, value["oid"], path)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                elif key == "deletedFolder":
                    for inside in [p for p in files if p.startswith(path + "/")]:
                        del files[inside]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = repo.add_commit(head, files, header.get("summary", ""), header.get("description", ""), grant.user)
            repo.branches[branch] = commit.sha
        return {
            "success": True,
            "commitOid": commit.sha,
            "commitUrl": f"{self.url}/datasets/{repo_id}/commit/{commit.sha}",
        }

    def tree(
        self, repo_id: str, revision: str, path: str, recursive: bool, expand: bool, cursor: str | None = None
    ) -> tuple[list[JSON], str | None]:
        """One page of the listing from `cursor` (None: the first), and the cursor of the next page (None: last)."""
        with self._lock:
            repo = self.repo(repo_id)
            commit = self.commit_at(repo, revision)
            entries = _tree_entries(commit, path, recursive)
            if path and not entries and path not in commit.files:
                raise HubError(404, f"{path} does not exist at {revision}", code="EntryNotFound")
            try:
                start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
            except ValueError as error:
                raise HubError(400, f"invalid cursor {cursor!r}") from error
            end = start + self.tree_page_size
            following = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(entries) else None
            return [self._path_info(repo, commit, p, expand) for p in entries[start:end]], following

    def paths_info(self, repo_id: str, revision: str, paths: list[str], expand: bool) -> list[JSON]:
        with self._lock:
            repo = self.repo(repo_id)
            commit = self.commit_at(repo, revision)
            folders = _folders(commit)
            found = [p.strip("/") for p in paths if p.strip("/") in commit.files or p.strip("/") in folders]
            return [self._path_info(repo, commit, p, expand) for p in found]

    def _path_info(self, repo: Repo, commit: Commit, path: str, expand: bool) -> JSON:
        entry = commit.files.get(path)
        if entry is not None:
            info = entry.info(path)
        else:
            inside = sorted((p, e.oid) for p, e in commit.files.items() if p.startswith(path + "/"))
            info = {"type": "directory", "path": path, "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest()}
        if expand:
            last = repo.last_commit(commit, path)
            info["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return info

    def refs(self, repo_id: str) -> JSON:
        with self._lock:
            repo = self.repo(repo_id)

            def refs_of(kind: str, names: dict[str, str]) -> list[JSON]:
                return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(names.items())]

            return {
                "branches": refs_of("heads", repo.branches),
                "tags": refs_of("tags", repo.tags),
                "converts": [],
                "pullRequests": [],
            }

    def commits(self, repo_id: str, revision: str) -> list[JSON]:
        with self._lock:
            repo = self.repo(repo_id)
            return [
                {"id": c.sha, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
                for c in repo.history(self.commit_at(repo, revision))
            ]

    def create_tag(self, grant: TokenGrant | None, repo_id: str, revision: str, body: JSON) -> JSON:
        self.check_write(grant, repo_id.split("/")[0])
        with self._lock:
            repo = self.repo(repo_id)
            commit = self.commit_at(repo, revision)
            tag = body["tag"]
            if problem := tag_name_problem(tag):
                raise HubError(400, f"Invalid tag name {tag!r}: {problem}")
            if tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.sha
        return {}

    def delete_tag(self, grant: TokenGrant | None, repo_id: str, tag: str) -> JSON:
        self.check_write(grant, repo_id.split("/")[0])
        with self._lock:
            repo = self.repo(repo_id)
            if repo.tags.pop(tag, None) is None:
                raise HubError(404, f"Tag {tag} not found", code="RevisionNotFound")
        return {}

    def resolve(self, grant: TokenGrant | None, repo_id: str, revision: str, path: str) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            repo = self.repo(repo_id)
            self.check_gate(grant, repo)
            commit = self.commit_at(repo, revision)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(
                    404, f"Entry not found: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit.sha}
                )
            content = repo.read(entry)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:  # the Hub sets these on the redirect to its storage; a local server serves directly
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
        if entry.xet_hash:  # a client with hf_xet downloads it from the Xet service instead
            route = f"{self.url}/api/datasets/{repo_id}/xet-read-token/{commit.sha}"
            headers.update({"X-Xet-Hash": entry.xet_hash, "X-Xet-Refresh-Route": route})
        return content, headers

    # --- Xet: the token routes and the files stored in the Xet service (tests/xet_server.py) -------

    def xet_token(self, grant: TokenGrant | None, repo_id: str, revision: str, write: bool) -> JSON:
        """A Xet access token for reading or writing `repo_id`, and the service's URL, as the Hub's
        `xet-read-token` / `xet-write-token` routes answer (the client reads the body or the headers)."""
        with self._lock:
            repo = self.repo(repo_id)
            if not write:
                self.check_gate(grant, repo)
                self.commit_at(repo, revision)
        if write:
            self.check_write(grant, repo_id.split("/")[0])
        if self.xet is None:
            raise HubError(404, "this test Hub has no Xet service")
        token, expires = self.xet.issue_token(write=write)
        return {"accessToken": token, "exp": expires, "casUrl": self.xet.url}

    def _lfs_entry(self, repo: Repo, sha256: str, path: str) -> Entry:
        """The entry of an LFS file a commit names by its sha256: uploaded through LFS or through Xet."""
        content = repo.lfs_objects.get(sha256)
        if content is not None:
            return Entry.lfs(sha256, len(content))
        stored = self.xet.file_by_sha256(sha256) if self.xet is not None else None
        if stored is None:
            raise HubError(422, f"LFS object {sha256} for {path} was never uploaded")
        return Entry.lfs(sha256, stored.size, xet_hash=stored.hash)


def tag_name_problem(tag: str) -> str | None:
    """Why git refuses `tag` as a tag name, or None: `git check-ref-format refs/tags/{tag}` and `git tag`'s leading `-`.

    Written from git's documentation of check-ref-format, independently of `openeds.hub`, so the two can be
    checked against each other and against git itself.
    """
    parts = tag.split("/")
    rules = [
        (not tag, "empty"),
        (tag.startswith("-"), "starts with '-'"),
        (any(c < " " or c == "\x7f" for c in tag), "holds a control character"),
        (any(c in tag for c in " ~^:?*[\\"), "holds one of ' ~^:?*[\\'"),
        (".." in tag or "@{" in tag, "holds '..' or '@{'"),
        (any(not part for part in parts), "has an empty component (a leading, trailing or double '/')"),
        (
            any(part.startswith(".") or part.endswith(".lock") for part in parts),
            "a component starts with '.' or ends with '.lock'",
        ),
        (tag.endswith("."), "ends with '.'"),
    ]
    return next((why for broken, why in rules if broken), None)


def gitignored(path: str, rules: str) -> bool:
    """Whether git ignores the file `path` under the `.gitignore` text `rules` (at the repo's root).

    Written from git's documentation of gitignore: blank lines and `#` comments are skipped, `!` re-includes,
    a trailing `/` matches folders only, a pattern with another `/` is anchored at the root (else it matches
    a name at any depth), `*` and `?` stay within a path component and `**` spans components; the last rule
    that matches decides, and a file in an ignored folder stays ignored.
    """
    compiled = []
    for line in rules.splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        folder_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if pattern:
            compiled.append((_gitignore_regex(pattern), negated, folder_only))
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        candidate, is_folder = "/".join(parts[:depth]), depth < len(parts)
        ignored = False
        for regex, negated, folder_only in compiled:
            if (is_folder or not folder_only) and regex.fullmatch(candidate):
                ignored = not negated
        if ignored:
            return True
    return False


def _gitignore_regex(pattern: str) -> re.Pattern[str]:
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out if anchored else f"(?:.*/)?{out}")


def _front_matter(card: bytes) -> JSON:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", card.decode(errors="replace"), flags=re.DOTALL)
    return (yaml.safe_load(match.group(1)) or {}) if match else {}


def _folders(commit: Commit) -> set[str]:
    return {str(parent) for path in commit.files for parent in PurePosixPath(path).parents if str(parent) != "."}


def _tree_entries(commit: Commit, path: str, recursive: bool) -> list[str]:
    """Files and folders below `path` (direct children unless `recursive`), sorted."""
    prefix = f"{path}/" if path else ""
    below = [p for p in sorted(commit.files.keys() | _folders(commit)) if p.startswith(prefix)]
    if recursive:
        return below
    return [p for p in below if "/" not in p[len(prefix) :]]


# --- HTTP ---------------------------------------------------------------------------------------


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("GET", rf"/api/datasets/{_REPO}", "repo_info"),
        ("GET", rf"/api/datasets/{_REPO}/revision/(?P<rev>[^/]+)", "repo_info"),
        ("POST", rf"/api/datasets/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", rf"/lfs/datasets/{_REPO}/(?P<oid>[0-9a-f]{{64}})", "lfs_put"),
        ("POST", rf"/lfs/datasets/{_REPO}/(?P<oid>[0-9a-f]{{64}})/verify", "lfs_verify"),
        ("POST", rf"/api/datasets/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", rf"/api/datasets/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"/api/datasets/{_REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", rf"/api/datasets/{_REPO}/refs", "refs"),
        ("GET", rf"/api/datasets/{_REPO}/commits/(?P<rev>[^/]+)", "commits"),
        ("GET", rf"/api/datasets/{_REPO}/auth-check(?P<write>/write)?", "auth_check"),
        ("POST", rf"/api/datasets/{_REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", rf"/api/datasets/{_REPO}/tag/(?P<rev>[^/]+)", "delete_tag"),
        ("GET", rf"/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("GET", rf"/api/datasets/{_REPO}/xet-(?P<xet>read|write)-token/(?P<rev>[^/]+)", "xet_token"),
    ]
]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _flag(params: dict[str, list[str]], key: str) -> bool:
    return params.get(key, ["false"])[0].lower() in ("1", "true")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect; every response has a Content-Length
    server_version = "openeds-test-hub"
    # TCP_NODELAY: a response's headers and body leave in two writes, and with Nagle's algorithm the
    # second waits for the client's delayed ACK of the first (up to 40 ms on Linux) on every keep-alive request
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr noise
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        raw_path, _, query = self.path.partition("?")
        path = unquote(raw_path)
        route = self._route(raw_path)
        lfs_oid = route[1]["oid"] if route and route[0] == "lfs_put" else None
        ranged = self.headers.get("Range")
        try:
            fault = self.hub.take_fault(self.command, path)
            if fault is not None and fault.stall_body:  # an upload whose body stops moving halfway
                self._read_part()
                self.hub.log(LoggedRequest(self.command, path, None, lfs_oid, range=ranged))
                self._hold(fault)
                return
            body = self._read_body(drop=fault is not None and fault.drop)
            if fault is not None and fault.hang:
                self.hub.log(LoggedRequest(self.command, path, None, lfs_oid, range=ranged))
                self._hold(fault)
                return
            if fault is not None and fault.stall_after is not None:
                status, payload, headers = self._dispatch(*route, parse_qs(query), body) if route else (404, b"", {})
                self.hub.log(LoggedRequest(self.command, path, status, lfs_oid, range=ranged))
                self._respond(status, payload, headers, send=fault.stall_after)
                self._hold(fault)
                return
            if fault is not None and fault.body is not None and not fault.lose_response:
                self.hub.log(LoggedRequest(self.command, path, fault.status, lfs_oid, range=ranged))
                self._respond(fault.status, fault.body, {"Content-Type": fault.content_type, **fault.headers})
                return
            if fault is not None and not fault.lose_response:
                raise HubError(
                    fault.status, f"injected fault: {fault.status} for {self.command} {path}", headers=fault.headers
                )
            if route is None:
                raise HubError(404, f"no route for {self.command} {raw_path} on this test Hub")
            status, payload, headers = self._dispatch(*route, parse_qs(query), body)
            if fault is not None:
                raise _DropConnection
        except _DropConnection:
            self.hub.log(LoggedRequest(self.command, path, None, lfs_oid, range=ranged))
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except Exception as error:
            if not isinstance(error, HubError):  # a bug of the test Hub: show it, answer 500
                traceback.print_exc()
                error = HubError(500, f"test Hub bug: {type(error).__name__}: {error}")
            status, headers = error.status, {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            headers.update(error.headers)  # a fault's headers win
            payload = json.dumps({"error": error.message}).encode()
        self.hub.log(LoggedRequest(self.command, path, status, lfs_oid, range=ranged))
        self._respond(status, payload, headers)

    def _read_body(self, drop: bool) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if drop:
                    raise _DropConnection
            self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if drop:  # read half of the body, as a connection cut mid-upload would
            self.rfile.read(length // 2)
            raise _DropConnection
        return self.rfile.read(length)

    def _read_part(self) -> int:
        """Read half of the request's body (its first chunk if chunked) and no more; returns the bytes read."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            size = int(self.rfile.readline().split(b";")[0], 16)
            return len(self.rfile.read(size))
        return len(self.rfile.read(int(self.headers.get("Content-Length") or 0) // 2))

    def _route(self, raw_path: str) -> tuple[str, dict[str, str]] | None:
        """The endpoint name and the decoded path parameters, or None for an unknown endpoint."""
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(raw_path)
            if match and method == self.command:
                return name, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
        return None

    def _dispatch(
        self, name: str, p: dict[str, str], query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        hub = self.hub
        grant = hub.grant(self.headers.get("Authorization"))  # 401 for an unknown token, on every endpoint
        rev = p.get("rev", "main")
        result: Any
        status = 200
        if name == "whoami":
            result = hub.whoami(grant)
        elif name == "validate_yaml":
            content = json.loads(body)["content"]
            try:
                _front_matter(content.encode())
            except yaml.YAMLError as error:
                raise HubError(400, f"Invalid YAML in README.md: {error}") from error
            result = {"warnings": []}
        elif name == "create_repo":
            status, result = hub.create_repo(grant, json.loads(body))
        elif name == "repo_info":
            result = hub.repo_info(p["repo"], rev, blobs=_flag(query, "blobs"))
        elif name == "preupload":
            result = hub.preupload(grant, p["repo"], rev, json.loads(body))
        elif name == "lfs_batch":
            result = hub.lfs_batch(grant, p["repo"], json.loads(body))
        elif name == "lfs_put":
            result = hub.lfs_put(p["repo"], p["oid"], body)
        elif name == "lfs_verify":
            result = hub.lfs_verify(p["repo"], json.loads(body))
        elif name == "commit":
            result = hub.commit(grant, p["repo"], rev, [json.loads(line) for line in body.splitlines() if line.strip()])
        elif name == "tree":
            result, following = hub.tree(
                p["repo"],
                rev,
                p.get("path", "").strip("/"),
                _flag(query, "recursive"),
                _flag(query, "expand"),
                query.get("cursor", [None])[0],
            )
            if following is not None:  # as the Hub: an absolute URL with the same query and the next cursor
                params = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
                link = f"{hub.url}{self.path.partition('?')[0]}?{urlencode([*params, ('cursor', following)])}"
                headers = {"Content-Type": "application/json", "Link": f'<{link}>; rel="next"'}
                return 200, json.dumps(result).encode(), headers
        elif name == "paths_info":
            form = parse_qs(body.decode())  # form-encoded: paths=a&paths=b&expand=false
            result = hub.paths_info(p["repo"], rev, form.get("paths", []), _flag(form, "expand"))
        elif name == "refs":
            result = hub.refs(p["repo"])
        elif name == "commits":
            result = hub.commits(p["repo"], rev)
        elif name == "auth_check":
            result = hub.auth_check(grant, p["repo"], write="write" in p)
        elif name == "create_tag":
            result = hub.create_tag(grant, p["repo"], rev, json.loads(body))
        elif name == "delete_tag":
            result = hub.delete_tag(grant, p["repo"], rev)
        elif name == "xet_token":
            result = hub.xet_token(grant, p["repo"], rev, write=p["xet"] == "write")
            headers = {
                "X-Xet-Cas-Url": result["casUrl"],
                "X-Xet-Access-Token": result["accessToken"],
                "X-Xet-Token-Expiration": str(result["exp"]),
            }
            return 200, json.dumps(result).encode(), {"Content-Type": "application/json", **headers}
        else:  # resolve
            content, headers = hub.resolve(grant, p["repo"], rev, p["path"])
            if self.command == "GET" and hub.xet is not None and "X-Xet-Hash" in headers:
                hub.xet.bridged(headers["X-Xet-Hash"])  # the Hub's redirect to its Xet bridge, served here
            return self._ranged(content, headers)
        return status, json.dumps(result).encode(), {"Content-Type": "application/json"}

    def _ranged(self, content: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        requested = self.headers.get("Range")
        if not requested:
            return 200, content, headers
        match = _RANGE.match(requested.strip())
        size = len(content)
        if match is None or match.groups() == ("", ""):
            raise HubError(416, f"unsupported Range {requested!r}", headers={"Content-Range": f"bytes */{size}"})
        first, last = match.groups()
        start, end = (size - int(last), size - 1) if first == "" else (int(first), min(int(last or size - 1), size - 1))
        start = max(start, 0)  # a suffix longer than the file: all of it
        if start >= size or start > end:  # a file of 0 bytes has no range to serve, not even a suffix (RFC 9110)
            raise HubError(
                416, f"Range {requested!r} outside {size} bytes", headers={"Content-Range": f"bytes */{size}"}
            )
        return 206, content[start : end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}

    def _respond(self, status: int, payload: bytes, headers: dict[str, str], send: int | None = None) -> None:
        """Answer `payload` with its full Content-Length; only its first `send` bytes if given (a stalled answer)."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload if send is None else payload[:send])
        self.wfile.flush()

    def _hold(self, fault: Fault) -> None:
        """Keep the connection open, sending nothing, until the fault is released; then close it."""
        fault.released.wait(HANG_LIMIT)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class SilentServer:
    """A TCP port on 127.0.0.1 that accepts connections and never answers: an endpoint that hangs.

    The kernel completes each connection (the listening socket's backlog) and nobody reads or
    writes it. `close()` (or leaving the `with` block) resets them all.
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=128)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- pytest wiring --------------------------------------------------------------------------------

ENDPOINT_VARIABLE = "HF_ENDPOINT"
_CLEARED_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_hub_environment() -> str:
    """Point huggingface_hub and datasets at a local test Hub; returns the endpoint URL.

    Call it from `tests/conftest.py` before huggingface_hub or datasets is imported: both read
    `HF_ENDPOINT` at import time. It picks a free port, sets `HF_ENDPOINT`, unsets `HF_HUB_DISABLE_XET`
    (the test Hub speaks Xet as well as LFS), sets a temporary `HF_HOME` (removed at exit), and removes any
    real token and offline switch from the environment so no test can reach huggingface.co or
    send a developer's token.
    """
    imported = sorted(name for name in ("huggingface_hub", "datasets") if name in sys.modules)
    if imported:
        raise RuntimeError(
            f"{', '.join(imported)} was imported before configure_hub_environment(); it reads HF_ENDPOINT at import, "
            "so call configure_hub_environment() at the top of tests/conftest.py, before importing them"
        )
    home = tempfile.mkdtemp(prefix="hf-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for name in (*_CLEARED_VARIABLES, "HF_HUB_DISABLE_XET"):  # publications go through Xet, as users' do
        os.environ.pop(name, None)
    endpoint = f"http://127.0.0.1:{free_port()}"
    os.environ.update(
        {
            ENDPOINT_VARIABLE: endpoint,
            "HF_HOME": home,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"])),  # a proxy must not see it
        }
    )
    return endpoint


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The test Hub, serving on the port that `configure_hub_environment` put in HF_ENDPOINT."""
    endpoint = os.environ.get(ENDPOINT_VARIABLE, "")
    if not endpoint.startswith("http://127.0.0.1:"):
        raise RuntimeError(
            f"HF_ENDPOINT is {endpoint!r}; expected http://127.0.0.1:PORT; "
            "call configure_hub_environment() at the top of tests/conftest.py"
        )
    from tests.xet_server import XetServer  # it builds on this module

    server = HubServer(port=int(endpoint.rsplit(":", 1)[1]))
    server.xet = XetServer().start()
    server.start()
    yield server
    server.stop()
    server.xet.stop()


@pytest.fixture
def hub(hub_server: HubServer, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The session's test Hub (and its Xet service) with no pending fault, an empty request log and counters,
    and a Xet cache of the test's own (`HF_XET_CACHE`): hf_xet skips what its cache says it uploaded, which
    an earlier test's cache would say of uploads the counters of this test never see."""
    hub_server.reset_faults_and_log()
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path_factory.mktemp("xet-cache")))
    from huggingface_hub.utils import _xet  # the session reads HF_XET_CACHE when made: the next call makes one

    if _xet._GLOBAL_XET_HOLDER._session is not None:
        _xet.abort_xet_session()
    return hub_server
