"""Publish a locally built dataset folder to a Hugging Face Hub dataset repo (the I/O edge of push.py).

The local folder holds exactly what goes to the Hub, in the layout of `openeds.layout`.

`publish` replaces the remote shards of the splits it is given, keeps the other splits' files
untouched, and always rewrites the card and the preview. The steps:

1. check the token (`whoami`) and create the repo if needed;
2. inspect the remote: head commit, files, tags, and whether it holds v1 data (flat list columns,
   no `preprocessed` column);
3. plan the operations (`plan_operations`, pure); refuse a push that would leave v1 splits beside v2 splits;
4. tag the v1 head `v1` if the repo is v1 and has no such tag;
5. upload the LFS files (`preupload_lfs_files`): objects the Hub already holds are not sent again,
   so re-running a killed upload resumes it;
6. make ONE commit with every addition, deletion and the card, pinned to the inspected head
   (`parent_commit`), so the Hub never shows a card naming files it lacks;
7. tag the publication: the caller's tag, else `v2` the first time and `v2.1`, `v2.2`, ... after.

Retries: huggingface_hub already retries each HTTP call of the LFS upload (preupload, LFS batch, PUT,
verify: 5 retries, 1-8 s apart) and this module does not wrap those. The other calls (whoami, create
repo, repo info, refs, card download, commit, tag) are sent once by the client; `RetryPolicy` retries
them on connection errors, 5xx and 429 with exponential backoff, jitter and a bounded total time.

The token is never printed or logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

import httpx2
import pyarrow.parquet as pq
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    HfApi,
    HfFileSystem,
    constants,
    get_token,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from openeds.layout import CARD_PATH, CONFIG_DIRS, PREVIEW_PATH, SHARD_RE, complete_shard_set, split_prefix
from openeds.retry import (
    GaveUp,
    RetryPolicy,
    Transient,
    call_with_retries,
    endpoint_of,
    error_chain,
    is_unreachable,
    parse_retry_after,
)
from openeds.schema import DEFAULT_CONFIG

logger = logging.getLogger(__name__)

V1_TAG: Final = "v1"
V2_TAG: Final = "v2"
V2_COLUMN: Final = "preprocessed"  # the column v2 added; v1 data has none
DEFAULT_COMMIT_MESSAGE: Final = "Publish OpenEDS precomputed v2"
NOTHING_PUBLISHED: Final = "nothing was published"

# A v1 shard as `push_to_hub` names them; older versions append a fingerprint: data/train-00000-of-00003-ab12.parquet
_V1_SHARD = re.compile(r"(?:.*/)?(?P<split>\w+(?:\.\w+)*)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet")
#: What to do after the Hub refused a request (a status retrying cannot change).
_REFUSAL_ADVICE: Final = {
    400: "re-running will not help: the Hub found the request malformed; report it with the Hub's message",
    413: "re-running will not help: the request is too large for the Hub; publish fewer splits per run (--splits)",
    422: "re-running will not help until what the Hub's message names is fixed",
}


T = TypeVar("T")


class PublishError(RuntimeError):
    """A publication that cannot go on. One line: what was wrong, the value seen, what was expected, the fix."""


class Plan(NamedTuple):
    """One commit: files to add or overwrite (path in repo -> local file) and paths to delete."""

    additions: dict[str, Path]
    deletions: list[str]


DEFAULT_RETRY: Final = RetryPolicy()


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    commit: str  # sha of the publication commit (the unchanged head if nothing changed)
    commit_url: str
    additions: tuple[str, ...]  # paths sent; the client leaves unchanged files out of the commit
    deletions: tuple[str, ...]
    tags: tuple[str, ...]  # tags this publication created, in order


@dataclass(frozen=True)
class RemoteState:
    head: str  # sha of `main` when inspected
    files: frozenset[str]
    tags: Mapping[str, str]  # tag name -> the commit it points at
    v1_files: frozenset[str]  # the parquet files if they hold v1 data; empty for v2 data or no data


def next_publication_tag(tags: Iterable[str]) -> str:
    """`v2` for the first v2 publication, then `v2.1`, `v2.2`, ... (one past the highest seen)."""
    tags = set(tags)
    if V2_TAG not in tags:
        return V2_TAG
    minors = [int(t.split(".", 1)[1]) for t in tags if re.fullmatch(rf"{V2_TAG}\.\d+", t)]
    return f"{V2_TAG}.{max(minors, default=0) + 1}"


def plan_operations(
    local_files: Mapping[str, Path], remote_files: Iterable[str], replaced_prefixes: Iterable[str]
) -> Plan:
    """The additions and deletions of one publication.

    The card, the preview and the local files under a replaced prefix are added (overwriting the
    remote ones); the remote files under a replaced prefix that are not added are deleted; every
    other remote file stays. A prefix is a split's shard prefix such as `data/test-` (split names
    hold no `-`, so it never matches another split) or the full path of one file.
    """
    prefixes = tuple(replaced_prefixes)
    additions = {
        path: local_files[path]
        for path in sorted(local_files)
        if path in (CARD_PATH, PREVIEW_PATH) or path.startswith(prefixes)
    }
    deletions = sorted(path for path in remote_files if path.startswith(prefixes) and path not in additions)
    return Plan(additions, deletions)


def collect_local_files(local_dir: Path, splits_by_config: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """Every file of `local_dir` by its path in the repo, after checking the card, the preview and the pushed shards."""
    files = {p.relative_to(local_dir).as_posix(): p for p in sorted(local_dir.rglob("*")) if p.is_file()}
    for required in (CARD_PATH, PREVIEW_PATH):
        if required not in files:
            raise PublishError(
                f"{local_dir / required} is missing; expected the card and the preview in the folder to publish; "
                "build the folder again"
            )
    folders = sorted(CONFIG_DIRS.values())
    for path in files:
        shard = SHARD_RE.fullmatch(path)
        if path not in (CARD_PATH, PREVIEW_PATH) and not (shard and shard["dir"] in folders):
            raise PublishError(
                f"{local_dir / path} is not a file to publish; expected only {CARD_PATH}, {PREVIEW_PATH} and "
                f"{{{','.join(folders)}}}/{{split}}-{{i:05d}}-of-{{n:05d}}.parquet; remove it from {local_dir}"
            )
    for config, splits in splits_by_config.items():
        for prefix in (split_prefix(config, split) for split in splits):
            _check_shards(local_dir, prefix, sorted(p for p in files if p.startswith(prefix)))
    return files


def _check_shards(local_dir: Path, prefix: str, paths: list[str]) -> None:
    """The shards of one split are exactly {prefix}00000-of-N ... {prefix}(N-1)-of-N."""
    if not paths:
        raise PublishError(
            f"no shard {local_dir / prefix}*.parquet; expected the split to be built before it is pushed; "
            "build it or leave it out of the splits to push"
        )
    expected = complete_shard_set(prefix, paths)
    if paths != expected:
        raise PublishError(
            f"shards {local_dir / prefix}* are {paths}; expected the {len(expected)} shards {expected[0]} ... "
            f"{expected[-1]}; build the split again"
        )


def publish(
    local_dir: Path,
    repo_id: str,
    *,
    splits_by_config: Mapping[str, Sequence[str]],
    api: HfApi | None = None,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    tag: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> PublishResult:
    """Publish the splits `splits_by_config` (e.g. `{"pupil": ["test"]}`) of `local_dir` to the dataset repo `repo_id`.

    `api` is the one seam for the Hub client (default: `HfApi()`, so `HF_ENDPOINT` applies); `token`
    defaults to the api's token, then to `HF_TOKEN` or the `hf auth login` token. `tag` names the
    publication; by default each publication that changes the repo gets the next of `v2`, `v2.1`, `v2.2`, ...
    (see `next_publication_tag`); a re-run that changes nothing makes no commit and no tag.
    """
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise PublishError(
            f"repo id {repo_id!r} is not of the form namespace/name; expected e.g. Conner/openeds-precomputed"
        )
    files = collect_local_files(local_dir, splits_by_config)
    api = api or HfApi()
    token = token or (api.token if isinstance(api.token, str) else None) or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found (HF_TOKEN is unset and `hf auth login` was not run); "
            f"expected a token with write access to {repo_id}; set HF_TOKEN or run `hf auth login`"
        )
    user = _check_token(api, token, retry)
    with _explain_access(api, repo_id, user):
        _retry(
            retry,
            f"create the dataset repo {repo_id}",
            lambda: api.create_repo(repo_id, repo_type="dataset", exist_ok=True, token=token),
        )
        remote = inspect_remote(api, repo_id, token=token, retry=retry)
        if tag is not None and tag in remote.tags:
            raise PublishError(
                f"tag {tag!r} already exists on {repo_id}; expected a new tag for this publication; "
                "pick another tag or delete the old one"
            )
        prefixes = [split_prefix(config, split) for config, splits in splits_by_config.items() for split in splits]
        if remote.v1_files:
            _refuse_mixing(repo_id, remote.v1_files, splits_by_config.get(DEFAULT_CONFIG, ()))
            prefixes += sorted(remote.v1_files)  # all of the v1 data goes, whatever its file names
        plan = plan_operations(files, remote.files, prefixes)

        created: list[str] = []
        if remote.v1_files and V1_TAG not in remote.tags:
            _create_tag(api, repo_id, V1_TAG, remote.head, token, retry)
            created.append(V1_TAG)
        additions = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=file) for path, file in plan.additions.items()
        ]
        _upload(api, repo_id, additions, token)
        deletions = [CommitOperationDelete(path_in_repo=path, is_folder=False) for path in plan.deletions]
        commit, commit_url = _commit(api, repo_id, [*additions, *deletions], commit_message, remote.head, token, retry)
        # Tag the publication unless its commit already has a tag: a re-run that changed
        # nothing keeps the head, and a run killed between the commit and the tag is
        # completed by tagging that head now.
        if commit not in remote.tags.values():
            publication_tag = tag or next_publication_tag(remote.tags)
            _create_tag(api, repo_id, publication_tag, commit, token, retry, published=commit)
            created.append(publication_tag)
    logger.info("Published %s %s as commit %s", repo_id, dict(splits_by_config), commit)
    return PublishResult(repo_id, commit, commit_url, tuple(plan.additions), tuple(plan.deletions), tuple(created))


def inspect_remote(
    api: HfApi, repo_id: str, *, token: str | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> RemoteState:
    """Head, files and tags of `main`, and its parquet files if they hold v1 data."""
    info = _retry(retry, f"read the repo info of {repo_id}", lambda: api.dataset_info(repo_id, token=token))
    refs = _retry(
        retry, f"list the tags of {repo_id}", lambda: api.list_repo_refs(repo_id, repo_type="dataset", token=token)
    )
    head = info.sha or ""
    files = frozenset(sibling.rfilename for sibling in info.siblings or ())
    parquet = sorted(path for path in files if path.endswith(".parquet"))
    with_card = CARD_PATH in files
    v1 = bool(parquet) and V2_COLUMN not in _remote_columns(api, repo_id, head, with_card, parquet[0], token, retry)
    tags = {ref.name: ref.target_commit for ref in refs.tags}
    return RemoteState(head, files, tags, frozenset(parquet if v1 else ()))


def fetch_card(
    api: HfApi, repo_id: str, *, revision: str = "main", token: str | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> DatasetCard | None:
    """The dataset card of `repo_id` at `revision`, or None if the repo or its README.md does not exist.

    push.py reads its YAML (`card.data.dataset_info`, `card.data.configs`) to keep the split sizes of
    the splits it does not rebuild.
    """

    def download() -> DatasetCard | None:
        try:
            path = api.hf_hub_download(repo_id, CARD_PATH, repo_type="dataset", revision=revision, token=token)
        except (EntryNotFoundError, RepositoryNotFoundError):
            return None
        return DatasetCard.load(path, repo_type="dataset")

    try:
        return _retry(retry, f"download the card of {repo_id}", download)
    except Exception as error:
        if _status(error) == 401:  # the client wraps it in a LocalEntryNotFoundError
            raise _token_rejected(api) from error
        raise


def _remote_columns(
    api: HfApi, repo_id: str, head: str, with_card: bool, data_file: str, token: str | None, retry: RetryPolicy
) -> set[str]:
    """Columns of the remote data: from the card's `dataset_info.features`, else from the schema of `data_file`."""
    card = fetch_card(api, repo_id, revision=head, token=token, retry=retry) if with_card else None
    dataset_info = card.data.get("dataset_info") if card else None
    infos = dataset_info if isinstance(dataset_info, list) else [dataset_info] if dataset_info else []
    per_config = [{feature["name"] for feature in info.get("features") or () if "name" in feature} for info in infos]
    if any(per_config):
        return set.intersection(*filter(None, per_config))  # one config without the v2 column is v1 data

    def read_schema() -> set[str]:
        fs = HfFileSystem(endpoint=api.endpoint, token=token)
        with fs.open(f"datasets/{repo_id}@{head}/{data_file}", "rb") as file:  # ranged reads of the footer only
            return set(pq.read_schema(file).names)

    return _retry(retry, f"read the schema of {repo_id}/{data_file}", read_schema)


def _refuse_mixing(repo_id: str, v1_files: frozenset[str], pushed_splits: Sequence[str]) -> None:
    """Refuse a push that converts some of the v1 splits (all in the default config) but not all of them."""
    v1_splits = sorted({match["split"] for path in v1_files if (match := _V1_SHARD.fullmatch(path))})
    left = sorted(set(v1_splits) - set(pushed_splits))
    if left:
        raise PublishError(
            f"{repo_id} holds v1 data (no {V2_COLUMN!r} column) in splits {v1_splits} and this push converts "
            f"{sorted(pushed_splits)}, which would leave {left} as v1 beside v2 splits; "
            f"expected every v1 split converted at once; run push without --splits to convert every split"
        )


def _check_token(api: HfApi, token: str, retry: RetryPolicy) -> str:
    """The user name of `token`, once the Hub has accepted it and it is not read-only."""
    try:
        me = _retry(retry, "check the Hugging Face token", lambda: api.whoami(token=token), passthrough=(401,))
    except HfHubHTTPError as error:
        if _status(error) != 401:
            raise
        raise _token_rejected(api) from error
    if (me.get("auth") or {}).get("accessToken", {}).get("role") == "read":
        raise PublishError(
            f"the Hugging Face token of user {me['name']!r} is read-only (role 'read'); "
            "expected a token with write access; create one at https://huggingface.co/settings/tokens"
        )
    return me["name"]


def _token_rejected(api: HfApi) -> PublishError:
    return PublishError(
        f"the Hugging Face token was rejected by {api.endpoint} (401 Unauthorized); "
        "expected a valid token with write access; create one at https://huggingface.co/settings/tokens "
        "and set HF_TOKEN or run `hf auth login --force`"
    )


class _explain_access:
    """Turn a 401 or 403 from the Hub inside the block into one PublishError naming the user and the namespace."""

    def __init__(self, api: HfApi, repo_id: str, user: str) -> None:
        self.api, self.repo_id, self.user = api, repo_id, user

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        if not isinstance(error, HfHubHTTPError) or (status := _status(error)) not in (401, 403):
            return
        namespace, name = self.repo_id.split("/")
        raise PublishError(
            f"user {self.user!r} may not write to {self.repo_id} ({status} from {self.api.endpoint}); "
            f"expected a token with write access to the namespace {namespace!r}; "
            f"use the token of a member of {namespace!r} with write rights, or publish to {self.user}/{name}"
        ) from error


def _upload(api: HfApi, repo_id: str, additions: list[CommitOperationAdd], token: str) -> None:
    """Upload the LFS files the Hub does not hold yet (the client shows progress bars and retries each request)."""
    size = sum(operation.upload_info.size for operation in additions)
    logger.info("Uploading what the Hub lacks of %d files (%.1f MB) to %s", len(additions), size / 1e6, repo_id)
    try:
        api.preupload_lfs_files(repo_id, additions, repo_type="dataset", token=token)
    except Exception as error:
        status = _status(error)
        if status in (401, 403):
            raise  # explained by _explain_access
        resume = "re-run the same command: files already uploaded are not sent again"
        if _classify(error) is not None:
            raise PublishError(
                f"uploading to {repo_id} failed after the client's retries ({_describe(error)}); "
                f"expected the Hub to accept the files; {NOTHING_PUBLISHED}; {resume}"
            ) from error
        if status is not None:
            raise _refused(f"upload the files to {repo_id}", error, NOTHING_PUBLISHED) from error
        raise


def _commit(
    api: HfApi,
    repo_id: str,
    operations: list[CommitOperationAdd | CommitOperationDelete],
    message: str,
    head: str,
    token: str,
    retry: RetryPolicy,
) -> tuple[str, str]:
    """Make the publication commit on top of `head`; returns its sha and URL."""
    attempts = 0
    answer_lost = False

    def attempt() -> tuple[str, str]:
        nonlocal attempts, answer_lost
        attempts += 1
        try:
            info = api.create_commit(
                repo_id, operations, commit_message=message, repo_type="dataset", parent_commit=head, token=token
            )
        except HfHubHTTPError as error:
            # A retry finds the head moved if the previous attempt landed but its answer was lost.
            if attempts > 1 and _status(error) in (409, 412) and (sha := _landed(api, repo_id, head, message, token)):
                return sha, f"{api.endpoint}/datasets/{repo_id}/commit/{sha}"
            raise
        except httpx2.TransportError:
            answer_lost = True  # the Hub may have made the commit
            raise
        return info.oid, info.commit_url

    def outcome() -> str:
        if answer_lost:
            return (
                "the commit may have landed (an answer was lost on the way); re-run the same command: "
                "it finds a landed commit and only tags it"
            )
        return f"{NOTHING_PUBLISHED} (the commit is atomic)"

    try:
        return _retry(retry, f"commit to {repo_id}", attempt, passthrough=(401, 403, 409, 412), outcome=outcome)
    except HfHubHTTPError as error:
        if _status(error) not in (409, 412):
            raise
        raise PublishError(
            f"the head of {repo_id} moved from {head} during the upload (another commit landed); "
            f"expected it unchanged; {NOTHING_PUBLISHED}; "
            "re-run the same command: files already uploaded are not sent again"
        ) from error


def _landed(api: HfApi, repo_id: str, parent: str, message: str, token: str) -> str | None:
    """The sha of the head of `main` if it is a commit titled `message` right on top of `parent`.

    Transient errors go to the retry of the commit (which then asks again); any other is one line.
    """
    try:
        commits = api.list_repo_commits(repo_id, repo_type="dataset", token=token)
    except HfHubHTTPError as error:
        if _classify(error) is not None:
            raise
        raise _refused(
            f"check whether the commit to {repo_id} landed after its answer was lost",
            error,
            "the commit may have landed",
            advice="re-run the same command: it finds a landed commit and only tags it",
        ) from error
    if len(commits) >= 2 and commits[0].title == message and commits[1].commit_id == parent:
        return commits[0].commit_id
    return None


def _create_tag(
    api: HfApi, repo_id: str, tag: str, revision: str, token: str, retry: RetryPolicy, *, published: str | None = None
) -> None:
    """Tag `revision`; `published` is the sha of this run's commit, for the message if tagging fails."""
    outcome = (
        f"the data is published as commit {published[:12]} but not tagged; re-run the same command to tag it"
        if published
        else NOTHING_PUBLISHED
    )
    # exist_ok: a retry may find the tag made by an attempt whose answer was lost (existing tags were checked before).
    _retry(
        retry,
        f"tag {repo_id}@{revision[:12]} as {tag!r}",
        lambda: api.create_tag(repo_id, tag=tag, revision=revision, repo_type="dataset", token=token, exist_ok=True),
        outcome=outcome,
    )
    logger.info("Tagged %s@%s as %s", repo_id, revision, tag)


# -- errors and retries --------------------------------------------------------------------------


def _status(error: BaseException) -> int | None:
    """The HTTP status of the first response in the chain of `error`, if any."""
    for link in error_chain(error):
        if isinstance(status := getattr(getattr(link, "response", None), "status_code", None), int):
            return status
    return None


def _server_message(error: BaseException) -> str:
    for link in error_chain(error):
        if isinstance(link, HfHubHTTPError) and link.server_message:
            return " ".join(link.server_message.split())
    return _describe(error)


def _describe(error: BaseException) -> str:
    first_line = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _classify(error: Exception) -> Transient | None:
    """A 5xx, a 408 or 429, or a transport error is worth another try; anything else is not."""
    if isinstance(error, PublishError):
        return None
    status = _status(error)
    if status is not None:
        if status in (408, 429) or status >= 500:
            response = next(link.response for link in error_chain(error) if getattr(link, "response", None) is not None)
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
            return Transient(f"HTTP {status}: {_server_message(error)}", retry_after)
        return None
    transport = next((link for link in error_chain(error) if isinstance(link, httpx2.TransportError)), None)
    if transport is None:
        return None
    root = list(error_chain(error))[-1]
    return Transient(_describe(root if root is not transport else transport), unreachable=is_unreachable(error))


def _refused(what: str, error: BaseException, outcome: str, *, advice: str | None = None) -> PublishError:
    """The one line for a request the Hub answered with a status that retrying cannot change."""
    status = _status(error)
    advice = advice or _REFUSAL_ADVICE.get(
        status or 0, "re-running will not help until the cause the Hub names is fixed"
    )
    return PublishError(
        f"could not {what}: the Hub answered HTTP {status}: {_server_message(error)}; "
        f"expected it to accept the request; {outcome}; {advice}"
    )


def _retry(
    policy: RetryPolicy,
    what: str,
    call: Callable[[], T],
    *,
    passthrough: Sequence[int] = (401, 403),
    outcome: str | Callable[[], str] = NOTHING_PUBLISHED,
) -> T:
    """`call()`, retried on transient errors within `policy`; every failure becomes one PublishError line.

    HTTP errors with a status in `passthrough` are re-raised for the caller to explain; `outcome`
    says what the failure leaves on the Hub (the default: nothing was published).
    """

    def said() -> str:
        return outcome() if callable(outcome) else outcome

    try:
        return call_with_retries(
            call,
            what=what,
            classify=_classify,
            policy=policy,
            on_retry=lambda failure, n, wait: logger.warning(
                "Could not %s (%s); retry %d in %.1f s", what, failure.description, n, wait
            ),
        )
    except GaveUp as gave_up:
        error = gave_up.__cause__ or gave_up
        if gave_up.last.unreachable:
            endpoint = endpoint_of(error) or constants.ENDPOINT
            raise PublishError(
                f"could not {what}: the network or the Hub endpoint {endpoint} is unreachable "
                f"({gave_up.last.description}; {gave_up.tally}); expected a connection to {endpoint}; "
                f"check the network connection, the proxy settings and HF_ENDPOINT, then re-run; {said()}"
            ) from error
        raise PublishError(
            f"could not {what}: {gave_up.last.description} ({gave_up.tally}); expected the Hub to answer; "
            f"{said()}; re-run later or with a longer --retry-timeout: files already uploaded are not sent again"
        ) from error
    except HfHubHTTPError as error:
        if _status(error) in passthrough:
            raise
        raise _refused(what, error, said()) from error

