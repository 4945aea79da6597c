"""Checks between the upload and the commit, and after the commit: what is committed is what was planned.

`publish` hands no recorded hash to an uploader as a file's hash: `upload_info.sha256` is left
unread before the upload, and the upload computes it from the bytes it sends, through Xet (hf_xet
hashes each file as it chunks it; huggingface_hub fills `upload_info.sha256` in) or over LFS (the
oid the LFS batch needs). After `preupload_lfs_files`, and before `create_commit`:

* `refuse_ignored`: a file the repo's `.gitignore` ignores (the Hub's `/preupload` answer,
  `shouldIgnore`) would be left out of the commit silently by huggingface_hub, while the card names
  it; refused, naming the files;
* `check_against_records`: each shard's size and sha256, as the upload computed them, against the
  record written with the shard (`openeds.records`). A mismatch (a bit flip since it was written, a
  file replaced, truncated and padded to its size) commits nothing: one line names the shards, and
  their records are removed, so the next run rebuilds them.

When the remote already holds the publication (`holds`, by the records) nothing is uploaded, so
the upload computes nothing: the shards are then hashed by a read (`check_against_records` with
`how="read"`), so that a folder whose bytes changed is said, not confirmed as published.

After the commit, `check_commit` lists the files of the new commit (the paginated tree listing) and
compares them with the plan: every addition there with the size and hash sent, no deletion left.
A difference (a file the Hub dropped or stored otherwise) is one line, and the commit is not tagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from huggingface_hub import CommitOperationAdd, HfApi

from openeds import records
from openeds.hub.errors import DEFAULT_RETRY, NOTHING_PUBLISHED, PublishError
from openeds.hub.planning import _names, git_blob_id
from openeds.hub.remote import list_files
from openeds.layout import RECORDS_DIR
from openeds.names import shown
from openeds.retry import RetryPolicy


def refuse_ignored(repo_id: str, additions: Iterable[CommitOperationAdd]) -> None:
    """Refuse additions that the repo's `.gitignore` makes the client leave out of the commit (after preupload)."""
    ignored = sorted(op.path_in_repo for op in additions if getattr(op, "_should_ignore", False))
    if ignored:
        raise PublishError(
            f"the .gitignore of {repo_id} ignores {len(ignored)} file(s) this publication adds ({_names(ignored)}); "
            f"the commit would leave them out while the card names them; expected every file of the publication "
            f"committed; {NOTHING_PUBLISHED}; remove the patterns that match them from .gitignore on the Hub (or "
            f"delete .gitignore), then re-run the same command"
        )


def check_against_records(
    local_dir: Path,
    additions: Sequence[CommitOperationAdd],
    recorded: Mapping[str, str],
    *,
    how: Literal["upload", "read"] = "upload",
) -> None:
    """Compare each addition that has a record (`recorded`: path -> sha256, `planning.shard_records`) with the
    hash of its bytes; a PublishError naming every shard that differs, after removing their records.

    `how="upload"`: called after `preupload_lfs_files`, whose upload computed `upload_info.sha256` (Xet: hf_xet
    as it chunks; LFS: the batch's oid); a file the Hub takes as a regular file, which is not uploaded ahead,
    is hashed here by a read. `how="read"`: nothing was uploaded; each shard is hashed by a read.
    """
    changed = []
    for op in additions:
        sha256 = recorded.get(op.path_in_repo)
        if sha256 is None:
            continue
        computed = op.upload_info.sha256.hex()  # a read only if the upload did not hash it
        if computed != sha256:
            changed.append((op.path_in_repo, computed, sha256))
    if not changed:
        return
    for path, _, _ in changed:
        records.forget(local_dir, path)
    by = "the upload hashed" if how == "upload" else "a read hashed"
    found = "; ".join(f"{path}: {by} sha256 {got[:12]}, recorded {want[:12]}" for path, got, want in changed[:5])
    more = f"; and {len(changed) - 5} more" if len(changed) > 5 else ""
    raise PublishError(
        f"{len(changed)} shard(s) of {shown(local_dir)} are not the bytes written ({found}{more}): the files changed "
        f"since they were built (a damaged disk, a copy or an edit); expected each shard byte for byte as recorded "
        f"in {RECORDS_DIR} when it was written; {NOTHING_PUBLISHED}; their records are removed, so running the same "
        f"command again rebuilds them"
    )


def check_commit(
    api: HfApi,
    repo_id: str,
    commit: str,
    additions: Sequence[CommitOperationAdd],
    deletions: Sequence[str],
    *,
    token: str | None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> None:
    """Compare the files of `commit` (the paginated tree listing) with what the commit sent; a PublishError if
    a file added is missing or differs, or a file deleted is still there."""
    files = list_files(api, repo_id, commit, token=token, retry=retry, outcome=_landed(commit))
    wrong = []
    for op in additions:
        remote = files.get(op.path_in_repo)
        if remote is None:
            wrong.append(f"{op.path_in_repo} is missing")
        elif remote.size != op.upload_info.size:
            wrong.append(f"{op.path_in_repo} holds {remote.size:,} bytes, not {op.upload_info.size:,}")
        elif remote.sha256 is not None:
            if remote.sha256 != op.upload_info.sha256.hex():
                wrong.append(f"{op.path_in_repo} has sha256 {remote.sha256[:12]}, not the one sent")
        elif remote.blob_id is not None:  # a regular file (small: the Hub keeps large ones in LFS)
            with op.as_file() as file:
                if remote.blob_id != git_blob_id(file.read()):
                    wrong.append(f"{op.path_in_repo} has other content than the one sent")
    wrong += [f"{path} is still there" for path in deletions if path in files]
    if wrong:
        raise PublishError(
            f"the commit {commit[:12]} on {repo_id} differs from what it was sent ({'; '.join(wrong[:5])}"
            f"{f'; and {len(wrong) - 5} more' if len(wrong) > 5 else ''}); expected the Hub to commit every "
            f"file as sent; {_landed(commit)}; check the repo's files on the Hub, then re-run the same command: it "
            f"commits what differs"
        )


def _landed(commit: str) -> str:
    return f"the commit {commit[:12]} landed but is not tagged as a publication"
