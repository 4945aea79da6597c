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
is one such line naming the file or the endpoint: an answer that is not JSON, or JSON of another
shape than the API's (a captive portal, a wrong HF_ENDPOINT), a card that is not UTF-8, a shard that
is not parquet. A 401 after the token
check says the Hub rejected the token (revoked or expired during the run), a 403 that the user may
not write, a 403 `GatedRepo` that the repo is gated.

Timeouts: `connect` gives every request from then on `RetryPolicy.timeout` per phase (`openeds.timeouts`),
so a Hub that accepts a request and never answers, or stops sending mid-answer, is a transient error
like a 503. Where the client retries itself (the LFS upload, `HfFileSystem`'s footer reads), it tries
6 times, 1-8 s apart: up to 6 timeouts and 23 s of waits.

The token is never printed or logged.

The package, one concern a module (each imports only those above it):

    errors.py       error classification: HTTP errors as one-line PublishErrors, and which are retried
    remote.py       remote state: the repo's listing, tags, card and parquet footers, read once (connect)
    planning.py     inputs checked before any request, and the operations of the one commit (pure)
    publishing.py   the commit and its tags (publish)

`from openeds import hub` gives every public name of the four (`hub.publish`, `hub.connect`,
`hub.PublishError`, `hub.kept_sizes`, ...), as push.py and the tests use them.
"""

from openeds.hub.errors import DEFAULT_RETRY, NOTHING_PUBLISHED, PublishError
from openeds.hub.planning import (
    V2_TAG,
    Plan,
    check_card,
    check_tag,
    collect_local_files,
    foreign_files,
    git_blob_id,
    holds,
    next_publication_tag,
    plan_operations,
    refuse_mixing,
    replaces_v1_card,
    require_token,
    reserved_tag,
    tag_problem,
)
from openeds.hub.publishing import DEFAULT_COMMIT_MESSAGE, PublishResult, publish
from openeds.hub.remote import (
    V1_TAG,
    V2_COLUMN,
    RemoteFile,
    RemoteState,
    check_repo_id,
    connect,
    has_v1_revision,
    inspect_remote,
    kept_sizes,
    remote_splits,
)
from openeds.retry import RetryPolicy

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "DEFAULT_RETRY",
    "NOTHING_PUBLISHED",
    "V1_TAG",
    "V2_COLUMN",
    "V2_TAG",
    "Plan",
    "PublishError",
    "PublishResult",
    "RemoteFile",
    "RemoteState",
    "RetryPolicy",
    "check_card",
    "check_repo_id",
    "check_tag",
    "collect_local_files",
    "connect",
    "foreign_files",
    "git_blob_id",
    "has_v1_revision",
    "holds",
    "inspect_remote",
    "kept_sizes",
    "next_publication_tag",
    "plan_operations",
    "publish",
    "refuse_mixing",
    "remote_splits",
    "replaces_v1_card",
    "require_token",
    "reserved_tag",
    "tag_problem",
]
