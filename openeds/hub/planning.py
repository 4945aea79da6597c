"""Planning, before any request changes the Hub: the inputs checked and the operations of the one commit.

Checked without a request: a tag name (`check_tag`: git's rules for tag names, which the Hub applies,
and the names this tool reserves), the token (`require_token`: offline mode, a token at all,
printable ASCII) and the local folder (`collect_local_files`). Checked against the remote state:
a card that a person wrote or edited (`check_card`) and a tag the repo already has on another
commit (`check_tag_free`); the checks of a v1 conversion are `openeds.hub.conversion`'s.
Then, as pure functions: the additions and deletions of the commit (`plan_operations`: only this
tool's shards, previews and the v1 data it converts are deleted), the files it leaves that this
tool did not write (`foreign_files`), whether the remote already holds the publication (`holds`),
and the next publication tag.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, NamedTuple

from huggingface_hub import HfApi, constants, get_token, is_offline_mode

from openeds import records
from openeds.card import card_origin, comparable
from openeds.hub.errors import NOTHING_PUBLISHED, PublishError
from openeds.hub.remote import V1_TAG, RemoteFile, RemoteState, _shard_prefix
from openeds.layout import (
    BOOKKEEPING_DIR,
    CARD_PATH,
    CONFIG_DIRS,
    PREVIEW_PATHS,
    RECORDS_DIR,
    SHARD_RE,
    complete_shard_set,
    split_prefix,
)
from openeds.names import shown

V2_TAG: Final = "v2"
#: Files of a repo that are neither this tool's nor a user's: the Hub writes .gitattributes.
_HUB_FILES: Final = (".gitattributes",)
#: Characters git refuses in a ref name (`git check-ref-format`), besides control characters.
_REF_FORBIDDEN: Final = " ~^:?*[\\"


class Plan(NamedTuple):
    """One commit: files to add or overwrite (path in repo -> local file) and paths to delete."""

    additions: dict[str, Path]
    deletions: list[str]


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


def check_tag_free(repo_id: str, remote: RemoteState, tag: str | None) -> None:
    """Refuse a `tag` that the repo already has on another commit than its head: it cannot name this publication.

    push.py calls it right after `connect`, before anything is fetched or built. A tag that names the head
    may still be a re-run's: `openeds.hub.kept.check_tag_at_head` tells, once the raw data is listed.
    """
    if tag is None or tag not in remote.tags or remote.tags[tag] == remote.head:
        return
    raise PublishError(
        f"tag {tag!r} already exists on {repo_id} and names commit {remote.tags[tag][:12]}, not the head "
        f"{remote.head[:12]}; expected a new tag for this publication (a tag is never moved); {NOTHING_PUBLISHED} "
        f"and nothing was built; pass another --tag, or none for the next one ({next_publication_tag(remote.tags)})"
    )


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


def foreign_files(remote_files: Iterable[str], plan: Plan) -> list[str]:
    """The remote files a publication leaves in place although this tool did not write them: neither its
    card, previews or shards, nor the Hub's `.gitattributes`, nor deleted by `plan` (v1 data)."""
    ours = {CARD_PATH, *_HUB_FILES, *PREVIEW_PATHS.values()}
    gone = set(plan.deletions)
    return sorted(p for p in remote_files if p not in ours and p not in gone and _shard_prefix(p) is None)


def _names(paths: Sequence[str], most: int = 10) -> str:
    """Up to `most` paths, each quoted on one line (repr), then how many more."""
    listed = ", ".join(repr(path) for path in paths[:most])
    return listed + (f" and {len(paths) - most} more" if len(paths) > most else "")


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

    `sha256s` maps each shard of the additions to the sha256 recorded as it was written (`shard_records`):
    no file is read to decide. The caller still checks the local shards' bytes against those records
    (`openeds.hub.verify`) before it says the remote holds them.
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
    pushed configs and the pushed shards. The folder's bookkeeping (`openeds.layout.BOOKKEEPING_DIR`: the
    lock, the records of the shards' bytes) is left out, and is never published; any other file that is
    not one to publish is refused."""
    files = {
        p.relative_to(local_dir).as_posix(): p
        for p in sorted(local_dir.rglob("*"))
        if p.is_file() and p.relative_to(local_dir).parts[0] != BOOKKEEPING_DIR
    }
    for required in (CARD_PATH, *(PREVIEW_PATHS[config] for config in splits_by_config)):  # type: ignore[index]
        if required not in files:
            raise PublishError(
                f"{shown(local_dir / required)} is missing; expected the card and the preview of each config pushed "
                f"({', '.join(splits_by_config)}) in the folder to publish; build the folder again"
            )
    folders = sorted(CONFIG_DIRS.values())
    named = (CARD_PATH, *PREVIEW_PATHS.values())
    for path in files:
        shard = SHARD_RE.fullmatch(path)
        if path not in named and not (shard and shard["dir"] in folders):
            raise PublishError(
                f"{shown(local_dir / path)} is not a file to publish; expected only {', '.join(named)} and "
                f"{{{','.join(folders)}}}/{{split}}-{{i:05d}}-of-{{n:05d}}.parquet; remove it from {shown(local_dir)}"
            )
    for config, splits in splits_by_config.items():
        for prefix in (split_prefix(config, split) for split in splits):
            _check_shards(local_dir, prefix, sorted(p for p in files if p.startswith(prefix)))
    return files


def shard_records(local_dir: Path, files: Mapping[str, Path]) -> dict[str, str]:
    """The recorded sha256 of each shard among `files` (`openeds.records`): what `holds` compares, and what the
    upload's hashes are checked against before the commit (`openeds.hub.verify`).

    A shard without a record, or whose size is not the recorded one, is refused here, before any request:
    its bytes cannot be vouched for. push.py never gets here with one (it rebuilds such shards).
    """
    recorded, lacking = {}, []
    for path, file in files.items():
        if not SHARD_RE.fullmatch(path):
            continue
        record = records.load(local_dir, path)
        if record is None or record.size != file.stat().st_size:
            lacking.append(path)
        else:
            recorded[path] = record.sha256
    if lacking:
        raise PublishError(
            f"{len(lacking)} shard(s) of {shown(local_dir)} have no record of the bytes written, or another size "
            f"than recorded ({_names(lacking)}); expected each shard with the record push.py writes beside it in "
            f"{RECORDS_DIR}, so that its bytes can be checked; {NOTHING_PUBLISHED}; run push.py with this "
            f"--local-dir again: it rebuilds them"
        )
    return recorded


def _check_shards(local_dir: Path, prefix: str, paths: list[str]) -> None:
    """The shards of one split are exactly {prefix}00000-of-N ... {prefix}(N-1)-of-N."""
    if not paths:
        raise PublishError(
            f"no shard {shown(local_dir / prefix)}*.parquet; expected the split to be built before it is pushed; "
            "build it or leave it out of the splits to push"
        )
    expected = complete_shard_set(prefix, paths)
    if paths != expected:
        raise PublishError(
            f"shards {shown(local_dir / prefix)}* are {paths}; expected the {len(expected)} shards {expected[0]} ... "
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
