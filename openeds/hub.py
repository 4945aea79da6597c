"""Publish a locally built dataset folder to a Hugging Face Hub dataset repo (the I/O edge of push.py).

The local folder holds exactly what goes to the Hub, in the layout of `openeds.layout`.

`publish` replaces the remote shards of the splits it is given, keeps the other splits' files
untouched, and rewrites the card and the preview picture of each config it is given. The steps:

1. check the inputs locally: the repo id (`check_repo_id`: namespace/name, and huggingface_hub's own
   `validate_repo_id`), the tag (`check_tag`: git's rules for tag names, which the Hub applies, and
   not a tag this tool reserves), the token (`require_token`: offline mode, a token at all, printable
   ASCII); then the token with the Hub (`whoami`: valid, not read-only);
2. read the remote once (`inspect_remote`): head commit, every file with its size and hash, tags,
   the card's text, and whether the data is v1 (flat list columns, no `preprocessed` column).
   A repo that does not exist, or has no README.md in its listing, has no card; a card the
   listing names but that cannot be downloaded is an error, never "no card". A gated repo the
   token may not read is said here, before anything is built;
3. plan the operations (`plan_operations`, pure); refuse a push that would leave v1 splits beside v2 splits.
   Only what this tool writes is deleted: the shards of the splits it replaces (the names
   `openeds.layout` gives them), its previews, and the v1 data files it converts. Every other file
   the repo holds stays, and the run names them (a warning line): a user's `data/train-notes.txt`,
   a parquet file of another name, anything outside `data/`, `full/` and `images/`. The card's
   `data_files` patterns match the shard names only, so such files are never read as data;
4. if the remote already holds the same data files and a card that differs at most in its
   provenance block (`openeds.card.comparable`), publish nothing: no commit, no tag.
   A card that still names `pupil` `default` (v1, and v2 cards before the rename) differs, so the
   push renames it in its one commit; the data files stay where they are;
5. the card: the remote README.md is replaced only if this tool wrote it and nobody edited it since
   (`openeds.card.card_origin`: its checksum line matches), or if it is the card of v1 data (it
   stays at revision `v1`). A card a person wrote or edited, or one from a version of this tool
   before the checksum, stops the run with one line, before anything is built when push.py calls
   `check_card` after `connect`; `replace_card=True` (push.py `--replace-card`) replaces it, and a
   warning names the revision where the replaced card stays readable;
6. create the repo if needed, tag the v1 head `v1` if the repo is v1 and has no such tag;
7. upload the LFS files (`preupload_lfs_files`): objects the Hub already holds are not sent again,
   so re-running a killed upload resumes it;
8. make ONE commit with every addition, deletion and the card, pinned to the inspected head
   (`parent_commit`), so the Hub never shows a card naming files it lacks;
9. tag the publication: the caller's tag, else `v2` the first time and `v2.1`, `v2.2`, ... after.

push.py calls `check_repo_id` and `check_tag` right after parsing its arguments, `connect` (steps 1-2)
and `check_card` before it fetches or builds anything, `kept_sizes` so that its card lists every split
the repo keeps with their real sizes, then `publish(..., remote=...)`.

Retries: huggingface_hub already retries each HTTP call of the LFS upload (preupload, LFS batch, PUT,
verify: 5 retries, 1-8 s apart) and this module does not wrap those. The other calls (whoami, create
repo, repo info, refs, card download, footers, commit, tag) are sent once by the client;
`openeds.retry.call_with_retries` retries them on connection errors, 5xx and 429 within the budgets of
a `RetryPolicy`. Every failure is a `PublishError` of one line naming the step, what the Hub said,
whether anything was published, and whether re-running helps. A remote that is not what it claims
is one such line naming the file or the endpoint: an answer that is not JSON (a captive portal, a
wrong HF_ENDPOINT), a card that is not UTF-8, a shard that is not parquet. A 401 after the token
check says the Hub rejected the token (revoked or expired during the run), a 403 that the user may
not write, a 403 `GatedRepo` that the repo is gated.

The token is never printed or logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

import httpx2
import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    constants,
    get_session,
    get_token,
    hf_hub_url,
    is_offline_mode,
)
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, validate_repo_id

from openeds.card import SplitSize, card_data, card_origin, comparable, rows_from_card
from openeds.layout import (
    CARD_PATH,
    CONFIG_DIRS,
    LOCK_NAME,
    LOCK_OWNER_NAME,
    PREVIEW_PATHS,
    SHARD_RE,
    complete_shard_set,
    split_prefix,
)
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

# A v1 shard as `push_to_hub` named them for the default config (v1 had no other), under `data/`; older
# versions of datasets append a fingerprint: data/train-00000-of-00003-ab12.parquet
_V1_SHARD = re.compile(r"data/(?P<split>\w+(?:\.\w+)*)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet")
#: Files of a repo that are neither this tool's nor a user's: the Hub writes .gitattributes.
_HUB_FILES: Final = (".gitattributes",)
#: How an HTML page starts (a captive portal's, a wrong endpoint's), never a dataset card.
_HTML_STARTS: Final = (b"<!doctype html", b"<html")
#: Characters git refuses in a ref name (`git check-ref-format`), besides control characters.
_REF_FORBIDDEN: Final = " ~^:?*[\\"
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
    changed: bool = True  # False: the repo already held this data; no commit was made
    at: str = ""  # what names the publication: its tag(s), else its commit sha
    tag_not_created: str | None = None  # the caller's tag, when the data was already published and tagged

    def line(self) -> str:
        """What push.py prints after `published: `."""
        if self.changed:
            return self.commit_url + (f" (tags: {', '.join(self.tags)})" if self.tags else "")
        if self.tags:
            return (
                f"nothing to commit: {self.repo_id} already holds this data at {self.commit[:12]}; "
                f"tagged it {', '.join(self.tags)} (an earlier run stopped before tagging it)"
            )
        line = f"nothing to publish: {self.repo_id} already holds this data at {self.at}"
        if self.tag_not_created:
            line += f"; tag {self.tag_not_created!r} not created: there is no new publication to name"
        return line


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


def tag_problem(tag: str) -> str | None:
    """Why the Hub refuses `tag` as a tag name, or None: git's rules for `refs/tags/{tag}`
    (`git check-ref-format`) and `git tag`'s own (no leading `-`)."""
    if not tag:
        return "it is empty"
    if tag.startswith("-"):
        return "it starts with '-'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in tag):
        return "it holds a control character"
    if bad := sorted({c for c in tag if c in _REF_FORBIDDEN}):
        return f"it holds {', '.join(map(repr, bad))}"
    for sequence in ("..", "@{", "//"):
        if sequence in tag:
            return f"it holds {sequence!r}"
    if tag.startswith("/") or tag.endswith("/"):
        return "it starts or ends with '/'"
    if tag.endswith("."):
        return "it ends with '.'"
    for part in tag.split("/"):
        if part.startswith("."):
            return f"its part {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"its part {part!r} ends with '.lock'"
    return None


def reserved_tag(tag: str) -> str | None:
    """Why `tag` may not name a publication although the Hub would take it, or None.

    `v1` (and `v1.N`, in any case) names the v1 data of a repo this tool converted, which the card
    says stays at revision `v1`; `main` and `HEAD`, a 40-digit hex name and a `refs/...` name already
    mean a branch, a commit or a ref as a revision, so a tag of that name would make it ambiguous.
    """
    if re.fullmatch(r"v1(?:\.\d+)*", tag, flags=re.IGNORECASE):
        return f"{V1_TAG!r} names the v1 data of a converted repo, which the card says stays at revision {V1_TAG!r}"
    if tag.lower() in ("main", "head") or re.fullmatch(r"[0-9a-f]{40}", tag) or tag.startswith("refs/"):
        return "as a revision it already names a branch, a commit or a ref, which the tag would make ambiguous"
    return None


def check_tag(tag: str) -> str:
    """`tag`, if the Hub accepts it as a tag name (`tag_problem`) and this tool does not reserve it
    (`reserved_tag`); else a PublishError. push.py checks `--tag` with it right after parsing."""
    if problem := tag_problem(tag):
        raise PublishError(
            f"tag {tag!r} is not a tag name the Hub accepts: {problem}; expected a git tag name such as "
            "'v2-final' (no spaces or control characters, none of ~^:?*[\\, no '..', '@{' or '//', no part "
            "starting with '.' or ending with '.lock'); pass another --tag"
        )
    if reason := reserved_tag(tag):
        raise PublishError(
            f"tag {tag!r} is reserved: {reason}; expected a tag of your own such as 'v2-final'; pass another "
            "--tag, or none for the next of v2, v2.1, ..."
        )
    return tag


def has_v1_revision(remote: RemoteState) -> bool:
    """Whether the repo has revision `v1` once `publish` is done: the tag exists, or the repo holds v1 data,
    which `publish` tags `v1` before its commit."""
    return V1_TAG in remote.tags or bool(remote.v1_files)


def next_publication_tag(tags: Iterable[str]) -> str:
    """`v2` for the first v2 publication, then `v2.1`, `v2.2`, ... (one past the highest seen)."""
    tags = set(tags)
    if V2_TAG not in tags:
        return V2_TAG
    minors = [int(t.split(".", 1)[1]) for t in tags if re.fullmatch(rf"{V2_TAG}\.\d+", t)]
    return f"{V2_TAG}.{max(minors, default=0) + 1}"


def plan_operations(
    local_files: Mapping[str, Path],
    remote_files: Iterable[str],
    replaced_prefixes: Iterable[str],
    replaced_files: Iterable[str] = (),
) -> Plan:
    """The additions and deletions of one publication.

    Added (overwriting the remote ones): the card, the local files under a replaced prefix, a split's
    shard prefix such as `data/test-` (split names hold no `-`, so it never matches another split),
    and the local `replaced_files` (a config's preview). Deleted: the remote shards under a replaced
    prefix, named as `openeds.layout.shard_path` names them, and the remote `replaced_files` (the v1
    data files of a conversion), unless added. Every other remote file stays, whatever its name:
    `data/test-notes.txt` or `data/test-extra.parquet` is not a shard of this tool.
    """
    prefixes = tuple(replaced_prefixes)
    named = set(replaced_files)
    additions = {
        path: local_files[path]
        for path in sorted(local_files)
        if path == CARD_PATH or path in named or path.startswith(prefixes)
    }
    deletions = sorted(
        path for path in remote_files if path not in additions and (path in named or _shard_prefix(path) in prefixes)
    )
    return Plan(additions, deletions)


def _shard_prefix(path: str) -> str | None:
    """The split prefix of a shard named as this tool names them (`data/test-00000-of-00002.parquet`), else None."""
    shard = SHARD_RE.fullmatch(path)
    return f"{shard['dir']}/{shard['split']}-" if shard and shard["dir"] in CONFIG_DIRS.values() else None


def foreign_files(remote_files: Iterable[str], plan: Plan) -> list[str]:
    """The remote files a publication leaves in place although this tool did not write them: neither its
    card, previews or shards, nor the Hub's `.gitattributes`, nor deleted by `plan` (v1 data)."""
    ours = {CARD_PATH, *_HUB_FILES, *PREVIEW_PATHS.values()}
    gone = set(plan.deletions)
    return sorted(p for p in remote_files if p not in ours and p not in gone and _shard_prefix(p) is None)


def _names(paths: Sequence[str], most: int = 10) -> str:
    """Up to `most` paths, each quoted on one line (repr), then how many more."""
    shown = ", ".join(repr(path) for path in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def replaces_v1_card(remote: RemoteState) -> bool:
    """Whether the remote card is that of v1 data, which the conversion tags `v1` (or already did): it stays there."""
    return bool(remote.v1_files) and remote.tags.get(V1_TAG, remote.head) == remote.head


def check_card(repo_id: str, remote: RemoteState, *, replace_card: bool = False) -> str | None:
    """Refuse to replace a remote card that a person wrote or edited (`openeds.card.card_origin`), unless
    `replace_card`; then the reason it counts as such a card is returned, for the warning, else None.

    push.py calls it right after `connect`, before anything is built; `publish` calls it again.
    """
    if remote.card is None or replaces_v1_card(remote):
        return None
    origin = card_origin(remote.card)
    if origin == "generated":
        return None
    why = (
        "its text no longer matches the checksum this tool wrote at its end"
        if origin == "edited"
        else "it has no checksum line of this tool: a person or another tool wrote it, or a version of this tool "
        "from before the checksum"
    )
    if replace_card:
        return why
    raise PublishError(
        f"the card {CARD_PATH} of {repo_id} was written or edited by hand ({why}); publishing would replace it "
        f"with the generated card, and that text would be gone from the repo's head; expected a card this tool "
        f"wrote and nobody edited since; {NOTHING_PUBLISHED}; copy what you want to keep, then re-run with "
        f"--replace-card (the replaced card stays readable at revision {remote.head[:12]})"
    )


def git_blob_id(content: bytes) -> str:
    """The git object id of a file with `content`, as the Hub lists it for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def holds(remote: RemoteState, plan: Plan, sha256s: Mapping[str, str]) -> bool:
    """Whether publishing `plan` would change nothing that matters: the remote has every data file
    byte for byte, a card equal but for its provenance block and checksum, the previews, and nothing to delete.

    `sha256s` maps each addition to the sha256 of its content (the upload computes them anyway).
    A config's preview is drawn from whichever of its splits was built first, so a split push
    redraws it from other rows of the same data; an existing remote preview counts as the same.
    """
    if plan.deletions or remote.card is None:
        return False
    for path, local in plan.additions.items():
        remote_file = remote.files.get(path)
        if remote_file is None:
            return False
        if path == CARD_PATH:
            if comparable(local.read_bytes().decode("utf-8")) != comparable(remote.card):
                return False
        elif path not in PREVIEW_PATHS.values() and not _same_content(local, sha256s[path], remote_file):
            return False
    return True


def _same_content(local: Path, sha256: str, remote: RemoteFile) -> bool:
    """LFS files compare by sha256, regular ones (small: the Hub stores large files in LFS) by git blob id."""
    if local.stat().st_size != remote.size:
        return False
    if remote.sha256 is not None:
        return sha256 == remote.sha256
    return remote.blob_id is not None and git_blob_id(local.read_bytes()) == remote.blob_id


def collect_local_files(local_dir: Path, splits_by_config: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """Every file of `local_dir` by its path in the repo, after checking the card, the previews of the
    pushed configs and the pushed shards."""
    files = {
        p.relative_to(local_dir).as_posix(): p
        for p in sorted(local_dir.rglob("*"))
        if p.is_file() and p.relative_to(local_dir).as_posix() not in (LOCK_NAME, LOCK_OWNER_NAME)  # push.py's lock
    }
    for required in (CARD_PATH, *(PREVIEW_PATHS[config] for config in splits_by_config)):  # type: ignore[index]
        if required not in files:
            raise PublishError(
                f"{local_dir / required} is missing; expected the card and the preview of each config pushed "
                f"({', '.join(splits_by_config)}) in the folder to publish; build the folder again"
            )
    folders = sorted(CONFIG_DIRS.values())
    named = (CARD_PATH, *PREVIEW_PATHS.values())
    for path in files:
        shard = SHARD_RE.fullmatch(path)
        if path not in named and not (shard and shard["dir"] in folders):
            raise PublishError(
                f"{local_dir / path} is not a file to publish; expected only {', '.join(named)} and "
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


def require_token(api: HfApi, repo_id: str, token: str | None = None) -> str:
    """The token to publish with, found without a network call; else a PublishError at once.

    `token`, else the api's token, else `HF_TOKEN` or the `hf auth login` token file. Offline mode
    (`HF_HUB_OFFLINE`), which blocks every upload, is refused here too.
    """
    if is_offline_mode():
        raise PublishError(
            f"HF_HUB_OFFLINE is set, so nothing can be published to {repo_id}; expected it unset to publish; "
            "unset HF_HUB_OFFLINE, or pass --no-upload to materialise only"
        )
    source = "the token given" if token else "the HfApi's token" if isinstance(api.token, str) and api.token else None
    token = token or (api.token if isinstance(api.token, str) else None) or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found (HF_TOKEN is unset and `hf auth login` was not run); "
            f"expected a token with write access to {repo_id}; set HF_TOKEN or run `hf auth login`, "
            "or pass --no-upload to materialise only"
        )
    if not re.fullmatch(r"[!-~]+", token):  # an HTTP header carries printable ASCII only; the token is never shown
        source = source or next(
            (name for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") if os.environ.get(name)),
            f"the token file {constants.HF_TOKEN_PATH} (`hf auth login`)",
        )
        raise PublishError(
            f"the Hugging Face token from {source} holds a character that is not printable ASCII (an accented "
            "letter, a space, a line break or another control character); expected a token of ASCII letters and "
            "digits such as hf_...; copy it again from https://huggingface.co/settings/tokens and set it again"
        )
    return token


def connect(api: HfApi, repo_id: str, *, token: str, retry: RetryPolicy = DEFAULT_RETRY) -> RemoteState:
    """Check the token with the Hub (valid, not read-only), then read the remote once (`inspect_remote`).

    A repo the user may not read (gated, and not granted) is one PublishError here, before any build.
    """
    check_repo_id(repo_id)
    user = _check_token(api, token, retry)
    with _explain_access(api, repo_id, user):
        state = inspect_remote(api, repo_id, token=token, retry=retry)
    return dataclasses.replace(state, user=user)


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
) -> PublishResult:
    """Publish the splits `splits_by_config` (e.g. `{"pupil": ["test"]}`) of `local_dir` to the dataset repo `repo_id`.

    `api` is the one seam for the Hub client (default: `HfApi()`, so `HF_ENDPOINT` applies); `token`
    defaults to the api's token, then to `HF_TOKEN` or the `hf auth login` token. `remote` is the
    state `connect` read (read here when not given). `tag` names the publication; by default each
    publication that changes the repo gets the next of `v2`, `v2.1`, `v2.2`, ... (see
    `next_publication_tag`); it must pass `check_tag`. A run that would change nothing (`holds`) makes no
    commit and no tag, unless the head is untagged (an earlier run stopped between its commit and its
    tag): it is tagged. A remote card a person wrote or edited is replaced only with `replace_card`
    (`check_card`). Remote files this tool did not write stay, and a warning names them.
    """
    check_repo_id(repo_id)
    if tag is not None:
        check_tag(tag)
    files = collect_local_files(local_dir, splits_by_config)
    api = api or HfApi()
    token = require_token(api, repo_id, token)
    remote = remote or connect(api, repo_id, token=token, retry=retry)
    prefixes = [split_prefix(config, split) for config, splits in splits_by_config.items() for split in splits]
    replaced = [PREVIEW_PATHS[config] for config in splits_by_config]  # type: ignore[index]
    if remote.v1_files:
        refuse_mixing(repo_id, remote, splits_by_config)
        replaced += sorted(remote.v1_files)  # all of the v1 data goes, whatever its shard names
    plan = plan_operations(files, remote.files, prefixes, replaced)
    url = f"{api.endpoint}/datasets/{repo_id}/commit/{remote.head}"
    # Hashes each file once (streaming), for the comparison and the upload alike.
    additions = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=file) for path, file in plan.additions.items()]
    sha256s = {operation.path_in_repo: operation.upload_info.sha256.hex() for operation in additions}

    with _explain_access(api, repo_id, remote.user or _check_token(api, token, retry)):
        if holds(remote, plan, sha256s):
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
                f"tag {tag!r} already exists on {repo_id}; expected a new tag for this publication; "
                "pick another tag or delete the old one"
            )
        if hand_card := check_card(repo_id, remote, replace_card=replace_card):
            logger.warning(
                "Replacing the card %s of %s, which was written or edited by hand (%s), as --replace-card asks; "
                "the replaced card stays readable at %s/datasets/%s/blob/%s/%s", CARD_PATH, repo_id, hand_card,
                api.endpoint, repo_id, remote.head, CARD_PATH,
            )
        if kept := foreign_files(remote.files, plan):
            logger.warning(
                "%s holds %d files this tool did not write; they stay as they are, and the card's data_files do "
                "not read them: %s", repo_id, len(kept), _names(kept),
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
        _upload(api, repo_id, additions, token)
        deletions = [CommitOperationDelete(path_in_repo=path, is_folder=False) for path in plan.deletions]
        commit, commit_url = _commit(api, repo_id, [*additions, *deletions], commit_message, remote.head, token, retry)
        publication_tag = tag or next_publication_tag(remote.tags)
        _create_tag(api, repo_id, publication_tag, commit, token, retry, published=commit)
        created.append(publication_tag)
    logger.info("Published %s %s as commit %s", repo_id, dict(splits_by_config), commit)
    return PublishResult(
        repo_id, commit, commit_url, tuple(plan.additions), tuple(plan.deletions), tuple(created), at=publication_tag
    )


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


def refuse_mixing(repo_id: str, remote: RemoteState, splits_by_config: Mapping[str, Sequence[str]]) -> None:
    """Refuse a push that converts some of a v1 repo's splits (all in the default config) but not all of them.

    push.py calls it right after `connect` when it knows the splits already, before any download or build.
    """
    pushed_splits = splits_by_config.get(DEFAULT_CONFIG, ())
    v1_splits = sorted({match["split"] for path in remote.v1_files if (match := _V1_SHARD.fullmatch(path))})
    left = sorted(set(v1_splits) - set(pushed_splits))
    if left:
        raise PublishError(
            f"{repo_id} holds v1 data (no {V2_COLUMN!r} column) in splits {v1_splits} and this push converts "
            f"{sorted(pushed_splits)}, which would leave {left} as v1 beside v2 splits; "
            f"expected every v1 split converted at once; run push without --splits to convert every split"
        )


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


def _token_rejected(endpoint: str, what: str, outcome: str) -> PublishError:
    return PublishError(
        f"the Hugging Face token was rejected by {endpoint} (401 Unauthorized) when trying to {what}; "
        "expected a valid token with write access (one the Hub accepted earlier in the run may have been revoked "
        f"or expired since); {outcome}; create one at https://huggingface.co/settings/tokens "
        "and set HF_TOKEN or run `hf auth login --force`"
    )


def _not_the_hub(what: str, endpoint: str, seen: str, outcome: str) -> PublishError:
    """The one line for an answer that is not what the Hub API sends (a captive portal, a wrong HF_ENDPOINT)."""
    return PublishError(
        f"could not {what}: {endpoint} answered with {seen}, not what the Hugging Face Hub API sends; expected the "
        f"Hub's API at {endpoint}; {outcome}; check HF_ENDPOINT and the proxy settings (a captive portal or a wrong "
        "endpoint answers with a web page), then re-run"
    )


class _explain_access:
    """Turn a 403 from the Hub inside the block into one PublishError naming the user and the namespace,
    or the gate of a gated repo (403 or 401 with `X-Error-Code: GatedRepo`)."""

    def __init__(self, api: HfApi, repo_id: str, user: str) -> None:
        self.api, self.repo_id, self.user = api, repo_id, user

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        http = _http_error(error) if isinstance(error, Exception) and not isinstance(error, PublishError) else None
        if http is None:
            return
        status = _status(http)
        namespace, name = self.repo_id.split("/")
        if isinstance(http, GatedRepoError):
            raise PublishError(
                f"{self.repo_id} is a gated dataset and user {self.user!r} has not been granted access to it "
                f"({status} GatedRepo from {self.api.endpoint}); expected a token that may read and write it; "
                f"{NOTHING_PUBLISHED}; ask for access at {self.api.endpoint}/datasets/{self.repo_id}, use the token "
                f"of a member of {namespace!r} with write rights, or publish to {self.user}/{name}"
            ) from error
        if status != 403:
            return
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
        if status == 401:
            raise _token_rejected(api.endpoint, f"upload the files to {repo_id}", NOTHING_PUBLISHED) from error
        if status == 403:
            raise  # explained by _explain_access
        if seen := _not_the_api(error):
            raise _not_the_hub(f"upload the files to {repo_id}", api.endpoint, seen, NOTHING_PUBLISHED) from error
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


# -- errors and retries --------------------------------------------------------------------------


def _http_error(error: BaseException) -> HfHubHTTPError | None:
    """The first HTTP error of the Hub in the chain of `error` (HfFileSystem wraps some in FileNotFoundError)."""
    return next((link for link in error_chain(error) if isinstance(link, HfHubHTTPError)), None)


def _not_the_api(error: BaseException) -> str | None:
    """What was seen, if `error` comes from an answer that is not what the Hub's API sends, else None: text that
    is not JSON, or JSON that huggingface_hub fails to read (a key missing, a list for an object)."""
    if decode := next((link for link in error_chain(error) if isinstance(link, json.JSONDecodeError)), None):
        return f"text that is not JSON ({_describe(decode)})"
    if isinstance(error, (KeyError, TypeError, AttributeError, IndexError)) and _raised_in(error, _CLIENT_DIR):
        return f"JSON of another shape ({_describe(error)})"
    return None


#: The client's own code: an error raised there while reading an answer is the answer's fault.
_CLIENT_DIR: Final = str(Path(huggingface_hub.__file__).parent)


def _raised_in(error: BaseException, folder: str) -> bool:
    """Whether the innermost frame of `error`'s traceback is code under `folder`."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(folder)


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
    passthrough: Sequence[int] = (403,),
    outcome: str | Callable[[], str] = NOTHING_PUBLISHED,
    endpoint: str = "",
) -> T:
    """`call()`, retried on transient errors within `policy`; every failure becomes one PublishError line.

    HTTP errors with a status in `passthrough` are re-raised for the caller to explain; `outcome`
    says what the failure leaves on the Hub (the default: nothing was published). A 401 says the Hub
    rejected the token (unless 401 is passed through and the error is a `RepositoryNotFoundError`,
    the Hub's answer for a repo it does not show); an answer that is not JSON says that `endpoint`
    (default: HF_ENDPOINT) is not the Hub's API.
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
            endpoint = endpoint_of(error) or endpoint or constants.ENDPOINT
            raise PublishError(
                f"could not {what}: the network or the Hub endpoint {endpoint} is unreachable "
                f"({gave_up.last.description}; {gave_up.tally}); expected a connection to {endpoint}; "
                f"check the network connection, the proxy settings and HF_ENDPOINT, then re-run; {said()}"
            ) from error
        raise PublishError(
            f"could not {what}: {gave_up.last.description} ({gave_up.tally}); expected the Hub to answer; "
            f"{said()}; re-run later, or with a longer --retry-timeout"
        ) from error
    except Exception as error:
        if isinstance(error, PublishError):
            raise
        endpoint = endpoint or constants.ENDPOINT
        http = _http_error(error)
        if isinstance(http, GatedRepoError):
            raise  # explained by _explain_access
        if http is None:
            if seen := _not_the_api(error):
                raise _not_the_hub(what, endpoint, seen, said()) from error
            raise
        status = _status(http)
        if status == 401 and not (401 in passthrough and isinstance(http, RepositoryNotFoundError)):
            raise _token_rejected(endpoint, what, said()) from error
        if status in passthrough:
            raise
        raise _refused(what, http, said()) from error

