"""Parquet footers of remote shards (rows, columns, build records), and the schema at the start of a remote Arrow
file, read with plain ranged GETs inside `_retry`.

A footer is the end of a parquet file: the Thrift-encoded metadata, its length (4 bytes) and the
magic `PAR1`. `read_footer` asks for the last `_TAIL` bytes with one suffix-range GET
(`Range: bytes=-N`), and for the rest of a footer longer than that with a second one; nothing else
of the shard is read. Each GET goes through `huggingface_hub.get_session()` (so the timeouts of
`openeds.timeouts` apply) and is one attempt of `openeds.hub.errors._retry`: a server that stalls
mid-footer is one transient failure inside the run's retry budget, as a 503 is. `HfFileSystem` is
not used: it retries its reads itself (6 tries, 1-8 s apart), outside any budget.

A file that is not parquet (no `PAR1` at its end, a footer that does not decode, an empty file) is
one `PublishError` naming it; an HTML page in its place (a captive portal) names the endpoint. The
footers read are kept in the caller's `cache` (`RemoteState.footers`), so no footer is read twice
in a run, whichever of the v1 check, the staleness check and the card's row counts asks first.

An Arrow file (`datasets`' cache files and `save_to_disk` folders are Arrow IPC streams) starts with
its schema: `read_arrow_schema` asks for the first `_TAIL` bytes (and the rest of a longer schema
message with a second GET). Either reader raises `WrongFormatError`, a `PublishError`, for a file
that is not of its format, so that a caller that only asks whether a file of any name is v1 data
(`openeds.hub.v1`) can tell that apart from a request that failed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, get_session, hf_hub_url
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from openeds.hub.errors import NOTHING_PUBLISHED, PublishError, _describe, _not_the_hub, _retry
from openeds.names import shown
from openeds.retry import RetryPolicy

#: Bytes asked for first: the footer of a shard of this tool (a few row groups) fits in it with room.
_TAIL: Final = 64 * 1024
_MAGIC: Final = b"PAR1"
#: How an HTML page starts (a captive portal's, a wrong endpoint's), never a parquet file.
HTML_STARTS: Final = (b"<!doctype html", b"<html")
#: Footers read at once: each is a small request, and a repo may hold hundreds of shards.
_PARALLEL: Final = 8
#: How an Arrow IPC file (not a stream) starts; its stream follows, 8-byte aligned.
_ARROW_FILE_MAGIC: Final = b"ARROW1"
#: An Arrow stream message starts with this marker, then the length of its metadata (older writers: the length only).
_CONTINUATION: Final = b"\xff\xff\xff\xff"
#: A schema message longer than this is taken for a file that is not Arrow (a schema is a few KiB).
_MAX_SCHEMA: Final = 16 * 1024 * 1024


class WrongFormatError(PublishError):
    """A remote file is not of the format its reader expects (not parquet, not an Arrow stream or file)."""


def read_footer(
    api: HfApi,
    repo_id: str,
    head: str,
    path: str,
    *,
    token: str | None,
    retry: RetryPolicy,
    cache: MutableMapping[str, pq.FileMetaData] | None = None,
    fix: str = "",
) -> pq.FileMetaData:
    """The parquet footer of `path` at `head` (from `cache` if read before; stored there once read).

    `fix`: what else than replacing the file helps when it is not parquet (e.g. rebuilding its split).
    """
    if cache is not None and path in cache:
        return cache[path]
    url = hf_hub_url(repo_id, path, repo_type="dataset", revision=head, endpoint=api.endpoint)
    what = f"read the parquet footer of {repo_id}/{shown(path)}"

    def attempt() -> pq.FileMetaData:
        tail, whole = _get_tail(api, url, _TAIL, token, what)
        if not whole and len(tail) >= 8 and tail.endswith(_MAGIC):
            needed = struct.unpack("<I", tail[-8:-4])[0] + 8  # the footer, its length and the magic
            if needed > len(tail):
                tail, whole = _get_tail(api, url, needed, token, what)
        try:
            # pyarrow reads a parquet file's metadata from its end: the footer alone, behind a leading magic, will do
            return pq.read_metadata(pa.BufferReader(tail if whole else _MAGIC + tail))
        except (OSError, pa.ArrowException) as error:
            raise _not_parquet(repo_id, head, path, _describe(error), fix) from None

    footer = _retry(retry, what, attempt, endpoint=api.endpoint)
    if cache is not None:
        cache[path] = footer
    return footer


def read_footers(
    api: HfApi,
    repo_id: str,
    head: str,
    paths: Iterable[str],
    *,
    token: str | None,
    retry: RetryPolicy,
    cache: MutableMapping[str, pq.FileMetaData],
    fix: str = "",
) -> dict[str, pq.FileMetaData]:
    """The footers of `paths` (`read_footer` each, a few at once); the first failure, in path order, is raised."""
    paths = list(dict.fromkeys(paths))
    todo = [path for path in paths if path not in cache]
    if todo:
        executor = ThreadPoolExecutor(max_workers=min(_PARALLEL, len(todo)), thread_name_prefix="footer")
        try:
            for path, footer in zip(
                todo,
                executor.map(lambda p: read_footer(api, repo_id, head, p, token=token, retry=retry, fix=fix), todo),
                strict=True,
            ):
                cache[path] = footer
        finally:
            executor.shutdown(wait=True, cancel_futures=True)  # a failure: the reads not started are not made
    return {path: cache[path] for path in paths}


def read_arrow_schema(
    api: HfApi, repo_id: str, head: str, path: str, *, token: str | None, retry: RetryPolicy
) -> pa.Schema:
    """The schema at the start of the Arrow IPC stream or file `path` at `head`; a `WrongFormatError` if it is
    neither. Only the schema message is read: one ranged GET of the first `_TAIL` bytes, a second for a longer one."""
    url = hf_hub_url(repo_id, path, repo_type="dataset", revision=head, endpoint=api.endpoint)
    what = f"read the schema of {repo_id}/{shown(path)}"

    def attempt() -> pa.Schema:
        start, whole = _get_range(api, url, f"bytes=0-{_TAIL - 1}", token, what)
        skip = 8 if start.startswith(_ARROW_FILE_MAGIC) else 0
        prefix = 8 if start[skip : skip + 4] == _CONTINUATION else 4
        length = int.from_bytes(start[skip + prefix - 4 : skip + prefix], "little") if len(start) >= skip + 8 else 0
        needed = skip + prefix + length
        if not whole and len(start) < needed <= skip + prefix + _MAX_SCHEMA:
            start, whole = _get_range(api, url, f"bytes=0-{needed - 1}", token, what)
        try:
            return pa.ipc.open_stream(pa.BufferReader(start[skip:])).schema
        except (OSError, pa.ArrowException) as error:
            raise WrongFormatError(
                f"the remote file {repo_id}/{shown(path)} (at {head[:12]}) is not an Arrow file ({_describe(error)}); "
                f"expected an Arrow IPC stream or file, as its name says; {NOTHING_PUBLISHED}; replace or delete it "
                "on the Hub, then re-run"
            ) from None

    return _retry(retry, what, attempt, endpoint=api.endpoint)


def _get_tail(api: HfApi, url: str, size: int, token: str | None, what: str) -> tuple[bytes, bool]:
    """One GET of the last `size` bytes of `url` (a suffix range), and whether they are the whole file (a short
    file, or a server that ignores ranges); HTTP errors are raised as huggingface_hub raises them."""
    return _get_range(api, url, f"bytes=-{size}", token, what)


def _get_range(api: HfApi, url: str, byte_range: str, token: str | None, what: str) -> tuple[bytes, bool]:
    """One GET of `byte_range` of `url` (`bytes=-N`, `bytes=A-B`), and whether the bytes are the whole file."""
    headers = {**build_hf_headers(token=token), "Range": byte_range}
    response = get_session().get(url, headers=headers, follow_redirects=True)
    if response.status_code == 416:  # no range of a file of 0 bytes can be served (RFC 9110 14.1.2)
        return b"", True
    hf_raise_for_status(response)
    content = response.content
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/html") and content.lstrip()[:15].lower().startswith(HTML_STARTS):
        raise _not_the_hub(what, api.endpoint, f"an HTML page (Content-Type {content_type!r})", NOTHING_PUBLISHED)
    if response.status_code == 200:  # the server sent the whole file instead of the range
        return content, True
    total = response.headers.get("Content-Range", "").rpartition("/")[2]
    return content, total.isdigit() and int(total) <= len(content)


def _not_parquet(repo_id: str, head: str, path: str, seen: str, fix: str) -> WrongFormatError:
    return WrongFormatError(
        f"the remote file {repo_id}/{shown(path)} (at {head[:12]}) is not a parquet file ({seen}); expected a "
        f"parquet shard, whose footer gives its rows, columns and build record; {NOTHING_PUBLISHED}; replace or "
        f"delete it on the Hub{' ' + fix if fix else ''}, then re-run"
    )
