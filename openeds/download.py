"""Download the raw OpenEDS tree from Kaggle into a local cache, once.

``push.py`` and the datasets builder call :func:`fetch_raw` when no ``--data-dir`` /
``data_dir`` is given. It can also be run on its own; it prints the folder to pass as
``--data-dir``::

    python -m openeds.download                                   # default slug and cache
    python -m openeds.download --cache-dir /data/kaggle-cache
    python -m openeds.download --kaggle-dataset owner/name --quiet
    python -m openeds.download --retry-timeout 60               # give up on a failing server sooner

Credentials are whatever the ``kaggle`` client accepts: ``kaggle auth login``,
``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``, ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or
``~/.kaggle/kaggle.json``. They are never read, printed or logged here.

Cache layout, one folder per slug (``/`` replaced by ``--``)::

    <cache_dir>/soumicksarker--openeds-dataset/
        download/openeds-dataset.zip   the archive; kaggle keeps openeds-dataset.zip.kaggle-partial
                                       next to it while it is incomplete, and resumes from it
        extract-*.tmp/                 an extraction in progress (removed by the next run)
        .lock, .lock.owner             held by the run downloading or extracting (``openeds.lock``);
                                       a second run ends at once, naming the first
        data/                          the extracted tree, accepted by openeds.raw.find_split_dirs
        complete.json                  written last; lists the files per split

A run that finds ``complete.json`` and the same file counts in ``data/`` returns at once
without importing ``kaggle`` or making a request. Anything else (no marker, a marker
whose counts no longer match, a half-written ``data/``) is downloaded or extracted again.
To pick up a new version of the Kaggle dataset, delete the slug's folder.

Retries, by layer (kaggle 2.2.5, kagglesdk 0.1.38). ``KaggleApi.dataset_download_files``
is three steps, and this module calls the same three so that it can wrap only the first:

1. ``DatasetApiClient.download_dataset``: ``POST .../datasets.DatasetApiService/DownloadDataset``,
   then requests follows the 302 to the archive and returns once its headers arrive.
   kaggle does NOT retry this step: one attempt, then ``raise_for_status``. It is
   retried here (:func:`openeds.retry.call_with_retries`) on 429 and 503 (honouring
   ``Retry-After``), other 5xx, and connection errors or timeouts, for up to
   ``--retry-timeout`` seconds (600 by default); when the network or the endpoint is
   unreachable (DNS failure, connection refused), for at most 60 s. 401, 403 and 404 are
   not retried.
2. ``KaggleApi.download_needed``: skips the transfer when a complete archive is already
   on disk (for example after an extraction that stopped for lack of space).
3. ``KaggleApi.download_file``: streams the body. kaggle retries dropped connections,
   timeouts and HTTP errors itself, up to 5 times, with 2**n s backoff (``Retry-After``
   on 429), resuming with ``Range``/``If-Range``; across runs it resumes from the
   ``.kaggle-partial`` marker. This step is not wrapped again: when kaggle gives up,
   :class:`DownloadError` says to run again, and the next run resumes.

Every failure is a :class:`DownloadError` with a one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import requests
from tqdm import tqdm

from openeds.disk import require_free_space, write_atomically
from openeds.lock import hold
from openeds.raw import RawDataError, find_split_dirs
from openeds.retry import (
    GaveUp,
    RetryPolicy,
    Transient,
    add_retry_argument,
    call_with_retries,
    endpoint_of,
    error_chain,
    is_unreachable,
    parse_retry_after,
)

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
    retry: RetryPolicy = RetryPolicy(),
) -> Path:
    """Download and unzip the Kaggle dataset ``slug`` once; return the extracted folder.

    The folder is ``<cache_dir>/<owner>--<name>/data`` (``cache_dir`` defaults to
    :func:`default_cache_dir`) and is accepted by :func:`openeds.raw.find_split_dirs`.
    Progress and the file counts per split go to stderr unless ``quiet``. Every failure
    raises :class:`DownloadError`; ``retry`` bounds the retries of step 1 (module docstring).
    """
    if not _SLUG_RE.fullmatch(slug):
        raise DownloadError(f"Kaggle dataset {slug!r} is not of the form owner/name; expected e.g. {DEFAULT_SLUG}")
    folder = Path(cache_dir or default_cache_dir()).expanduser() / slug.replace("/", "--")
    data, marker = folder / "data", folder / MARKER_NAME

    counts = _complete_counts(marker, data, slug)
    if counts is not None:
        _say(quiet, f"{slug}: already downloaded to {data}; skipping ({_describe(counts)})")
        return data

    # One run at a time: two would share the archive's and the extraction's names, and each
    # run's sweep of extract-*.tmp would delete the other's work.
    with hold(folder, what="the Kaggle cache", option="--cache-dir", error=DownloadError):
        counts = _complete_counts(marker, data, slug)  # another run may have finished it meanwhile
        if counts is None:
            counts = _download_and_extract(slug, folder, quiet=quiet, retry=retry)
            _say(quiet, f"{slug}: extracted to {data} ({_describe(counts)})")
        else:
            _say(quiet, f"{slug}: already downloaded to {data}; skipping ({_describe(counts)})")
    return data


def _download_and_extract(slug: str, folder: Path, *, quiet: bool, retry: RetryPolicy) -> FileCounts:
    """Fill ``folder`` (whose lock the caller holds) with ``data/`` and the marker; return the file counts."""
    data, marker = folder / "data", folder / MARKER_NAME
    marker.unlink(missing_ok=True)
    for stale in folder.glob("extract-*.tmp"):
        shutil.rmtree(stale)
    archive = folder / "download" / f"{slug.split('/')[1]}.zip"
    _download(_kaggle_api(), slug, archive, quiet=quiet, retry=retry)

    extracted = Path(tempfile.mkdtemp(prefix="extract-", suffix=".tmp", dir=folder))
    try:
        unpacked_bytes = _extract(archive, extracted, quiet=quiet)
        try:
            counts = _count_files(extracted)
        except RawDataError as e:
            archive.unlink()
            raise DownloadError(
                f"archive {archive.name} of {slug} does not hold the OpenEDS tree ({e}); "
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
    ``args.kaggle_dataset or DEFAULT_SLUG`` and ``args.cache_dir`` to :func:`fetch_raw`.
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
        type=Path,
        help=f"where downloads are kept and reused (default: {default_cache_dir()})",
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
    args = parser.parse_args(argv)
    try:
        data = fetch_raw(
            args.kaggle_dataset or DEFAULT_SLUG, args.cache_dir, quiet=args.quiet,
            retry=RetryPolicy(total=args.retry_timeout),
        )
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(data)
    return 0


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


def _kaggle_api() -> KaggleApi:
    """Import kaggle lazily and authenticate, turning a missing login into a DownloadError.

    ``import kaggle`` already authenticates once; 2.2.5 ignores a failure there (a release
    that exits at import is caught the same way, the import being inside the ``try``).
    ``KaggleApi.authenticate()`` then prints a help text and calls ``exit(1)`` when it
    finds no credentials, or only a token its server rejects; one line replaces that text.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
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
    except requests.RequestException as e:
        raise DownloadError(
            f"could not reach Kaggle to check the access token ({_one_line(e)}); expected a working connection. "
            f"Fix: check the network or proxy settings, {_NO_DATA_DIR_FIX}"
        ) from None
    return api


def _download(api: KaggleApi, slug: str, archive: Path, *, quiet: bool, retry: RetryPolicy) -> None:
    """Steps 1-3 of the module docstring: fetch ``slug``'s archive to ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    # kaggle prints progress lines on stdout; keep stdout for results (main prints the folder).
    with contextlib.redirect_stdout(sys.stderr), api.build_kaggle_client() as client:
        _say(quiet, f"{slug}: downloading https://www.kaggle.com/datasets/{slug} to {archive}")
        response = _open_download(client, slug, retry, quiet=quiet)
        if not api.download_needed(response, str(archive), quiet):
            response.close()
            return
        size = int(response.headers.get("Content-Length") or 0)
        on_disk = archive.stat().st_size if archive.exists() else 0
        require_free_space(archive.parent, size - on_disk, purpose=f"to download {slug}", fix=_CACHE_DISK_FIX,
                           error=DownloadError)
        try:
            api.download_file(response, str(archive), client.http_client(), quiet=quiet, resume=True)
        except (requests.RequestException, OSError, ValueError) as e:
            raise DownloadError(
                f"download of {slug} to {archive} stopped after kaggle's own retries ({_one_line(e)}); "
                f"expected the complete archive. Fix: run again to resume it, {_NO_DATA_DIR_FIX}"
            ) from None


def _open_download(client: KaggleClient, slug: str, retry: RetryPolicy, *, quiet: bool) -> requests.Response:
    """Step 1: ask for the archive and follow the redirect, retrying what kaggle does not."""
    from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

    request = ApiDownloadDatasetRequest()
    request.owner_slug, request.dataset_slug = slug.split("/")

    def say(failure: Transient, retries: int, wait: float) -> None:
        _say(quiet, f"{slug}: {failure.description}; retrying in {wait:.1f} s (attempt {retries + 1})")

    try:
        return call_with_retries(
            lambda: client.datasets.dataset_api_client.download_dataset(request),
            what=f"download {slug}",
            classify=_classify,
            policy=retry,
            on_retry=say,
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
        raise DownloadError(
            f"Kaggle download of {slug} still fails after {gave_up.attempts} attempts in {gave_up.elapsed:.1f} s "
            f"(last: {gave_up.last.description}; {gave_up.tally}); expected a 2xx answer. "
            f"Fix: try again later or with a longer --retry-timeout, {_NO_DATA_DIR_FIX}"
        ) from None


def _classify(error: Exception) -> Transient | None:
    """429 and 5xx answers, dropped connections and timeouts are worth another try; other answers are not."""
    if isinstance(error, requests.HTTPError):
        response = error.response
        status = response.status_code if response is not None else 0
        if status != 429 and not 500 <= status < 600:
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        return Transient(f"HTTP {status}", retry_after)
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        root = list(error_chain(error))[-1]
        return Transient(_one_line_typed(root), unreachable=is_unreachable(error))
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
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                reason = _unsafe(info)
                if reason is not None:
                    archive.unlink()
                    raise DownloadError(
                        f"archive {archive} has member {info.filename!r} that {reason}; expected plain files under "
                        f"the extraction folder. Refused and deleted it. Fix: report it to the dataset's owner, "
                        f"{_NO_DATA_DIR_FIX}"
                    )
            total = sum(info.file_size for info in members)
            require_free_space(target, total, purpose=f"to extract {archive.name}", fix=_CACHE_DISK_FIX,
                               error=DownloadError)
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
            f"archive {archive} is damaged ({_one_line(e)}); expected a complete zip. Deleted it. "
            f"Fix: run again to download it afresh, {_NO_DATA_DIR_FIX}"
        ) from None
    except OSError as e:
        raise DownloadError(
            f"extracting {archive} into {target} failed ({_one_line(e)}); expected a writable folder with room. "
            f"Fix: free some space or pass --cache-dir elsewhere and run again (the archive is kept)"
        ) from None
    return total


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
    sys.exit(main())
