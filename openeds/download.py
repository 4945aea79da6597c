"""Download the raw OpenEDS tree from Kaggle into a local cache, once.

``push.py`` and the datasets builder call :func:`fetch_raw` when no ``--data-dir`` /
``data_dir`` is given. It can also be run on its own; it prints the folder to pass as
``--data-dir``::

    python -m openeds.download                                   # default slug and cache
    python -m openeds.download --cache-dir /data/kaggle-cache
    python -m openeds.download --kaggle-dataset owner/name --quiet
    python -m openeds.download --retry-timeout 60               # give up on a failing server sooner
    python -m openeds.download --timeout 20                     # a request silent for 20 s is retried

Credentials are whatever the ``kaggle`` client accepts: ``kaggle auth login``,
``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``, ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or
``~/.kaggle/kaggle.json``. They are never read, printed or logged here.

Cache layout, one folder per slug (``/`` replaced by ``--``)::

    <cache_dir>/soumicksarker--openeds-dataset/
        download/openeds-dataset.zip   the archive; kaggle keeps openeds-dataset.zip.kaggle-partial
                                       next to it while it is incomplete, and resumes from it
        extract-*.tmp/                 an extraction in progress (removed by the next run)
        .openeds/lock, lock.owner      held by the run downloading or extracting (``openeds.lock``);
                                       a second run ends at once, naming the first
        data/                          the extracted tree, accepted by openeds.raw.find_split_dirs
        complete.json                  written last; lists the files per split

A run that finds ``complete.json`` and the same file counts in ``data/`` returns at once
without importing ``kaggle`` or making a request. Anything else (no marker, a marker
whose counts no longer match, a half-written ``data/``) is downloaded or extracted again.
To pick up a new version of the Kaggle dataset, delete the slug's folder.

Timeouts and retries (kaggle 2.2.5, kagglesdk 0.1.38). Every request runs under
``--timeout`` (30 s by default) per phase: connecting, and each read, which bounds a body
that stops arriving as well as an answer that never comes (:mod:`openeds.timeouts` mounts it
on every session kagglesdk opens, ``import kaggle``'s own token check included). A request
that waits longer fails with requests' timeout error, a transient failure like a 503.
``KaggleApi.authenticate()`` (a request only for an access token) is retried on those within
the budget below. ``KaggleApi.dataset_download_files`` is three steps; this module calls the
same three, as ONE attempt of :func:`openeds.retry.call_with_retries`:

1. ``DatasetApiClient.download_dataset``: ``POST .../datasets.DatasetApiService/DownloadDataset``,
   then requests follows the 302 to the archive and returns once its headers arrive;
2. ``KaggleApi.download_needed``: skips the transfer when a complete archive is already
   on disk (for example after an extraction that stopped for lack of space);
3. ``KaggleApi.download_file`` with ``max_retries=0``: it streams the body once. Its own
   retry loop (5 tries, 2**n s apart) ignores any budget, so it is not used; the loop here
   retries instead. When part of the archive is on disk with kaggle's ``.kaggle-partial``
   marker, kaggle itself resumes it with ``Range``/``If-Range`` (its own request, with the
   timeout passed in), within a run as across runs.

Each retry is the three steps again, as a new run would take them: a fresh POST (and so a
fresh link to the archive), then kaggle's own resume. The attempt is retried on 429 and 503
(honouring ``Retry-After``), other 5xx, dropped or cut connections and timeouts, for up to
``--retry-timeout`` seconds (600 by default) from the first attempt; when the network or the
endpoint is unreachable (DNS failure, connection refused, connect timeout), for at most 60 s.
401, 403 and 404 are not retried. So a server that stops answering or sending ends the run
about ``--retry-timeout`` plus one timeout after the download began. One exception keeps
long downloads whole: an attempt that ran longer than the budget plus one timeout and grew
the archive before it failed starts the budget again (``fresh_start``), so an hour-long
transfer cut once is resumed, not given up. When the budget is spent, :class:`DownloadError`
says so and the part on disk is kept: the next run resumes it.

Every failure is a :class:`DownloadError` with a one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import requests
from tqdm import tqdm

from openeds import cli, stages
from openeds.disk import require_free_space, write_atomically
from openeds.lock import hold
from openeds.names import shown
from openeds.raw import RawDataError, find_split_dirs
from openeds.retry import (
    GaveUp,
    RetryPolicy,
    Transient,
    add_retry_argument,
    call_with_retries,
    describe_timeout,
    endpoint_of,
    error_chain,
    is_unreachable,
    parse_retry_after,
)
from openeds.timeouts import use_kaggle_timeouts

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_client import KaggleClient

DEFAULT_SLUG = "soumicksarker/openeds-dataset"
MARKER_NAME = "complete.json"

_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_NO_DATA_DIR_FIX = "or pass --data-dir with a copy of the dataset unzipped by hand"
_CACHE_DISK_FIX = "pass --cache-dir on a larger disk"


#: files per split and sub-folder, e.g. {"train": {"images": 27431, "labels": 27431, "masks": 27431}}
FileCounts = dict[str, dict[str, int]]


#: the retry budgets and the timeout when the caller gives none (a frozen dataclass: one shared instance)
DEFAULT_RETRY = RetryPolicy()


class DownloadError(RuntimeError):
    """The raw data could not be fetched. The message is one line: what, value seen, expected, fix."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/openeds-precomputed``, or ``~/.cache/openeds-precomputed``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "openeds-precomputed"


def fetch_raw(
    slug: str = DEFAULT_SLUG,
    cache_dir: str | Path | None = None,
    *,
    quiet: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Path:
    """Download and unzip the Kaggle dataset ``slug`` once; return the extracted folder.

    The folder is ``<cache_dir>/<owner>--<name>/data`` (``cache_dir`` defaults to
    :func:`default_cache_dir`) and is accepted by :func:`openeds.raw.find_split_dirs`.
    Progress and the file counts per split go to stderr unless ``quiet``. Every failure
    raises :class:`DownloadError`; ``retry`` bounds each request (``retry.timeout``) and the
    retries of the download (module docstring).
    """
    if not _SLUG_RE.fullmatch(slug):
        raise DownloadError(f"Kaggle dataset {slug!r} is not of the form owner/name; expected e.g. {DEFAULT_SLUG}")
    folder = Path(cache_dir or default_cache_dir()).expanduser() / slug.replace("/", "--")
    data, marker = folder / "data", folder / MARKER_NAME

    stages.now(f"checking the download cache {shown(folder)}")
    counts = _complete_counts(marker, data, slug)
    if counts is not None:
        _say(quiet, f"{slug}: already downloaded to {shown(data)}; skipping ({_describe(counts)})")
        return data

    # One run at a time: two would share the archive's and the extraction's names, and each
    # run's sweep of extract-*.tmp would delete the other's work.
    with hold(folder, what="the Kaggle cache", option="--cache-dir", error=DownloadError):
        counts = _complete_counts(marker, data, slug)  # another run may have finished it meanwhile
        if counts is None:
            counts = _download_and_extract(slug, folder, quiet=quiet, retry=retry)
            _say(quiet, f"{slug}: extracted to {shown(data)} ({_describe(counts)})")
        else:
            _say(quiet, f"{slug}: already downloaded to {shown(data)}; skipping ({_describe(counts)})")
    return data


def _download_and_extract(slug: str, folder: Path, *, quiet: bool, retry: RetryPolicy) -> FileCounts:
    """Fill ``folder`` (whose lock the caller holds) with ``data/`` and the marker; return the file counts."""
    data, marker = folder / "data", folder / MARKER_NAME
    marker.unlink(missing_ok=True)
    for stale in folder.glob("extract-*.tmp"):
        shutil.rmtree(stale)
    archive = folder / "download" / f"{slug.split('/')[1]}.zip"
    stages.now(f"logging in to Kaggle to download {slug}")
    api = _kaggle_api(retry)
    stages.now(f"downloading {slug} from Kaggle to {shown(archive)}")
    _download(api, slug, archive, quiet=quiet, retry=retry)
    stages.now(f"extracting {shown(archive)}")

    extracted = Path(tempfile.mkdtemp(prefix="extract-", suffix=".tmp", dir=folder))
    try:
        unpacked_bytes = _extract(archive, extracted, quiet=quiet)
        try:
            counts = _count_files(extracted)
        except RawDataError as e:
            archive.unlink()
            raise DownloadError(
                f"archive {shown(archive.name)} of {slug} does not hold the OpenEDS tree ({e}); "
                f"check --kaggle-dataset, {_NO_DATA_DIR_FIX}"
            ) from None
    except BaseException:
        shutil.rmtree(extracted, ignore_errors=True)
        raise
    shutil.rmtree(data, ignore_errors=True)
    extracted.rename(data)
    record = {"slug": slug, "archive_bytes": archive.stat().st_size, "extracted_bytes": unpacked_bytes, "files": counts}
    write_atomically(marker, (json.dumps(record, indent=2) + "\n").encode())
    shutil.rmtree(archive.parent)
    return counts


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--kaggle-dataset SLUG`` and ``--cache-dir DIR`` (both default to None).

    None means "not given", so a CLI can refuse them next to ``--data-dir``; pass
    ``args.kaggle_dataset or DEFAULT_SLUG`` and ``args.cache_dir`` to :func:`fetch_raw`, once
    :func:`refuse_empty` has refused an empty ``--kaggle-dataset``. An empty ``--cache-dir`` is a
    usage error here (:func:`folder_path`): it would mean the current folder.
    """
    group = parser.add_argument_group("Kaggle download (when no --data-dir is given)")
    group.add_argument(
        "--kaggle-dataset",
        metavar="SLUG",
        help=f"Kaggle dataset to download, owner/name (default: {DEFAULT_SLUG})",
    )
    group.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=folder_path,
        help=f"where downloads are kept and reused (default: {default_cache_dir()})",
    )


def folder_path(text: str) -> Path:
    """A folder flag's value: an empty one (an unset shell variable) would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty; expected a folder path (pass . for the current folder)")
    return Path(text)


def refuse_empty(parser: argparse.ArgumentParser, flags: dict[str, str | None]) -> None:
    """A usage error for a flag given an empty value (an unset shell variable): it would silently mean the default."""
    for flag, value in flags.items():
        if value is not None and not value.strip():
            parser.error(f"{flag} {value!r} is empty; expected a value, or leave {flag} out for its default")


#: `python -m openeds.download` behind the one error boundary (`openeds.cli`)
COMMAND = cli.Command(
    "python -m openeds.download",
    again="run it again: the part of the archive already downloaded is kept and resumed",
    known=(DownloadError, RawDataError),
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m openeds.download``: fetch, print the folder; ``error: ...`` and exit 1 on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m openeds.download",
        description=__doc__.split("\n\n")[0],
        epilog="Prints the extracted folder on stdout; progress goes to stderr.",
    )
    add_download_arguments(parser)
    add_retry_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    cli.add_traceback_argument(parser)

    def run() -> None:
        args = parser.parse_args(argv)
        refuse_empty(parser, {"--kaggle-dataset": args.kaggle_dataset})  # "" would silently mean the default slug
        data = fetch_raw(
            DEFAULT_SLUG if args.kaggle_dataset is None else args.kaggle_dataset,
            args.cache_dir,
            quiet=args.quiet,
            retry=RetryPolicy(total=args.retry_timeout, timeout=args.timeout),
        )
        print(data)

    return cli.run(COMMAND, run)


# -- completion marker -------------------------------------------------------------------


def _complete_counts(marker: Path, data: Path, slug: str) -> FileCounts | None:
    """The file counts if ``marker`` records ``slug`` and ``data`` still holds exactly them."""
    try:
        record = json.loads(marker.read_text())
        counts = _count_files(data)
    except (OSError, ValueError, RawDataError):
        return None
    if not isinstance(record, dict) or record.get("slug") != slug or record.get("files") != counts:
        return None
    return counts


def _count_files(root: Path) -> FileCounts:
    """Files in each sub-folder (images, labels, masks, ...) of each split under ``root``."""
    counts: FileCounts = {}
    for split, split_dir in find_split_dirs(root).items():
        subdirs = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
        counts[split] = {sub: sum(entry.is_file() for entry in os.scandir(split_dir / sub)) for sub in subdirs}
    return counts


def _describe(counts: FileCounts) -> str:
    return "; ".join(
        f"{split}: " + ", ".join(f"{n} {sub}" for sub, n in subs.items()) for split, subs in counts.items()
    )


# -- kaggle --------------------------------------------------------------------------------


def _kaggle_api(retry: RetryPolicy) -> KaggleApi:
    """Import kaggle lazily and authenticate, turning a missing login into a DownloadError.

    Every session kagglesdk opens gets ``retry.timeout`` first (``openeds.timeouts``): ``import
    kaggle`` already authenticates once, and with an access token that is a request. 2.2.5 ignores
    a failure there (a release that exits at import is caught the same way, the import being inside
    the ``try``). ``KaggleApi.authenticate()`` then prints a help text and calls ``exit(1)`` when it
    finds no credentials, or only a token its server rejects; one line replaces that text. A token
    check that fails in transit is retried within ``retry``.
    """
    use_kaggle_timeouts(retry.timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            call_with_retries(
                api.authenticate,
                what="check the Kaggle access token",
                classify=functools.partial(_classify, timeout=retry.timeout),
                policy=retry,
            )
    except ImportError as e:
        raise DownloadError(
            f"the kaggle client cannot be imported ({e}); expected kaggle>=2.2 and six. "
            f"Fix: pip install 'kaggle>=2.2' six, {_NO_DATA_DIR_FIX}"
        ) from None
    except SystemExit:
        raise DownloadError(
            "no Kaggle credentials found (or the access token was rejected); expected kaggle auth login, "
            "KAGGLE_API_TOKEN, ~/.kaggle/access_token, KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json. "
            f"Fix: run `kaggle auth login` or create a token at https://www.kaggle.com/settings/api, {_NO_DATA_DIR_FIX}"
        ) from None
    except GaveUp as gave_up:
        raise DownloadError(
            f"could not reach Kaggle to check the access token ({gave_up.last.description}; {gave_up.tally}); "
            f"expected a working connection. Fix: check the network or proxy settings, or run again with a longer "
            f"--retry-timeout, {_NO_DATA_DIR_FIX}"
        ) from None
    except requests.RequestException as e:
        raise DownloadError(
            f"could not reach Kaggle to check the access token ({_one_line(e)}); expected a working connection. "
            f"Fix: check the network or proxy settings, {_NO_DATA_DIR_FIX}"
        ) from None
    return api


def _download(api: KaggleApi, slug: str, archive: Path, *, quiet: bool, retry: RetryPolicy) -> None:
    """Steps 1-3 of the module docstring: fetch ``slug``'s archive to ``archive``, one budget for all."""
    from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

    request = ApiDownloadDatasetRequest()
    request.owner_slug, request.dataset_slug = slug.split("/")
    archive.parent.mkdir(parents=True, exist_ok=True)
    progress = _Progress(archive, retry)

    def attempt(client: KaggleClient) -> None:
        progress.begin()
        response = client.datasets.dataset_api_client.download_dataset(request)  # step 1: answered once headers arrive
        progress.url = response.url
        with contextlib.closing(response):  # kaggle resumes with a request of its own and leaves this one unread
            if not api.download_needed(response, str(archive), quiet):  # step 2
                return
            size = int(response.headers.get("Content-Length") or 0)
            require_free_space(
                archive.parent,
                size - progress.on_disk(),
                purpose=f"to download {slug}",
                fix=_CACHE_DISK_FIX,
                error=DownloadError,
            )
            # Step 3, one try: the retries are this loop's, within the budget. kaggle's own lines about
            # them ("Download failed after 0 retries", ...) would mislead; its progress bar stays.
            with contextlib.redirect_stdout(io.StringIO()):
                api.download_file(
                    response,
                    str(archive),
                    client.http_client(),
                    quiet=quiet,
                    resume=True,
                    max_retries=0,
                    timeout=(retry.timeout, retry.timeout),
                )

    def say(failure: Transient, retries: int, wait: float) -> None:
        kept = f"; {progress.on_disk():,} bytes kept, resuming" if progress.on_disk() else ""
        _say(quiet, f"{slug}: {failure.description}{kept}; retrying in {wait:.1f} s (attempt {retries + 1})")

    # kaggle prints progress lines on stdout; keep stdout for results (main prints the folder).
    with contextlib.redirect_stdout(sys.stderr), api.build_kaggle_client() as client:
        _say(quiet, f"{slug}: downloading https://www.kaggle.com/datasets/{slug} to {shown(archive)}")
        try:
            call_with_retries(
                functools.partial(attempt, client),
                what=f"download {slug}",
                classify=lambda error: _classify(error, timeout=retry.timeout, url=progress.url),
                policy=retry,
                on_retry=say,
                fresh_start=progress.moved_on,
            )
        except requests.HTTPError as e:
            raise _refused(slug, e.response.status_code if e.response is not None else 0, e) from None
        except GaveUp as gave_up:
            if gave_up.last.unreachable:
                endpoint = endpoint_of(gave_up.__cause__) if gave_up.__cause__ else None
                endpoint = endpoint or "the Kaggle API"
                raise DownloadError(
                    f"Kaggle download of {slug}: the network or the endpoint {endpoint} is unreachable "
                    f"({gave_up.last.description}; {gave_up.tally}); expected a connection to Kaggle. "
                    f"Fix: check the network connection and the proxy settings, then run again, {_NO_DATA_DIR_FIX}"
                ) from None
            kept = (
                f" ({progress.on_disk():,} bytes of it are kept in {shown(archive.parent)}, and the next run resumes)"
            )
            raise DownloadError(
                f"Kaggle download of {slug} still fails after {gave_up.attempts} "
                f"attempt{'s' * (gave_up.attempts != 1)} in {gave_up.elapsed:.1f} s "
                f"(last: {gave_up.last.description}; {gave_up.tally}); expected a 2xx answer and the whole archive"
                f"{kept if progress.on_disk() else ''}. "
                f"Fix: try again later or with a longer --retry-timeout or --timeout, {_NO_DATA_DIR_FIX}"
            ) from None
        except (requests.RequestException, ValueError) as e:  # ValueError: kaggle's size check, its date parsing
            raise DownloadError(
                f"download of {slug} to {shown(archive)} stopped ({_one_line_typed(e)}); expected the complete "
                f"archive. Fix: run again to resume it, {_NO_DATA_DIR_FIX}"
            ) from None
        except OSError as e:
            raise DownloadError(
                f"cannot write {shown(archive)} ({_one_line_typed(e)}); expected a writable --cache-dir with room. "
                f"Fix: {_CACHE_DISK_FIX} or free some space, then run again to resume it"
            ) from None


class _Progress:
    """What the attempts of one download wrote, for `call_with_retries`'s ``fresh_start``.

    A failed attempt starts the budget again when it ran longer than the budget plus one timeout
    and the archive grew meanwhile: a long transfer cut once, not a server that keeps failing.
    """

    def __init__(self, archive: Path, retry: RetryPolicy) -> None:
        self.archive, self.retry = archive, retry
        self.started, self.size = time.monotonic(), 0
        self.url: str | None = None  # of the archive, once an attempt got that far

    def on_disk(self) -> int:
        return self.archive.stat().st_size if self.archive.exists() else 0

    def begin(self) -> None:
        self.started, self.size = time.monotonic(), self.on_disk()

    def moved_on(self) -> bool:
        ran = time.monotonic() - self.started
        return self.on_disk() > self.size and ran > self.retry.total + self.retry.timeout


def _classify(error: Exception, *, timeout: float | None = None, url: str | None = None) -> Transient | None:
    """429 and 5xx answers, dropped or cut connections and timeouts are worth another try; other answers are not.

    ``timeout`` is the one requests ran under and ``url`` the archive's, for the message.
    """
    if isinstance(error, requests.HTTPError):
        response = error.response
        status = response.status_code if response is not None else 0
        if status != 429 and not 500 <= status < 600:
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        return Transient(f"HTTP {status}", retry_after)
    if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        root = list(error_chain(error))[-1]
        description = describe_timeout(error, timeout, url=url) or _one_line_typed(root)
        return Transient(description, unreachable=is_unreachable(error))
    return None


def _refused(slug: str, status: int, error: requests.HTTPError) -> DownloadError:
    """The error for an answer that retrying cannot fix."""
    page = f"https://www.kaggle.com/datasets/{slug}"
    said = _one_line(error)
    if status == 401:
        return DownloadError(
            f"Kaggle rejected the credentials (HTTP 401: {said}) when downloading {slug}; expected a valid token "
            f"or key. Fix: run `kaggle auth login` or create a new token at https://www.kaggle.com/settings/api, "
            f"{_NO_DATA_DIR_FIX}"
        )
    if status == 403:
        return DownloadError(
            f"Kaggle refused {slug} (HTTP 403: {said}); this account must accept the dataset's terms on the website. "
            f"Fix: open {page} while logged in, accept its terms and run again, {_NO_DATA_DIR_FIX}"
        )
    if status == 404:
        return DownloadError(
            f"Kaggle dataset {slug} not found (HTTP 404: {said}); expected an existing dataset this account can see. "
            f"Fix: check --kaggle-dataset (default {DEFAULT_SLUG}) at {page}; if it is private or gated, "
            f"accept its terms there while logged in, {_NO_DATA_DIR_FIX}"
        )
    return DownloadError(
        f"Kaggle answered HTTP {status} ({said}) when downloading {slug}; expected 200. "
        f"Fix: check {page} and try again later, {_NO_DATA_DIR_FIX}"
    )


# -- extraction ----------------------------------------------------------------------------


def _extract(archive: Path, target: Path, *, quiet: bool) -> int:
    """Unzip ``archive`` into the empty folder ``target``; return the bytes written.

    Refuses members that would land outside ``target`` (absolute paths, drive letters,
    ``..``) and symbolic links. CRCs are checked as members are read. A damaged or unsafe
    archive is deleted, so the next run downloads it afresh; after a disk error it is kept.
    Before anything is written, every member's entry is checked for what Python's zipfile can
    decompress: an encrypted member, or one compressed with a method it lacks (Deflate64,
    PPMd, an undefined number, ...), is refused in one line naming the member and the method;
    that archive is kept, for a tool that can unzip it.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                reason = _unsafe(info)
                if reason is not None:
                    archive.unlink()
                    raise DownloadError(
                        f"archive {shown(archive)} has member {info.filename!r} that {reason}; expected plain files "
                        f"under the extraction folder. Refused and deleted it. Fix: report it to the dataset's owner, "
                        f"{_NO_DATA_DIR_FIX}"
                    )
            for info in members:
                reason = _undecodable(info)
                if reason is not None:  # the archive is kept: another tool may unzip it
                    raise DownloadError(
                        f"archive {shown(archive)} has member {info.filename!r} that {reason}; expected members "
                        f"stored or compressed with {_READABLE}, which Python's zipfile reads. Nothing was extracted. "
                        f"Fix: unzip the archive with a tool that reads it (e.g. 7-Zip: 7z x) and pass the folder "
                        f"holding openEDS/ as --data-dir"
                    )
            total = sum(info.file_size for info in members)
            require_free_space(
                target, total, purpose=f"to extract {archive.name}", fix=_CACHE_DISK_FIX, error=DownloadError
            )
            for info in tqdm(members, desc=f"extracting {archive.name}", unit=" files", disable=quiet):
                dest = target.joinpath(*PurePosixPath(info.filename).parts)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"archive {shown(archive)} is damaged ({_one_line(e)}); expected a complete zip. Deleted it. "
            f"Fix: run again to download it afresh, {_NO_DATA_DIR_FIX}"
        ) from None
    except OSError as e:
        raise DownloadError(
            f"extracting {shown(archive)} into {shown(target)} failed ({_one_line(e)}); expected a writable folder "
            f"with room. Fix: free some space or pass --cache-dir elsewhere and run again (the archive is kept)"
        ) from None
    return total


#: the compression methods of the zip format (APPNOTE 6.3.10, 4.4.5), by number
_ZIP_METHODS = {
    0: "stored",
    1: "Shrink",
    2: "Reduce",
    3: "Reduce",
    4: "Reduce",
    5: "Reduce",
    6: "Implode",
    8: "Deflate",
    9: "Deflate64",
    10: "PKWARE DCL Implode",
    12: "BZIP2",
    14: "LZMA",
    16: "IBM z/OS CMPSC",
    18: "IBM TERSE",
    19: "IBM LZ77 z",
    93: "Zstandard",
    94: "MP3",
    95: "XZ",
    96: "JPEG",
    97: "WavPack",
    98: "PPMd",
    99: "AE-x (WinZip AES encryption)",
}


def _decompressors() -> dict[int, str]:
    """The methods this Python's zipfile can decompress: stored and Deflate always, the others with their module."""
    readable = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "Deflate"}
    for method, module, name in ((zipfile.ZIP_BZIP2, "bz2", "BZIP2"), (zipfile.ZIP_LZMA, "lzma", "LZMA")):
        with contextlib.suppress(ImportError):
            __import__(module)
            readable[method] = name
    zstd = getattr(zipfile, "ZIP_ZSTANDARD", None)  # Python 3.14
    if zstd is not None:
        with contextlib.suppress(ImportError):
            __import__("compression.zstd")
            readable[zstd] = "Zstandard"
    return readable


_DECOMPRESSORS = _decompressors()
_READABLE = ", ".join(name for method, name in _DECOMPRESSORS.items() if method != zipfile.ZIP_STORED)


def _undecodable(info: zipfile.ZipInfo) -> str | None:
    """Why Python's zipfile cannot extract ``info`` (from its central directory entry), or None if it can."""
    if info.flag_bits & 0x1:
        return "is encrypted (password-protected)"
    if info.compress_type not in _DECOMPRESSORS:
        name = _ZIP_METHODS.get(info.compress_type, "a number the zip format does not define")
        return f"is compressed with {name} (method {info.compress_type}), which Python's zipfile cannot decompress"
    return None


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why extracting ``info`` could write outside the target folder, or None if it cannot."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "climbs out of the folder with '..'"
    return None


# -- output ------------------------------------------------------------------------------


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _one_line_typed(error: BaseException) -> str:
    return f"{type(error).__name__}: {_one_line(error)}"


if __name__ == "__main__":
    cli.exit(main())
