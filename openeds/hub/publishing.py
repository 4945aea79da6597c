"""Publishing: the one commit of a publication and its tags (create the repo, upload, commit, tag).

`publish` checks its inputs and reads the remote (unless push.py did, `openeds.hub.remote.connect`),
plans the commit (`openeds.hub.planning`), publishes nothing if the remote already holds it (by the
records of the shards' bytes, which are then checked by a read), else uploads the LFS files the Hub
lacks (huggingface_hub retries each request of that itself), checks what the upload computed against
the plan and the records (`openeds.hub.verify`), makes ONE commit pinned to the inspected head, so the
Hub never shows a card naming files it lacks, checks the commit's files against the plan, and tags it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError

from openeds.hub.conversion import check_v1_head, check_v1_tag, refuse_mixing
from openeds.hub.errors import (
    DEFAULT_RETRY,
    NOTHING_PUBLISHED,
    PublishError,
    _classify,
    _describe,
    _explain_access,
    _lfs_refusals,
    _not_the_api,
    _not_the_hub,
    _refused,
    _retry,
    _status,
    _storage_refusal,
    _token_rejected,
)
from openeds.hub.planning import (
    _names,
    check_card,
    check_tag,
    check_tag_free,
    collect_local_files,
    foreign_files,
    holds,
    next_publication_tag,
    plan_operations,
    require_token,
    shard_records,
)
from openeds.hub.remote import V1_TAG, RemoteState, _check_token, check_repo_id, connect, inspect_remote
from openeds.hub.verify import check_against_records, check_commit, refuse_ignored
from openeds.hub.xet import short_xet_error, use_xet_settings, uses_xet, watch, xet_status, xet_target
from openeds.layout import CARD_PATH, PREVIEW_PATHS, split_prefix
from openeds.retry import RetryPolicy, describe_timeout
from openeds.stages import during

logger = logging.getLogger(__name__)


DEFAULT_COMMIT_MESSAGE: Final = "Publish OpenEDS precomputed v2"


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    commit: str  # sha of the publication commit (the unchanged head if nothing changed)
    commit_url: str
    additions: tuple[str, ...]  # paths sent; the client leaves unchanged files out of the commit
    deletions: tuple[str, ...]
    tags: tuple[str, ...]  # tags this publication created, in order
    changed: bool = True  # False: the repo already held this data; no commit was made
    at: str = ""  # what names the publication: its tag(s), else its commit sha
    tag_not_created: str | None = None  # the caller's tag, when the data was already published and tagged
    v1_removed: tuple[str, ...] = ()  # the v1 data files the commit removed from `main` (kept at revision `v1`)

    def line(self) -> str:
        """What push.py prints after `published: `."""
        if self.changed:
            said = [f"tags: {', '.join(self.tags)}"] if self.tags else []
            if self.v1_removed:
                files = f"{len(self.v1_removed)} v1 file{'' if len(self.v1_removed) == 1 else 's'}"
                said.append(f"the {files} left main and stay at revision {V1_TAG!r}")
            return self.commit_url + (f" ({'; '.join(said)})" if said else "")
        if self.tags:
            return (
                f"nothing to commit: {self.repo_id} already holds this data at {self.commit[:12]}; "
                f"tagged it {', '.join(self.tags)} (an earlier run stopped before tagging it)"
            )
        line = f"nothing to publish: {self.repo_id} already holds this data at {self.at}"
        if self.tag_not_created:
            line += f"; tag {self.tag_not_created!r} not created: there is no new publication to name"
        return line


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
    remote: RemoteState | None = None,
    replace_card: bool = False,
    raw_splits: Collection[str] | None = None,
) -> PublishResult:
    """Publish the splits `splits_by_config` (e.g. `{"pupil": ["test"]}`) of `local_dir` to the dataset repo `repo_id`.

    `api` is the one seam for the Hub client (default: `HfApi()`, so `HF_ENDPOINT` applies); `token`
    defaults to the api's token, then to `HF_TOKEN` or the `hf auth login` token. `remote` is the
    state `connect` read (read here when not given). `tag` names the publication; by default each
    publication that changes the repo gets the next of `v2`, `v2.1`, `v2.2`, ... (see
    `next_publication_tag`); it must pass `check_tag`, and may not name another commit than the head
    (`check_tag_free`). A run that would change nothing (`holds`) makes no commit and no tag, unless the
    head is untagged (an earlier run stopped between its commit and its tag): it is tagged. A `tag` that
    names the head already is refused if the run would commit (push.py says so before the build:
    `openeds.hub.kept.check_tag_at_head`). A remote card a person wrote or edited is replaced only with `replace_card`
    (`check_card`). Remote files this tool did not write stay, and a warning names them.

    A repo holding v1 data (`RemoteState.v1_files`, found by content) is converted
    (`openeds.hub.conversion`): its v1 state is tagged `v1` first, and the commit removes every v1 file
    from `main`. Refused: converting only some of the v1 splits (`refuse_mixing`; `raw_splits`, the
    splits of the raw data when known: a v1 split it lacks is not refused but removed from `main` with the
    rest), v1 files beside this tool's v2 at a head without a tag `v1` (`check_v1_head`), and v1 files that
    a tag `v1` on another commit does not hold (`check_v1_tag`).
    """
    check_repo_id(repo_id)
    if tag is not None:
        check_tag(tag)
    files = collect_local_files(local_dir, splits_by_config)
    prefixes = [split_prefix(config, split) for config, splits in splits_by_config.items() for split in splits]
    # The sha256 recorded as each shard to publish was written; a shard without its record is refused here.
    recorded = shard_records(
        local_dir, {path: file for path, file in files.items() if path.startswith(tuple(prefixes))}
    )
    api = api or HfApi()
    token = require_token(api, repo_id, token)
    remote = remote or connect(api, repo_id, token=token, retry=retry)
    check_tag_free(repo_id, remote, tag)  # push.py checked it before the build already
    replaced = [PREVIEW_PATHS[config] for config in splits_by_config]  # type: ignore[index]
    if remote.v1_files:
        check_v1_head(repo_id, remote)
        refuse_mixing(repo_id, remote, splits_by_config, raw_splits)
        check_v1_tag(api, repo_id, remote, token=token, retry=retry)
        replaced += sorted(remote.v1_files)  # all of the v1 data goes, whatever its names and splits
    plan = plan_operations(files, remote.files, prefixes, replaced)
    url = f"{api.endpoint}/datasets/{repo_id}/commit/{remote.head}"
    # No file is read here: the no-op check compares the shards' records, and `upload_info.sha256` is left for the
    # upload to compute from the bytes it sends, then checked against the records (`openeds.hub.verify`).
    additions = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=file) for path, file in plan.additions.items()]

    with _explain_access(api, repo_id, remote.user or _check_token(api, token, retry)):
        if holds(remote, plan, recorded):
            # Nothing is uploaded, so nothing computes the hashes on the way: the shards are hashed by a read.
            check_against_records(local_dir, additions, recorded, how="read")
            if remote.head_tags:
                at = ", ".join(remote.head_tags)
                skipped = tag if tag is not None and tag not in remote.head_tags else None
                return PublishResult(
                    repo_id, remote.head, url, (), (), (), changed=False, at=at, tag_not_created=skipped
                )
            # An earlier run committed this very data and stopped before tagging it: tag it now.
            publication_tag = tag if tag and tag not in remote.tags else next_publication_tag(remote.tags)
            _create_tag(api, repo_id, publication_tag, remote.head, token, retry)
            return PublishResult(
                repo_id, remote.head, url, (), (), (publication_tag,), changed=False, at=publication_tag
            )

        if tag is not None and tag in remote.tags:
            raise PublishError(
                f"tag {tag!r} already names the head of {repo_id} ({remote.head[:12]}), and this publication is a "
                f"new commit; expected a new tag for a new publication (a tag is never moved); {NOTHING_PUBLISHED}; "
                f"pass another --tag, or none for the next one ({next_publication_tag(remote.tags)})"
            )
        if hand_card := check_card(repo_id, remote, replace_card=replace_card):
            logger.warning(
                "Replacing the card %s of %s, which was written or edited by hand (%s), as --replace-card asks; "
                "the replaced card stays readable at %s/datasets/%s/blob/%s/%s",
                CARD_PATH,
                repo_id,
                hand_card,
                api.endpoint,
                repo_id,
                remote.head,
                CARD_PATH,
            )
        if kept := foreign_files(remote.files, plan):
            logger.warning(
                "%s holds %d files this tool did not write; they stay as they are, and the card's data_files do "
                "not read them: %s",
                repo_id,
                len(kept),
                _names(kept),
            )
        if not remote.exists:
            _retry(
                retry,
                f"create the dataset repo {repo_id}",
                lambda: api.create_repo(repo_id, repo_type="dataset", exist_ok=True, token=token),
                endpoint=api.endpoint,
            )
            remote = dataclasses.replace(inspect_remote(api, repo_id, token=token, retry=retry), user=remote.user)
        created: list[str] = []
        if remote.v1_files and V1_TAG not in remote.tags:
            _create_tag(api, repo_id, V1_TAG, remote.head, token, retry)
            created.append(V1_TAG)
        _upload(api, repo_id, additions, token, retry)
        refuse_ignored(repo_id, additions)  # what the commit would drop silently
        check_against_records(local_dir, additions, recorded)  # the hashes the upload computed, before the commit
        deletions = [CommitOperationDelete(path_in_repo=path, is_folder=False) for path in plan.deletions]
        commit, commit_url = _commit(api, repo_id, [*additions, *deletions], commit_message, remote.head, token, retry)
        check_commit(api, repo_id, commit, additions, plan.deletions, token=token, retry=retry)
        publication_tag = tag or next_publication_tag(remote.tags)
        _create_tag(api, repo_id, publication_tag, commit, token, retry, published=commit)
        created.append(publication_tag)
    logger.info("Published %s %s as commit %s", repo_id, dict(splits_by_config), commit)
    removed = tuple(path for path in plan.deletions if path in remote.v1_files)
    return PublishResult(
        repo_id,
        commit,
        commit_url,
        tuple(plan.additions),
        tuple(plan.deletions),
        tuple(created),
        at=publication_tag,
        v1_removed=removed,
    )


@during("uploading the files to {repo_id}")
def _upload(api: HfApi, repo_id: str, additions: list[CommitOperationAdd], token: str, retry: RetryPolicy) -> None:
    """Upload the LFS files the Hub does not hold yet: through Xet when huggingface_hub takes that path (hf_xet
    bounded by `retry` and watched: `openeds.hub.xet`), else through LFS (the client retries each request)."""
    size = sum(operation.upload_info.size for operation in additions)
    xet = uses_xet()
    logger.info(
        "Uploading what the Hub lacks of %d files (%.1f MB) to %s through %s",
        len(additions),
        size / 1e6,
        repo_id,
        "Xet" if xet else "LFS",
    )
    if xet:
        use_xet_settings(retry)
    watched = None
    try:
        with (
            watch(retry, lambda idle: _xet_stalled(repo_id, idle, retry))
            if xet
            else contextlib.nullcontext() as watched
        ):
            api.preupload_lfs_files(repo_id, additions, repo_type="dataset", token=token)
    except Exception as error:
        if watched is not None and watched.fired:
            raise PublishError(watched.line()) from error
        if xet and isinstance(error, (OSError, RuntimeError)) and not isinstance(error, PublishError):
            if (problem := _xet_problem(api, repo_id, error)) is not None:
                raise problem from error
        status = _status(error)
        if status == 401:
            raise _token_rejected(api.endpoint, f"upload the files to {repo_id}", NOTHING_PUBLISHED) from error
        if refused := _lfs_refusals(error):
            paths = {op.upload_info.sha256.hex(): op.path_in_repo for op in additions}
            said = "; ".join(f"{paths.get(oid, 'object ' + oid)}: {message}" for oid, message in refused)
            raise PublishError(
                f"could not upload the files to {repo_id}: the Hub's LFS batch API refused {len(refused)} of them "
                f"({said[:500]}); expected it to take every file; {NOTHING_PUBLISHED}; re-running will not help "
                "until what the Hub's message names is fixed"
            ) from error
        if status == 403 and (refusal := _storage_refusal(error)):
            url, said = refusal
            file = next((op.path_in_repo for op in additions if op.upload_info.sha256.hex() in url), "a file")
            raise PublishError(
                f"could not upload {file} to {repo_id}: the storage refused it (HTTP 403 for PUT {url}: {said}); the "
                "upload URL the Hub handed out has expired or was refused, which says nothing of the token's rights; "
                f"expected the storage to take the file; {NOTHING_PUBLISHED}; re-run the same command: the Hub hands "
                "out fresh upload URLs, and the files already uploaded are not sent again"
            ) from error
        if status == 403:
            raise  # explained by _explain_access
        if seen := _not_the_api(error):
            raise _not_the_hub(f"upload the files to {repo_id}", api.endpoint, seen, NOTHING_PUBLISHED) from error
        resume = "re-run the same command: files already uploaded are not sent again"
        if _classify(error) is not None:
            raise PublishError(
                f"uploading to {repo_id} failed after the client's retries "
                f"({describe_timeout(error) or _describe(error)}); "
                f"expected the Hub to accept the files; {NOTHING_PUBLISHED}; {resume}"
            ) from error
        if status is not None:
            raise _refused(f"upload the files to {repo_id}", error, NOTHING_PUBLISHED) from error
        raise


_XET_RESUME: Final = "re-run the same command: what hf_xet uploaded is not sent again"


def _xet_stalled(repo_id: str, idle: float, retry: RetryPolicy) -> str:
    """The line of an upload the watchdog stopped (`openeds.hub.xet.watch`)."""
    return (
        f"uploading to {repo_id} through Xet moved no data for {idle:.0f} s (hf_xet waited for an answer that did not "
        f"come: to a xorb upload, or to the final shard upload, which it does not time out); expected progress within "
        f"the retry budget "
        f"({retry.total:g} s, --retry-timeout) plus one timeout ({retry.timeout:g} s, --timeout); {NOTHING_PUBLISHED}; "
        f"{_XET_RESUME}, or set HF_HUB_DISABLE_XET=1 to publish through LFS"
    )


def _xet_problem(api: HfApi, repo_id: str, error: Exception) -> PublishError | None:
    """One line for an error hf_xet raised (a built-in `ConnectionError`, `TimeoutError`, `PermissionError`,
    `OSError` or `RuntimeError`), by what failed and the status it names; None for an error of another kind."""
    if type(error).__module__ not in ("builtins", "hf_xet"):
        return None
    what, status, seen = xet_target(error), xet_status(error), short_xet_error(error)
    upload = f"upload the files to {repo_id} through Xet"
    if status == 401 or isinstance(error, PermissionError):
        return _token_rejected(api.endpoint, f"{upload} ({what}: {seen})", NOTHING_PUBLISHED)
    if status == 403:
        return PublishError(
            f"could not {upload}: {what} refused it (403 Forbidden: {seen}); expected a token that may write to "
            f"{repo_id}; {NOTHING_PUBLISHED}; use a token with write access to {repo_id.split('/')[0]} "
            "(HF_TOKEN or `hf auth login --force`)"
        )
    if status is None and re.search(r"error decoding response body", seen):  # not the JSON of the Xet API
        return _not_the_hub(
            upload,
            api.endpoint,
            f"an answer that is neither its Xet token nor its Xet service's ({seen})",
            NOTHING_PUBLISHED,
        )
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return PublishError(
            f"could not {upload}: {what} refused it (HTTP {status}: {seen}); expected it to accept the files; "
            f"{NOTHING_PUBLISHED}; re-running will not help; set HF_HUB_DISABLE_XET=1 to publish through LFS, "
            "or report it with this message"
        )
    return PublishError(
        f"uploading to {repo_id} through Xet failed after hf_xet's retries ({what}: {seen}); expected the Xet "
        f"storage service to accept the files within the retry budget (--retry-timeout) and each request within "
        f"--timeout; {NOTHING_PUBLISHED}; {_XET_RESUME}"
    )


@during("committing to {repo_id}")
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
        except Exception as error:
            answer_lost = answer_lost or _not_the_api(error) is not None  # not the Hub's answer: unknown either
            raise
        return info.oid, info.commit_url

    def outcome() -> str:
        if answer_lost:
            return (
                "the commit may have landed (an answer was lost on the way); re-run the same command: "
                "it finds a landed commit and only tags it"
            )
        return f"{NOTHING_PUBLISHED} (the commit is atomic; the files already uploaded are not sent again)"

    try:
        return _retry(
            retry, f"commit to {repo_id}", attempt, passthrough=(403, 409, 412), outcome=outcome, endpoint=api.endpoint
        )
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


@during("tagging {repo_id}@{revision:.12} as {tag!r}")
def _create_tag(
    api: HfApi, repo_id: str, tag: str, revision: str, token: str, retry: RetryPolicy, *, published: str | None = None
) -> None:
    """Tag `revision`; `published` is the sha of this run's commit, for the message if tagging fails."""
    outcome = (
        f"the data is published as commit {published[:12]} but not tagged; re-run the same command to tag it "
        "(it commits nothing again)"
        if published
        else NOTHING_PUBLISHED
    )
    # exist_ok: a retry may find the tag made by an attempt whose answer was lost (existing tags were checked before).
    _retry(
        retry,
        f"tag {repo_id}@{revision[:12]} as {tag!r}",
        lambda: api.create_tag(repo_id, tag=tag, revision=revision, repo_type="dataset", token=token, exist_ok=True),
        outcome=outcome,
        endpoint=api.endpoint,
    )
    logger.info("Tagged %s@%s as %s", repo_id, revision, tag)
