"""A small local Xet storage service (CAS) for tests, driven by the real `hf_xet` client.

`huggingface_hub` uploads every file through `hf_xet` whenever it is importable and
`HF_HUB_DISABLE_XET` is unset: hf_xet asks the Hub's `xet-write-token` route for a token and the
storage service's URL (tests/hub_server.py answers it with this server's), then talks to the
service directly. This server speaks that protocol (the Hub's Xet docs: upload protocol, download
protocol, CAS API, xorb and shard formats), as hf_xet 1.8 sends it. Logged from a real push, the
requests of one upload are:

    GET  {hub}/api/datasets/{repo}/xet-write-token/{rev}   the token and the CAS URL (the Hub's route)
    GET  /v1/chunks/default/{chunk hash}       global deduplication query: 404 here (nothing to share)
    POST /v1/xorb-grants/default/{xorb hash}   upload grant (newer than the docs): 200 here for a xorb
                                               stored already (nothing is sent), else 404, and the
                                               client then uploads through the documented route
    POST /v1/xorbs/default/{xorb hash}         a xorb: the chunk sequence (no footer), kept
    POST /v2/shards                            NDJSON shard upload: 404 here, the client falls back to
    POST /v1/shards                            the shard that registers the files (file info: xorb + chunk
                                               range per term, and each file's sha256)
    POST /v1/telemetry                         the client's statistics: accepted, ignored

and a download (`hf_hub_download`, `load_dataset`) asks `GET /v2/reconstructions/{file hash}`
(404 here), then `GET /v1/reconstructions/{file hash}` (with a `Range` header for part of a file),
and fetches the byte ranges of the xorbs it names from `GET /xorbs/{xorb hash}`, the URL this
server hands out where the Hub's would be a presigned storage URL.

A hash in a path is the API's string form of a 32-byte hash (`hash_hex`: each 8 bytes little
endian); the file's sha256 in a shard is stored the same way.

What is uploaded is checked as a real service would check it: a shard naming a xorb never
uploaded, or a chunk range past a xorb's end, is refused with 400, and so is a file whose bytes,
reconstructed from the xorbs, do not have the sha256 the shard says. `read(file_hash)` gives a
file's bytes as the service would serve them (decompressing the chunks: LZ4 frames and byte
grouping, `decode_chunk`), so a test compares what the service holds with what was staged.

Tokens: the Hub issues them (`issue_token`); a request without a known token gets 401, a read
token on an upload 403, as the CAS API says. `revoke_tokens()` makes every token issued so far
unknown (a token revoked mid-run).

Counters (`counters`): the body bytes received per kind of upload (also those of uploads cut or
stalled halfway), each xorb and shard stored, each reconstruction served and the xorb bytes sent.

Faults: the same as the test Hub's (`tests/hub_server.FaultInjector`): `server.fail(method,
path_regex, status=..., times=..., hang=..., drop=..., stall_body=..., skip=...)`.

A slow uplink (`limit_xorb_rate(bytes_per_second)`): the bodies of xorb uploads are read at that rate at
most, all connections together, and counted as they arrive, so a client killed mid-upload leaves the bytes
the service really received in the counters (benchmarks/bench_xet_resume.py kills push.py that way).

What the grant route answers for a xorb stored already (`grants_for_stored`, True by default): 200, and
hf_xet sends nothing. That is this service's reading of a route the Xet docs do not describe; with False
every grant is 404 and every xorb is POSTed, as by the documented protocol, whose answer to a xorb stored
already (`was_inserted: false`) comes after its whole body. Global deduplication queries are always 404:
the real service answers them, for the first chunk of a file and the chunks whose hash is 0 modulo 1024 of
the xorbs a registered shard lists, with a shard of those xorbs' CAS info; this one does not.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.hub_server import _RANGE, FaultInjector, HubError, _DropConnection, _Handler

JSON = dict[str, Any]

_BOOKEND = b"\xff" * 32
_SHARD_TAG_SIZE = 32
_SHARD_VERSION = 2
_WITH_VERIFICATION = 1 << 31
_WITH_METADATA_EXT = 1 << 30
_ENTRY = 48  # every record of a shard is 48 bytes
#: seconds an issued token is valid
TOKEN_LIFETIME = 3600


def hash_hex(raw: bytes) -> str:
    """The API's string form of a 32-byte hash: each 8 bytes as a little-endian u64, in hex."""
    if len(raw) != 32:
        raise ValueError(f"a Xet hash is 32 bytes, got {len(raw)}")
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


# --- formats ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One term of a file reconstruction: chunks [start, end) of a xorb, `size` bytes once unpacked."""

    xorb: str
    start: int
    end: int
    size: int


@dataclass(frozen=True)
class XetFile:
    """A file a shard registered: its Xet hash, its sha256 (the shard's metadata extension) and its terms."""

    hash: str
    sha256: str | None
    terms: tuple[Term, ...]

    @property
    def size(self) -> int:
        return sum(term.size for term in self.terms)


@dataclass(frozen=True)
class ShardXorb:
    """A xorb a shard lists (its CAS info): its hash and its chunks' unpacked sizes."""

    hash: str
    chunk_sizes: tuple[int, ...]


def parse_shard(data: bytes) -> tuple[list[XetFile], list[ShardXorb]]:
    """The files and the xorbs of a shard as uploaded (header, file info, CAS info, no footer needed).

    Raises ValueError naming what is malformed.
    """
    if len(data) < _SHARD_TAG_SIZE + 16:
        raise ValueError(f"a shard of {len(data)} bytes is shorter than its 48-byte header")
    version = struct.unpack_from("<Q", data, _SHARD_TAG_SIZE)[0]
    if version != _SHARD_VERSION:
        raise ValueError(f"shard header version {version}; expected {_SHARD_VERSION}")
    pos = _ENTRY

    def record(offset: int) -> bytes:
        if offset + _ENTRY > len(data):
            raise ValueError(f"the shard ends inside a record at byte {offset} (its bookend is missing)")
        return data[offset : offset + _ENTRY]

    files = []
    while (head := record(pos))[:32] != _BOOKEND:
        flags, count = struct.unpack_from("<II", head, 32)
        pos += _ENTRY
        terms = []
        for _ in range(count):
            entry = record(pos)
            _cas_flags, size, start, end = struct.unpack_from("<IIII", entry, 32)
            if end <= start:
                raise ValueError(f"a term with the chunk range [{start}, {end}) of xorb {hash_hex(entry[:32])}")
            terms.append(Term(hash_hex(entry[:32]), start, end, size))
            pos += _ENTRY
        if flags & _WITH_VERIFICATION:
            pos += count * _ENTRY
        sha256 = None
        if flags & _WITH_METADATA_EXT:
            sha256 = hash_hex(record(pos)[:32])
            pos += _ENTRY
        files.append(XetFile(hash_hex(head[:32]), sha256, tuple(terms)))
    pos += _ENTRY
    xorbs = []
    while (head := record(pos))[:32] != _BOOKEND:
        _flags, count = struct.unpack_from("<II", head, 32)
        pos += _ENTRY
        sizes = tuple(struct.unpack_from("<I", record(pos + i * _ENTRY), 36)[0] for i in range(count))
        pos += count * _ENTRY
        xorbs.append(ShardXorb(hash_hex(head[:32]), sizes))
    return files, xorbs


@dataclass(frozen=True)
class Chunk:
    """Where a chunk sits in a serialized xorb: its header's offset, and its sizes and compression."""

    offset: int
    compressed: int
    scheme: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + 8 + self.compressed


def parse_xorb(data: bytes) -> list[Chunk]:
    """The chunks of a serialized xorb: 8-byte headers (version 0, compressed size, scheme, size), each
    followed by its data, then optionally the metadata footer whose length is the last 4 bytes.

    Raises ValueError when the chunks do not end at the end of the data or at its footer.
    """
    footer_start = None
    if len(data) >= 4:
        info = struct.unpack_from("<I", data, len(data) - 4)[0]
        footer_start = len(data) - 4 - info if info + 4 <= len(data) else None
    chunks: list[Chunk] = []
    pos = 0
    while pos != len(data) and pos != footer_start:
        if pos + 8 > len(data):
            raise ValueError(f"a xorb of {len(data)} bytes ends inside the header of chunk {len(chunks)}")
        version, scheme = data[pos], data[pos + 4]
        compressed = int.from_bytes(data[pos + 1 : pos + 4], "little")
        size = int.from_bytes(data[pos + 5 : pos + 8], "little")
        if version != 0 or scheme not in (0, 1, 2) or pos + 8 + compressed > len(data):
            raise ValueError(f"chunk {len(chunks)} of a xorb at byte {pos}: version {version}, scheme {scheme}")
        chunks.append(Chunk(pos, compressed, scheme, size))
        pos += 8 + compressed
    if not chunks:
        raise ValueError("a xorb without chunks")
    return chunks


def decode_chunk(data: bytes, chunk: Chunk) -> bytes:
    """A chunk's bytes: stored as is (scheme 0), an LZ4 frame (1), or byte-grouped by 4 then LZ4 (2)."""
    payload = data[chunk.offset + 8 : chunk.end]
    raw = payload if chunk.scheme == 0 else _lz4_frame(payload)
    if chunk.scheme == 2:
        raw = _ungroup4(raw)
    if len(raw) != chunk.size:
        raise ValueError(f"a chunk decoded to {len(raw)} bytes; its header says {chunk.size}")
    return raw


def _ungroup4(grouped: bytes) -> bytes:
    """Undo byte grouping: the grouped data is byte 0 of every 4, then byte 1, ... (the first groups one longer)."""
    out = bytearray(len(grouped))
    pos = 0
    for i in range(4):
        size = len(range(i, len(grouped), 4))
        out[i::4] = grouped[pos : pos + size]
        pos += size
    return bytes(out)


def _lz4_frame(frame: bytes) -> bytes:
    """Decode an LZ4 frame (the LZ4 frame format: magic, descriptor, blocks, end mark)."""
    if frame[:4] != b"\x04\x22\x4d\x18":
        raise ValueError(f"not an LZ4 frame: magic {frame[:4].hex()}")
    flags = frame[4]
    pos = 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)  # magic, FLG, BD, [size], [dict], HC
    out = bytearray()
    while True:
        (size,) = struct.unpack_from("<I", frame, pos)
        pos += 4
        if size == 0:
            return bytes(out)
        length = size & 0x7FFFFFFF
        block = frame[pos : pos + length]
        pos += length + (4 if flags & 0x10 else 0)
        if size & 0x80000000:
            out += block
        else:
            _lz4_block(block, out)


def _lz4_block(src: bytes, out: bytearray) -> None:
    """Append the decoded LZ4 block `src` to `out` (matches may reach into what `out` already holds)."""
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                literals += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        out += src[i : i + literals]
        i += literals
        if i >= n:
            return
        offset = src[i] | src[i + 1] << 8
        i += 2
        length = token & 15
        if length == 15:
            while True:
                length += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        length += 4
        start = len(out) - offset
        if offset <= 0 or start < 0:
            raise ValueError(f"an LZ4 match offset {offset} before the start of the output")
        pattern = bytes(out[start : start + min(offset, length)])
        out += (pattern * (length // len(pattern) + 1))[:length]


# --- the service ------------------------------------------------------------------------------


@dataclass
class XetCounters:
    """What the service received and served since the last reset."""

    received: Counter[str] = field(default_factory=Counter)  # body bytes read, per kind: xorb, shard
    xorbs: list[tuple[str, int]] = field(default_factory=list)  # (hash, bytes) of each xorb stored
    shards: list[int] = field(default_factory=list)  # bytes of each shard registered
    registered: list[str] = field(default_factory=list)  # sha256 of each file a registered shard names
    reconstructions: list[str] = field(default_factory=list)  # file hashes of the reconstructions served
    bridged: list[str] = field(default_factory=list)  # file hashes the Hub's GETs read (the Hub's Xet bridge)
    sent: int = 0  # xorb bytes served to downloads


@dataclass(frozen=True)
class XetToken:
    write: bool
    expires: int


class _QuietServer(ThreadingHTTPServer):
    """A server that says nothing of a client gone mid-request (killed: its answer has nowhere to go)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class XetServer(FaultInjector):
    """The service's state plus a `ThreadingHTTPServer` serving it from a background thread."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self._xorbs: dict[str, bytes] = {}
        self._chunks: dict[str, list[Chunk]] = {}
        self._files: dict[str, XetFile] = {}
        #: each file's bytes as the Hub's bridge serves them (`served`), decoded once: xorbs never change
        self._served: dict[str, bytes] = {}
        self._tokens: dict[str, XetToken] = {}
        self.counters = XetCounters()
        #: whether the grant route answers 200 (nothing to send) for a xorb stored already (module docstring)
        self.grants_for_stored = True
        self._xorb_rate: float | None = None
        self._uplink_free_at = 0.0  # when the slow uplink has taken every piece read so far
        self._listen(port, _XetHandler, "xet-server", server=_QuietServer)

    def reset_faults_and_log(self) -> None:
        super().reset_faults_and_log()
        with self._lock:
            self.counters = XetCounters()
            self.grants_for_stored, self._xorb_rate = True, None

    def limit_xorb_rate(self, bytes_per_second: float | None) -> None:
        """Read the bodies of xorb uploads at `bytes_per_second` at most, all connections together (a user's
        uplink), or as fast as they come (None)."""
        with self._lock:
            self._xorb_rate, self._uplink_free_at = bytes_per_second, 0.0

    @property
    def xorb_rate(self) -> float | None:
        return self._xorb_rate

    def pace(self, size: int) -> None:
        """Wait until the slow uplink has carried `size` more bytes after those read before them."""
        with self._lock:
            if self._xorb_rate is None:
                return
            now = time.monotonic()
            self._uplink_free_at = max(self._uplink_free_at, now) + size / self._xorb_rate
            wait = self._uplink_free_at - now
        time.sleep(wait)

    def forget_storage(self) -> None:
        """Drop every stored xorb, chunk list and file: the service has never seen any bytes, as for a first
        publication. A xorb stored earlier is answered "stored already" by the upload grant and never sent again,
        so a case whose fault is on an upload starts from here, whatever ran before it in this process."""
        with self._lock:
            self._xorbs.clear()
            self._chunks.clear()
            self._files.clear()
            self._served.clear()

    # what the Hub asks

    def issue_token(self, *, write: bool) -> tuple[str, int]:
        """A new access token and its expiry (unix seconds)."""
        token, expires = f"xet_{secrets.token_hex(16)}", int(time.time()) + TOKEN_LIFETIME
        with self._lock:
            self._tokens[token] = XetToken(write, expires)
        return token, expires

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def file(self, file_hash: str) -> XetFile | None:
        with self._lock:
            return self._files.get(file_hash)

    def file_by_sha256(self, sha256: str) -> XetFile | None:
        """The file registered with this sha256 (the oid of the LFS pointer a commit names), if any."""
        with self._lock:
            return next((f for f in self._files.values() if f.sha256 == sha256), None)

    def read(self, file_hash: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of a registered file, reconstructed from its xorbs (decoded again at each call)."""
        with self._lock:
            xet_file = self._files[file_hash]
            parts = [self._unpack(term) for term in xet_file.terms]
        return b"".join(parts)[start:end]

    def served(self, file_hash: str) -> bytes:
        """A registered file's bytes for the Hub to serve (a GET or ranged read of the file, which the real Hub
        answers from its Xet bridge): reconstructed from the xorbs once, then kept, since stored xorbs never
        change; a stream's many ranged reads would otherwise decode the whole file (in Python) each time."""
        with self._lock:
            content = self._served.get(file_hash)
        if content is None:
            content = self.read(file_hash)
            with self._lock:
                self._served[file_hash] = content
        return content

    # requests

    def check_token(self, authorization: str | None, *, write: bool) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            grant = self._tokens.get(token)
        if grant is None or grant.expires < time.time():
            raise HubError(401, "invalid or expired Xet access token")
        if write and not grant.write:
            raise HubError(403, "a read token may not upload")

    def count(self, kind: str, size: int) -> None:
        with self._lock:
            self.counters.received[kind] += size

    def put_xorb(self, xorb_hash: str, data: bytes) -> JSON:
        try:
            chunks = parse_xorb(data)
        except ValueError as error:
            raise HubError(400, f"xorb {xorb_hash} is malformed: {error}") from error
        with self._lock:
            inserted = xorb_hash not in self._xorbs
            if inserted:
                self._xorbs[xorb_hash], self._chunks[xorb_hash] = data, chunks
                self.counters.xorbs.append((xorb_hash, len(data)))
        return {"was_inserted": inserted}

    def put_shard(self, data: bytes) -> JSON:
        try:
            files, _xorbs = parse_shard(data)
        except ValueError as error:
            raise HubError(400, f"the shard is malformed: {error}") from error
        with self._lock:
            for xet_file in files:
                for term in xet_file.terms:
                    chunks = self._chunks.get(term.xorb)
                    if chunks is None:
                        raise HubError(400, f"the shard names xorb {term.xorb}, which was never uploaded")
                    if term.end > len(chunks):
                        raise HubError(400, f"chunks [{term.start}, {term.end}) of xorb {term.xorb} of {len(chunks)}")
                content = b"".join(self._unpack(term) for term in xet_file.terms)
                if xet_file.sha256 is not None and hashlib.sha256(content).hexdigest() != xet_file.sha256:
                    raise HubError(400, f"file {xet_file.hash} does not have the sha256 {xet_file.sha256} it names")
            new = [f for f in files if f.hash not in self._files]
            self._files.update((f.hash, f) for f in files)
            self.counters.shards.append(len(data))
            self.counters.registered += [f.sha256 or f.hash for f in files]
        return {"result": 1 if new else 0}

    def reconstruction(self, file_hash: str, requested: str | None) -> JSON:
        """The v1 reconstruction of a file, or of the byte range `requested` (`bytes=a-b`, b inclusive)."""
        with self._lock:
            xet_file = self._files.get(file_hash)
            if xet_file is None:
                raise HubError(404, f"file {file_hash} is not stored here")
            first, last = 0, xet_file.size - 1
            if requested:
                match = _RANGE.match(requested.strip())
                if match is None or not match.group(1):
                    raise HubError(400, f"unsupported Range {requested!r}")
                first = int(match.group(1))
                last = min(int(match.group(2) or last), last)
                if first > last:
                    raise HubError(416, f"Range {requested!r} outside {xet_file.size} bytes")
            terms, fetch, offset_into_first = [], {}, 0
            pos = 0
            for term in xet_file.terms:
                chunks = self._chunks[term.xorb]
                for index in range(term.start, term.end):
                    size = chunks[index].size
                    if pos + size > first and pos <= last:  # the chunk overlaps the range
                        if not terms:
                            offset_into_first = first - pos
                        if terms and terms[-1]["hash"] == term.xorb and terms[-1]["range"]["end"] == index:
                            terms[-1]["range"]["end"] += 1
                            terms[-1]["unpacked_length"] += size
                        else:
                            terms.append(
                                {
                                    "hash": term.xorb,
                                    "unpacked_length": size,
                                    "range": {"start": index, "end": index + 1},
                                }
                            )
                    pos += size
            for item in terms:
                chunks, (start, end) = self._chunks[item["hash"]], (item["range"]["start"], item["range"]["end"])
                fetch.setdefault(item["hash"], []).append(
                    {
                        "range": {"start": start, "end": end},
                        "url": f"{self.url}/xorbs/{item['hash']}",
                        "url_range": {"start": chunks[start].offset, "end": chunks[end - 1].end - 1},
                    }
                )
            self.counters.reconstructions.append(file_hash)
        return {"offset_into_first_range": offset_into_first, "terms": terms, "fetch_info": fetch}

    def has_xorb(self, xorb_hash: str) -> bool:
        with self._lock:
            return xorb_hash in self._xorbs

    def xorb_bytes(self, xorb_hash: str) -> bytes:
        with self._lock:
            data = self._xorbs.get(xorb_hash)
        if data is None:
            raise HubError(404, f"xorb {xorb_hash} is not stored here")
        return data

    def bridged(self, file_hash: str) -> None:
        """Count a GET of the Hub served from this service (the real Hub redirects it to its Xet bridge)."""
        with self._lock:
            self.counters.bridged.append(file_hash)

    def sent(self, size: int) -> None:
        with self._lock:
            self.counters.sent += size

    def _unpack(self, term: Term) -> bytes:
        data, chunks = self._xorbs[term.xorb], self._chunks[term.xorb]
        return b"".join(decode_chunk(data, chunk) for chunk in chunks[term.start : term.end])


_HASH = r"(?P<hash>[0-9a-f]{64})"
_XET_ROUTES = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("GET", rf"/v1/chunks/[^/]+/{_HASH}", "dedup"),
        ("POST", rf"/v1/xorb-grants/[^/]+/{_HASH}", "grant"),
        ("POST", rf"/v1/xorbs/[^/]+/{_HASH}", "xorb"),
        ("POST", r"/v2/shards", "shard_v2"),
        ("POST", r"/v1/shards", "shard"),
        ("GET", rf"/v2/reconstructions/{_HASH}", "reconstruction_v2"),
        ("GET", rf"/v1/reconstructions/{_HASH}", "reconstruction"),
        ("GET", rf"/xorbs/{_HASH}", "xorb_data"),
        ("POST", r"/v1/telemetry", "telemetry"),
    ]
]
#: what each upload route's body counts as
_UPLOADS = {"xorb": "xorb", "shard": "shard", "shard_v2": "shard"}
#: bytes a slow uplink reads at a time
_PIECE = 64 * 1024


class _XetHandler(_Handler):
    """The test Hub's handler (its fault injection, ranges, answers) with the service's routes."""

    server_version = "openeds-test-xet"

    def _route(self, raw_path: str) -> tuple[str, dict[str, str]] | None:
        for method, pattern, name in _XET_ROUTES:
            match = pattern.fullmatch(raw_path)
            if match and method == self.command:
                return name, match.groupdict()
        return None

    def _read_body(self, drop: bool) -> bytes:
        """The request's body, its bytes counted by kind of upload (half of it when the connection is cut)."""
        route = self._route(self.path.partition("?")[0])
        kind = _UPLOADS.get(route[0]) if route else None
        length = self.headers.get("Content-Length")
        if kind == "xorb" and not drop and length is not None and self.hub.xorb_rate is not None:
            return self._read_slowly(int(length))
        try:
            body = super()._read_body(drop)
        except Exception:
            if kind:
                self.hub.count(kind, int(self.headers.get("Content-Length") or 0) // 2)
            raise
        if kind:
            self.hub.count(kind, len(body))
        return body

    def _read_slowly(self, length: int) -> bytes:
        """A xorb's body through the slow uplink (`XetServer.limit_xorb_rate`), each piece counted as it arrives;
        a body that ends early (its client gone) drops the connection, and only what arrived is counted."""
        service: XetServer = self.hub  # type: ignore[assignment]
        parts, got = [], 0
        while got < length:
            try:
                part = self.rfile.read(min(_PIECE, length - got))
            except OSError:
                part = b""
            if not part:
                raise _DropConnection
            got += len(part)
            parts.append(part)
            service.count("xorb", len(part))
            service.pace(len(part))
        return b"".join(parts)

    def _read_part(self) -> int:
        size = super()._read_part()
        route = self._route(self.path.partition("?")[0])
        if route and route[0] in _UPLOADS:
            self.hub.count(_UPLOADS[route[0]], size)
        return size

    def _dispatch(
        self, name: str, p: dict[str, str], query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        service: XetServer = self.hub  # type: ignore[assignment]
        if name == "xorb_data":  # a presigned URL on the real service: no token
            content = service.xorb_bytes(p["hash"])
            status, payload, headers = self._ranged(content, {"Content-Type": "application/octet-stream"})
            service.sent(len(payload))
            return status, payload, headers
        service.check_token(self.headers.get("Authorization"), write=name in ("grant", "xorb", "shard", "shard_v2"))
        if name == "grant" and service.grants_for_stored and service.has_xorb(p["hash"]):  # stored: send nothing
            return 200, b"{}", {"Content-Type": "application/json"}
        if name in ("dedup", "grant", "shard_v2", "reconstruction_v2"):
            raise HubError(404, f"{self.path} is not served by this test service")  # the client falls back
        if name == "xorb":
            result = service.put_xorb(p["hash"], body)
        elif name == "shard":
            result = service.put_shard(body)
        elif name == "reconstruction":
            result = service.reconstruction(p["hash"], self.headers.get("Range"))
        else:  # telemetry
            result = {}
        return 200, json.dumps(result).encode(), {"Content-Type": "application/json"}
