"""Remote state: what the dataset repo on the Hub holds (listing, tags, card, parquet footers), read once.

`connect` checks the token with the Hub (`whoami`) and reads the remote (`inspect_remote`): head
commit, every file with its size and hash, tags, the card's text, and whether the data is v1 (flat
list columns, no `preprocessed` column). A repo that does not exist, or has no README.md in its
listing, has no card; a card the listing names but that cannot be downloaded is an error, never "no
card"; a gated repo the token may not read is said here. `kept_sizes` sizes the remote splits a run
keeps, from the listing and the card or the shards' footers (ranged reads). A remote file that is not
what it claims (a card that is not UTF-8, a shard that is not parquet) is one line naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, HfFileSystem, get_session, hf_hub_url
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, validate_repo_id

from openeds.card import SplitSize, card_data, rows_from_card
from openeds.hub.errors import (
    DEFAULT_RETRY,
    NOTHING_PUBLISHED,
    PublishError,
    _describe,
    _explain_access,
    _http_error,
    _not_the_hub,
    _retry,
    _status,
)
from openeds.layout import CARD_PATH, CONFIG_DIRS, SHARD_RE, complete_shard_set, split_prefix
from openeds.retry import RetryPolicy, error_chain
from openeds.timeouts import use_hub_timeouts

logger = logging.getLogger(__name__)


V1_TAG: Final = "v1"
V2_COLUMN: Final = "preprocessed"  # the column v2 added; v1 data has none

# A v1 shard as `push_to_hub` named them for the default config (v1 had no other), under `data/`; older
# versions of datasets append a fingerprint: data/train-00000-of-00003-ab12.parquet
_V1_SHARD = re.compile(r"data/(?P<split>\w+(?:\.\w+)*)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet")
#: How an HTML page starts (a captive portal's, a wrong endpoint's), never a dataset card.
_HTML_STARTS: Final = (b"<!doctype html", b"<html")


@dataclass(frozen=True)
class RemoteFile:
    size: int
    sha256: str | None  # LFS files: the sha256 of the content
    blob_id: str | None  # the git blob id (of the LFS pointer for LFS files)


@dataclass(frozen=True)
class RemoteState:
    head: str  # sha of `main` when inspected; "" if the repo does not exist
    files: Mapping[str, RemoteFile]  # path -> size and hashes
    tags: Mapping[str, str]  # tag name -> the commit it points at
    v1_files: frozenset[str]  # the parquet files if they hold v1 data; empty for v2 data or no data
    card: str | None = None  # the text of README.md at `head`; None if the listing has none
    exists: bool = True
    user: str | None = None  # who the token belongs to, when `connect` checked it

    @property
    def head_tags(self) -> list[str]:
        return sorted(name for name, sha in self.tags.items() if sha == self.head)


def check_repo_id(repo_id: str) -> None:
    """A PublishError unless `repo_id` is `namespace/name` and passes huggingface_hub's `validate_repo_id`
    (the Hub's rules: letters, digits, `-`, `_`, `.`; no `--` or `..`; at most 96 characters a part)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id, flags=re.ASCII):
        raise PublishError(
            f"repo id {repo_id!r} is not of the form namespace/name; expected e.g. Conner/openeds-precomputed, "
            "in ASCII letters, digits, '-', '_' and '.'; pass another --repo-id"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        reason = " ".join(str(error).replace(f": '{repo_id}'", "").split()).rstrip(".")
        raise PublishError(
            f"repo id {repo_id!r} is not valid on the Hub ({reason}); expected namespace/name, each part of ASCII "
            "letters, digits, '-', '_' and '.', neither starting nor ending with '-' or '.', without '--' or '..', "
            "at most 96 characters; pass another --repo-id"
        ) from None


def has_v1_revision(remote: RemoteState) -> bool:
    """Whether the repo has revision `v1` once `publish` is done: the tag exists, or the repo holds v1 data,
    which `publish` tags `v1` before its commit."""
    return V1_TAG in remote.tags or bool(remote.v1_files)


def _shard_prefix(path: str) -> str | None:
    """The split prefix of a shard named as this tool names them (`data/test-00000-of-00002.parquet`), else None."""
    shard = SHARD_RE.fullmatch(path)
    return f"{shard['dir']}/{shard['split']}-" if shard and shard["dir"] in CONFIG_DIRS.values() else None


def connect(api: HfApi, repo_id: str, *, token: str, retry: RetryPolicy = DEFAULT_RETRY) -> RemoteState:
    """Check the token with the Hub (valid, not read-only), then read the remote once (`inspect_remote`).

    A repo the user may not read (gated, and not granted) is one PublishError here, before any build.
    """
    check_repo_id(repo_id)
    use_hub_timeouts(retry.timeout)  # every request from here on, this module's and the client's own
    user = _check_token(api, token, retry)
    with _explain_access(api, repo_id, user):
        state = inspect_remote(api, repo_id, token=token, retry=retry)
    return dataclasses.replace(state, user=user)


def inspect_remote(
    api: HfApi, repo_id: str, *, token: str | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> RemoteState:
    """Head, files (sizes and hashes), tags and card of `main`, and its parquet files if they hold v1 data.

    A repo that does not exist is returned empty (`exists=False`), and one whose listing has no
    README.md has `card=None`. Every other failure is a PublishError: a card that cannot be read is
    never taken for an absent one. A gated repo is never taken for a missing one either: its
    `GatedRepoError` (from the listing, or from `auth_check` when the listing says it is gated) goes
    to the caller (`connect` words it).
    """
    try:
        info = _retry(
            retry,
            f"list the files of {repo_id}",
            lambda: api.dataset_info(repo_id, files_metadata=True, token=token),
            passthrough=(401, 403, 404),
            endpoint=api.endpoint,
        )
    except GatedRepoError:
        raise
    except RepositoryNotFoundError:
        return RemoteState("", {}, {}, frozenset(), exists=False)
    if info.gated:
        _check_gate(api, repo_id, token, retry)
    refs = _retry(
        retry,
        f"list the tags of {repo_id}",
        lambda: api.list_repo_refs(repo_id, repo_type="dataset", token=token),
        endpoint=api.endpoint,
    )
    head = info.sha or ""
    files = {
        sibling.rfilename: RemoteFile(
            size=sibling.size or 0, sha256=sibling.lfs.sha256 if sibling.lfs else None, blob_id=sibling.blob_id
        )
        for sibling in info.siblings or ()
    }
    card = _download_card(api, repo_id, head, token, retry) if CARD_PATH in files else None
    # Only shards tell v1 from v2, this tool's names first: a user's other parquet file does not.
    ours = sorted(path for path in files if _shard_prefix(path) is not None)
    shards = ours + sorted(path for path in files if _V1_SHARD.fullmatch(path) and path not in ours)
    v1 = bool(shards) and V2_COLUMN not in _remote_columns(api, repo_id, head, card, shards[0], token, retry)
    v1_files = frozenset(path for path in shards if _V1_SHARD.fullmatch(path)) if v1 else frozenset()
    tags = {ref.name: ref.target_commit for ref in refs.tags}
    return RemoteState(head, files, tags, v1_files, card)


def _check_gate(api: HfApi, repo_id: str, token: str | None, retry: RetryPolicy) -> None:
    """Ask the Hub whether the token may read the gated repo (`HfApi.auth_check`): a `GatedRepoError` if not.

    A Hub without that endpoint (404) is not asked again: the reads and the commit that follow say what they meet.
    """
    try:
        _retry(
            retry,
            f"check access to the gated repo {repo_id}",
            lambda: api.auth_check(repo_id, repo_type="dataset", token=token),
            passthrough=(403, 404),
            endpoint=api.endpoint,
        )
    except HfHubHTTPError as error:
        if isinstance(error, GatedRepoError) or _status(error) != 404:
            raise
        logger.debug("%s has no auth-check endpoint (%s); the commit will say whether the token may write",
                     api.endpoint, _describe(error))


def remote_splits(remote: RemoteState) -> dict[str, dict[str, list[str]]]:
    """`{config: {split: shard paths}}` of the v2 shards the remote holds (v1 files left out)."""
    config_of = {folder: config for config, folder in CONFIG_DIRS.items()}
    splits: dict[str, dict[str, list[str]]] = {}
    for path in sorted(remote.files):
        shard = SHARD_RE.fullmatch(path)
        if shard and shard["dir"] in config_of and path not in remote.v1_files:
            splits.setdefault(config_of[shard["dir"]], {}).setdefault(shard["split"], []).append(path)
    return splits


def kept_sizes(
    api: HfApi,
    repo_id: str,
    remote: RemoteState,
    *,
    rebuilt: Mapping[str, Sequence[str]],
    token: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> dict[str, dict[str, SplitSize]]:
    """Sizes of the remote splits this run does not rebuild (`rebuilt`: `{config: splits}`), so the new card lists them.

    Bytes are the sizes of the split's shards in the remote listing. Rows are the published card's
    `num_examples` for a split it lists whole, else the sum of the shards' parquet footers (ranged
    reads). Every remote split is kept, listed or not, so a new card never hides files the repo holds.
    """
    card_rows = rows_from_card(remote.card)
    sizes: dict[str, dict[str, SplitSize]] = {}
    for config, splits in remote_splits(remote).items():
        for split, paths in splits.items():
            if split in rebuilt.get(config, ()):
                continue
            complete = paths == complete_shard_set(split_prefix(config, split), paths)
            if not complete:
                expected = len(complete_shard_set(split_prefix(config, split), paths))
                logger.warning(
                    "%s holds %d of the %d shards of %s/%s; the card lists those", repo_id, len(paths), expected,
                    config, split,
                )
            rows = card_rows.get(config, {}).get(split) if complete else None
            if rows is None:
                rows = sum(_remote_rows(api, repo_id, remote.head, path, token, retry) for path in paths)
            sizes.setdefault(config, {})[split] = SplitSize(rows, sum(remote.files[path].size for path in paths))
    return sizes


def _remote_rows(api: HfApi, repo_id: str, head: str, path: str, token: str | None, retry: RetryPolicy) -> int:
    return _retry(
        retry,
        f"read the row count of {repo_id}/{path}",
        lambda: _footer(api, repo_id, head, path, token, fix="or rebuild its split (--splits) so that this run "
                        "replaces it").num_rows,
        endpoint=api.endpoint,
    )


def _footer(api: HfApi, repo_id: str, head: str, path: str, token: str | None, *, fix: str = "") -> pq.FileMetaData:
    """The parquet footer of a remote file, by ranged reads of its end only.

    A file that is not parquet is one PublishError naming it (`fix`: what else than replacing it helps);
    the Hub's own errors (HTTP, connection) go to the caller's retries unchanged.
    """
    fs = HfFileSystem(endpoint=api.endpoint, token=token)
    try:
        with fs.open(f"datasets/{repo_id}@{head}/{path}", "rb") as file:
            return pq.ParquetFile(file).metadata
    except (OSError, pa.ArrowException) as error:
        if _http_error(error) is not None or any(isinstance(link, httpx2.HTTPError) for link in error_chain(error)):
            raise
        raise PublishError(
            f"the remote file {repo_id}/{path} (at {head[:12]}) is not a parquet file ({_describe(error)}); "
            f"expected a parquet shard, whose footer gives its rows and columns; {NOTHING_PUBLISHED}; replace or "
            f"delete it on the Hub{' ' + fix if fix else ''}, then re-run"
        ) from None


def _download_card(api: HfApi, repo_id: str, revision: str, token: str | None, retry: RetryPolicy) -> str:
    """The text of README.md at `revision`, which the listing says exists.

    One plain GET per attempt, retried by `_retry`: `hf_hub_download` would turn a 5xx or a
    connection error into a `LocalEntryNotFoundError`, which reads like "no such file", after
    retries of its own that ignore the retry budget.
    """
    url = hf_hub_url(repo_id, CARD_PATH, repo_type="dataset", revision=revision, endpoint=api.endpoint)

    what = f"download the card {CARD_PATH} of {repo_id}@{revision[:12]}, which its file listing names"
    outcome = f"{NOTHING_PUBLISHED}: the card says which splits to keep, and a card written without it could hide them"

    def download() -> str:
        response = get_session().get(url, headers=build_hf_headers(token=token), follow_redirects=True)
        hf_raise_for_status(response)
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html") and response.content.lstrip()[:15].lower().startswith(_HTML_STARTS):
            raise _not_the_hub(what, api.endpoint, f"an HTML page (Content-Type {content_type!r})", outcome)
        try:
            return response.content.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PublishError(
                f"the card {CARD_PATH} of {repo_id}@{revision[:12]} is not UTF-8 text (byte "
                f"{error.object[error.start]:#04x} at offset {error.start}); expected the UTF-8 Markdown of a "
                f"dataset card; {NOTHING_PUBLISHED}; save {CARD_PATH} as UTF-8 on the Hub, or delete it, then re-run"
            ) from None

    return _retry(retry, what, download, outcome=outcome, endpoint=api.endpoint)


def _remote_columns(
    api: HfApi, repo_id: str, head: str, card: str | None, data_file: str, token: str | None, retry: RetryPolicy
) -> set[str]:
    """Columns of the remote data: from the card's `dataset_info.features`, else from the schema of `data_file`."""
    data = card_data(card)
    dataset_info = data.get("dataset_info") if data is not None else None
    listed = dataset_info if isinstance(dataset_info, list) else [dataset_info]
    infos = [info for info in listed if isinstance(info, dict)]
    per_config = [
        {feature["name"] for feature in info.get("features") or () if isinstance(feature, dict) and "name" in feature}
        for info in infos
    ]
    if any(per_config):
        return set.intersection(*filter(None, per_config))  # one config without the v2 column is v1 data

    def read_schema() -> set[str]:
        return set(_footer(api, repo_id, head, data_file, token).schema.to_arrow_schema().names)

    return _retry(retry, f"read the schema of {repo_id}/{data_file}", read_schema, endpoint=api.endpoint)


def _check_token(api: HfApi, token: str, retry: RetryPolicy) -> str:
    """The user name of `token`, once the Hub has accepted it and it is not read-only."""
    what = "check the Hugging Face token"
    me = _retry(retry, what, lambda: api.whoami(token=token), endpoint=api.endpoint)
    if not isinstance(me, dict) or not isinstance(me.get("name"), str):
        raise _not_the_hub(what, api.endpoint, f"JSON without a user name ({type(me).__name__})", NOTHING_PUBLISHED)
    auth = me.get("auth")
    access = auth.get("accessToken") if isinstance(auth, dict) else None
    if isinstance(access, dict) and access.get("role") == "read":
        raise PublishError(
            f"the Hugging Face token of user {me['name']!r} is read-only (role 'read'); "
            "expected a token with write access; create one at https://huggingface.co/settings/tokens"
        )
    return me["name"]
