"""Remote state: what the dataset repo on the Hub holds (listing, tags, card), and who may write to it; read once.

`connect` checks the token with the Hub (`whoami`), reads the remote (`inspect_remote`): head
commit, every file with its size and hash, tags, the card's text, and the files that hold v1 data
(recognised by their schema wherever they sit, each with the split `datasets` reads it as:
`openeds.hub.v1`), then whether the token may write to the repo
(`_check_write`). A repo that does not exist, or has no README.md in its listing, has no card; a card
the listing names but that cannot be downloaded is an error, never "no card". Said here, before
anything is built: a gated repo the token may not read, a repo (gated or not) it may read but not
write (`HfApi.auth_check(write=True)`), and a repo to create in a namespace that is neither the
user's nor one of their organizations (whoami's `orgs`). A remote file that is not what it claims (a
card that is not UTF-8, a shard that is not parquet) is one line naming it. Parquet footers are read
by `openeds.hub.footers` and kept in `RemoteState.footers`, so none is read twice in a run.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urljoin

import pyarrow.parquet as pq
from huggingface_hub import HfApi, get_session, hf_hub_url
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, validate_repo_id

from openeds.card import card_origin
from openeds.hub.errors import (
    DEFAULT_RETRY,
    NOTHING_PUBLISHED,
    PublishError,
    _describe,
    _explain_access,
    _not_the_hub,
    _retry,
    _server_message,
    _status,
    own_repo,
)
from openeds.hub.footers import HTML_STARTS
from openeds.hub.v1 import find_v1_files, is_own_shard, resolve_splits
from openeds.layout import CARD_PATH, CONFIG_DIRS, PREVIEW_PATHS, SHARD_RE
from openeds.retry import RetryPolicy
from openeds.timeouts import use_hub_timeouts

logger = logging.getLogger(__name__)


V1_TAG: Final = "v1"


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
    #: the files that hold v1 data (`openeds.hub.v1`), each with the split `load_dataset(repo, revision="v1")`
    #: reads it as (None: no split reads it); empty for a repo without v1 data
    v1_files: Mapping[str, str | None]
    card: str | None = None  # the text of README.md at `head`; None if the listing has none
    exists: bool = True
    user: str | None = None  # who the token belongs to, when `connect` checked it
    gated: bool = False  # the repo is gated: reading its files needs access granted
    #: parquet footers read so far (path -> metadata), filled by `openeds.hub.footers` as they are read
    footers: dict[str, pq.FileMetaData] = field(default_factory=dict, compare=False, repr=False)

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
    return f"{shard['dir']}/{shard['split']}-" if shard and is_own_shard(path) else None


def connect(api: HfApi, repo_id: str, *, token: str, retry: RetryPolicy = DEFAULT_RETRY) -> RemoteState:
    """Check the token with the Hub (valid, not read-only), read the remote once (`inspect_remote`), and check
    that the token may write to the repo (`_check_write`).

    A repo the user may not read (gated, and not granted), or may read but not write, is one PublishError
    here, before any build.
    """
    check_repo_id(repo_id)
    use_hub_timeouts(retry.timeout)  # every request from here on, this module's and the client's own
    me = _whoami(api, token, retry)
    with _explain_access(api, repo_id, me.name):
        state = inspect_remote(api, repo_id, token=token, retry=retry)
        _check_write(api, repo_id, state, me, token, retry)
    return dataclasses.replace(state, user=me.name)


def inspect_remote(
    api: HfApi, repo_id: str, *, token: str | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> RemoteState:
    """Head, files (sizes and hashes), tags and card of `main`, and the files that hold v1 data (`_v1_files`).

    A repo that does not exist is returned empty (`exists=False`), and one whose listing has no
    README.md has `card=None`. Every other failure is a PublishError: a card that cannot be read is
    never taken for an absent one. A gated repo is never taken for a missing one either: its
    `GatedRepoError` (from the listing, or from `auth_check` when the listing says it is gated) goes
    to the caller (`connect` words it).
    """
    try:
        info = _retry(
            retry,
            f"read the repo {repo_id}",
            lambda: api.dataset_info(repo_id, token=token),
            passthrough=(401, 403, 404),
            endpoint=api.endpoint,
        )
    except GatedRepoError:
        raise
    except RepositoryNotFoundError:
        return RemoteState("", {}, {}, {}, exists=False)
    if info.gated:
        _check_access(api, repo_id, token, retry, write=False)
    refs = _retry(
        retry,
        f"list the tags of {repo_id}",
        lambda: api.list_repo_refs(repo_id, repo_type="dataset", token=token),
        endpoint=api.endpoint,
    )
    head = info.sha or ""
    # The paginated tree listing, not the repo info's `siblings`, which a large repo truncates.
    files = list_files(api, repo_id, head or "main", token=token, retry=retry)
    card = _download_card(api, repo_id, head, token, retry) if CARD_PATH in files else None
    footers: dict[str, pq.FileMetaData] = {}
    v1_files = _v1_files(api, repo_id, head, files, card, token, retry, footers)
    tags = {ref.name: ref.target_commit for ref in refs.tags}
    return RemoteState(head, files, tags, v1_files, card, gated=bool(info.gated), footers=footers)


def list_files(
    api: HfApi,
    repo_id: str,
    revision: str,
    *,
    token: str | None,
    retry: RetryPolicy = DEFAULT_RETRY,
    outcome: str = NOTHING_PUBLISHED,
) -> dict[str, RemoteFile]:
    """Every file of the repo at `revision` with its size and hashes: the recursive tree listing, page after page.

    The Hub answers a listing in pages and links each to the next (`Link: <...>; rel="next"`, a cursor in the
    URL), so a repo of any size is listed whole. Each page is one plain GET, one attempt of `_retry` (the client's
    own pager retries outside the run's budget); an answer of another shape than the API's is one line.
    `outcome` says what a failure leaves on the Hub.
    """
    what = f"list the files of {repo_id}"
    url: str | None = (
        f"{api.endpoint}/api/datasets/{repo_id}/tree/{quote(revision, safe='')}?recursive=true&expand=false"
    )
    files: dict[str, RemoteFile] = {}
    seen: set[str] = set()
    while url is not None:
        if url in seen:
            raise _not_the_hub(what, api.endpoint, f"a page that links back to an earlier one ({url})", outcome)
        seen.add(url)
        page, url = _retry(
            retry,
            what,
            lambda at=url: _tree_page(api, at, token, what, outcome),
            outcome=outcome,
            endpoint=api.endpoint,
        )
        files.update(page)
    return files


def _tree_page(
    api: HfApi, url: str, token: str | None, what: str, outcome: str
) -> tuple[dict[str, RemoteFile], str | None]:
    """One page of the tree listing: its files, and the URL of the next page (None after the last)."""
    response = get_session().get(url, headers=build_hf_headers(token=token), follow_redirects=True)
    hf_raise_for_status(response)
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/html") and response.content.lstrip()[:15].lower().startswith(HTML_STARTS):
        raise _not_the_hub(what, api.endpoint, f"an HTML page (Content-Type {content_type!r})", outcome)
    entries = response.json()
    files = {}
    for entry in entries if isinstance(entries, list) else [entries]:
        file = _tree_file(entry)
        if file is None:
            shown_entry = " ".join(repr(entry).split())[:80]
            raise _not_the_hub(what, api.endpoint, f"JSON of another shape (an entry {shown_entry})", outcome)
        if file:
            files.update(file)
    following = response.links.get("next", {}).get("url")
    return files, (urljoin(url, following) if following else None)


def _tree_file(entry: object) -> dict[str, RemoteFile] | None:
    """`{path: RemoteFile}` for a file entry of the tree listing, `{}` for an entry of another type (a folder),
    None for anything that is not an entry of the listing."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("type"), str):
        return None
    if entry["type"] != "file":
        return {}
    size, oid, lfs = entry.get("size"), entry.get("oid"), entry.get("lfs")
    if not isinstance(size, int) or not isinstance(oid, str):
        return None
    if lfs is not None and not (isinstance(lfs, dict) and isinstance(lfs.get("oid"), str)):
        return None
    return {entry["path"]: RemoteFile(size=size, sha256=lfs["oid"] if lfs else None, blob_id=oid)}


def _v1_files(
    api: HfApi,
    repo_id: str,
    head: str,
    files: Mapping[str, RemoteFile],
    card: str | None,
    token: str | None,
    retry: RetryPolicy,
    footers: dict[str, pq.FileMetaData],
) -> dict[str, str | None]:
    """The files at `head` that hold v1 data, each with the split `load_dataset(repo, revision="v1")` reads it as.

    The splits are resolved over the repo as v1 left it: without what this tool wrote beside it (its v2
    shards, previews and card), which an earlier version may have published without converting v1.
    """
    found = find_v1_files(api, repo_id, head, files, card, token=token, retry=retry, footers=footers)
    if not found:
        return {}
    own_card = card is not None and card_origin(card) == "generated"
    ours = {CARD_PATH} if own_card else set()
    ours |= {path for path in files if is_own_shard(path) and path not in found} | set(PREVIEW_PATHS.values())
    return resolve_splits((p for p in files if p not in ours), found, None if own_card else card)


def _check_access(api: HfApi, repo_id: str, token: str | None, retry: RetryPolicy, *, write: bool) -> None:
    """Ask the Hub whether the token may read (or write to) the repo (`HfApi.auth_check`); an HTTP error if not
    (a `GatedRepoError` for a gated repo the user may not read).

    A Hub without that endpoint (404) is not asked again: the reads and the commit that follow say what they meet.
    """
    what = f"check {'write' if write else 'read'} access to {'' if write else 'the gated repo '}{repo_id}"
    try:
        _retry(
            retry,
            what,
            lambda: api.auth_check(repo_id, repo_type="dataset", token=token, write=write),
            passthrough=(403, 404),
            endpoint=api.endpoint,
        )
    except HfHubHTTPError as error:
        if isinstance(error, GatedRepoError) or _status(error) != 404:
            raise
        logger.debug(
            "%s has no auth-check endpoint (%s); the commit will say whether the token may write",
            api.endpoint,
            _describe(error),
        )


def _check_write(api: HfApi, repo_id: str, state: RemoteState, me: _Me, token: str, retry: RetryPolicy) -> None:
    """Refuse a repo the token may not write to, as the commit (or the repo's creation) would after the build.

    An existing repo: `auth_check(write=True)`; a 403 there is said here (a gated repo the user may read but
    not write, in words of its own; any other by `_explain_access`). A repo to create: its namespace must be
    the user's or one of their organizations (whoami's `orgs`); whether the token may write there is for the
    Hub to say when it is created.
    """
    namespace, name = repo_id.split("/")
    if not state.exists:
        if me.namespaces is not None and namespace not in me.namespaces:
            orgs = ", ".join(repr(org) for org in sorted(me.namespaces - {me.name})) or "none"
            raise PublishError(
                f"user {me.name!r} may not write to {repo_id}: the repo does not exist, and creating it needs write "
                f"rights in {namespace!r}, which is neither the user's namespace nor one of their organizations "
                f"({orgs}); expected a token with write access to the namespace {namespace!r}; {NOTHING_PUBLISHED}; "
                f"use the token of a member of {namespace!r} with write rights, or publish to {me.name}/{name}"
            )
        return
    try:
        _check_access(api, repo_id, token, retry, write=True)
    except HfHubHTTPError as error:
        if not state.gated or isinstance(error, GatedRepoError) or _status(error) != 403:
            raise
        raise PublishError(
            f"user {me.name!r} may read the gated dataset {repo_id} (access was granted) but not write to it (403 "
            f"from {api.endpoint}: {_server_message(error)}); expected a token with write access to the namespace "
            f"{namespace!r}; {NOTHING_PUBLISHED}; use the token of a member of {namespace!r} with write rights, or "
            f"publish to {own_repo(me.name, repo_id)}"
        ) from error


def remote_splits(remote: RemoteState) -> dict[str, dict[str, list[str]]]:
    """`{config: {split: shard paths}}` of the v2 shards the remote holds (v1 files left out)."""
    config_of = {folder: config for config, folder in CONFIG_DIRS.items()}
    splits: dict[str, dict[str, list[str]]] = {}
    for path in sorted(remote.files):
        shard = SHARD_RE.fullmatch(path)
        if shard and shard["dir"] in config_of and path not in remote.v1_files:
            splits.setdefault(config_of[shard["dir"]], {}).setdefault(shard["split"], []).append(path)
    return splits


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
        if content_type.startswith("text/html") and response.content.lstrip()[:15].lower().startswith(HTML_STARTS):
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


@dataclass(frozen=True)
class _Me:
    """Who the token belongs to, as whoami says: the name, and the namespaces (the user's and their
    organizations'; None when the answer lists no organizations)."""

    name: str
    namespaces: frozenset[str] | None


def _check_token(api: HfApi, token: str, retry: RetryPolicy) -> str:
    """The user name of `token`, once the Hub has accepted it and it is not read-only."""
    return _whoami(api, token, retry).name


def _whoami(api: HfApi, token: str, retry: RetryPolicy) -> _Me:
    """Who `token` belongs to, once the Hub has accepted it and it is not read-only."""
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
    orgs = me.get("orgs")
    names = [org.get("name") for org in orgs if isinstance(org, dict)] if isinstance(orgs, list) else None
    namespaces = None if names is None else frozenset({me["name"], *(n for n in names if isinstance(n, str))})
    return _Me(me["name"], namespaces)
