"""Publish a locally built dataset folder to a Hugging Face Hub dataset repo (the I/O edge of push.py).

The local folder holds exactly what goes to the Hub, in the layout of `openeds.layout`, plus its one
bookkeeping folder `.openeds/` (the lock, the records of the shards' bytes), which is never published.

`publish` replaces the remote shards of the splits it is given, keeps the other splits' files
untouched, and rewrites the card and the preview picture of each config it is given. The steps:

1. check the inputs locally: the repo id (`check_repo_id`: namespace/name, and huggingface_hub's own
   `validate_repo_id`), the tag (`check_tag`: git's rules for tag names, which the Hub applies, and
   not a tag this tool reserves), the token (`require_token`: offline mode, a token at all, printable
   ASCII); then the token with the Hub (`whoami`: valid, not read-only);
2. read the remote once (`inspect_remote`): head commit, every file with its size and hash (the
   paginated tree listing, `list_files`), tags,
   the card's text, and the files that hold v1 data, recognised by their schema wherever they sit
   (v1's arrays as flat lists, no `preprocessed` column; `openeds.hub.v1`), each with the split
   `load_dataset(repo, revision="v1")` reads it as.
   A repo that does not exist, or has no README.md in its listing, has no card; a card the
   listing names but that cannot be downloaded is an error, never "no card". Then whether the
   token may write (`connect`): a gated repo it may not read, a repo it may read but not write
   (gated or not: `HfApi.auth_check(write=True)`), a repo to create in a namespace that is neither
   the user's nor one of their organizations (whoami's `orgs`) are each one line here, before
   anything is built, as is a `--tag` the repo has on another commit than its head (`check_tag_free`);
3. plan the operations (`plan_operations`, pure); for a v1 repo (`openeds.hub.conversion`), refuse a push
   that converts only some of its v1 splits, and v1 files beside this tool's v2 at a head without a tag `v1`.
   Only what this tool writes is deleted: the shards of the splits it replaces (the names
   `openeds.layout` gives them), its previews, and the v1 data files it converts. Every other file
   the repo holds stays, and the run names them (a warning line): a user's `data/train-notes.txt`,
   a parquet file of another name, anything outside `data/`, `full/` and `images/`. The card's
   `data_files` patterns match the shard names only, so such files are never read as data;
4. if the remote already holds the same data files (by the sha256 recorded with each shard as it
   was written, `shard_records`; a shard without its record is refused) and a card that differs at
   most in its provenance block (`openeds.card.comparable`), publish nothing: no commit, no tag; the
   shards' bytes are then hashed by a read and checked against their records (`openeds.hub.verify`).
   A card that still names `pupil` `default` (v1, and v2 cards before the rename) differs, so the
   push renames it in its one commit; the data files stay where they are;
5. the card: the remote README.md is replaced only if this tool wrote it and nobody edited it since
   (`openeds.card.card_origin`: its checksum line matches), or if it is the card of v1 data (it
   stays at revision `v1`). A card a person wrote or edited, or one from a version of this tool
   before the checksum, stops the run with one line, before anything is built when push.py calls
   `check_card` after `connect`; `replace_card=True` (push.py `--replace-card`) replaces it, and a
   warning names the revision where the replaced card stays readable;
6. create the repo if needed, tag the v1 head `v1` if the repo holds v1 data and has no such tag;
7. upload the LFS files (`preupload_lfs_files`, through Xet by default, else LFS): what the Hub already
   holds is not sent again (LFS objects; Xet chunks), so re-running a killed upload resumes it. The
   upload computes each file's sha256 from the bytes it sends (Xet: hf_xet as it chunks; LFS: the
   batch's oid); then, before the commit, a file the repo's
   `.gitignore` would make the client leave out of the commit is refused (`refuse_ignored`), and each
   shard's hash is checked against its record (`check_against_records`): a mismatch commits nothing,
   names the shard, and removes its record so that the next run rebuilds it;
8. make ONE commit with every addition, deletion and the card, pinned to the inspected head
   (`parent_commit`), so the Hub never shows a card naming files it lacks; then list the commit's files
   and compare them with the plan (`check_commit`);
9. tag the publication: the caller's tag, else `v2` the first time and `v2.1`, `v2.2`, ... after.

push.py calls `check_repo_id` and `check_tag` right after parsing its arguments; `connect` (steps 1-2),
`check_card` and `check_tag_free` before it fetches or builds anything; once the raw data is listed,
and before anything is built, `check_kept` and `check_tag_at_head` (`openeds.hub.kept`): the remote
splits the run keeps are checked against the raw data as it is now by the build records in their
shards' footers. One built from other inputs or versions stops the run in one line naming it, why,
and the command that rebuilds it with the rest (the Hub unchanged); one without a build record (a
version of this tool before the records, or another tool), or whose raw split the raw data lacks,
cannot be checked: it is kept, and a warning line names it. Then `kept_sizes` (the same footers, not
read again) so that its card lists every split the repo keeps with their real sizes, then
`publish(..., remote=...)`.

Uploads: huggingface_hub sends the files through hf_xet (the Hub's Xet storage) whenever hf_xet imports
and `HF_HUB_DISABLE_XET` is unset, else through LFS. `openeds.hub.xet` gives hf_xet its timeouts and
retries from the `RetryPolicy` (`--timeout`, `--retry-timeout`), watches the upload (a watchdog aborts it
when no byte moves for the retry budget plus one timeout) and names what failed in one line.
Retries: huggingface_hub retries each HTTP call of the LFS upload itself (preupload, LFS batch, PUT,
verify: 5 retries, 1-8 s apart, outside this project's budgets) and this module does not wrap those.
The other calls (whoami, auth checks, create repo, repo info, refs, card download, footers, commit,
tag) are sent once by the client; `openeds.retry.call_with_retries` retries them on connection
errors, 5xx and 429 within the budgets of a `RetryPolicy`. Every failure is a `PublishError` of one
line naming the step, what the Hub said, whether anything was published, and whether re-running
helps. A remote that is not what it claims is one such line naming the file or the endpoint: an
answer that is not JSON, or JSON of another shape than the API's (a captive portal, a wrong
HF_ENDPOINT), a card that is not UTF-8, a shard that is not parquet. A 401 after the token check
says the Hub rejected the token (revoked or expired during the run), a 403 that the user may not
write, a 403 `GatedRepo` that the repo is gated. Names put into these lines go through
`openeds.names.shown`, so each stays one line.

Timeouts: `connect` gives every request from then on `RetryPolicy.timeout` per phase (`openeds.timeouts`),
so a Hub that accepts a request and never answers, or stops sending mid-answer, is a transient error
like a 503. A parquet footer is read with plain ranged GETs, each one attempt of the project's own
retries (`openeds.hub.footers`), so a stalled footer read ends within about the retry budget plus one
timeout. Only the LFS upload retries itself: 6 tries, 1-8 s apart, so up to 6 timeouts and 23 s of waits.

The token is never printed or logged.

The package, one concern a module (each imports only those above it):

    errors.py       error classification: HTTP errors as one-line PublishErrors, and which are retried
    footers.py      parquet footers of remote shards (and Arrow files' schemas), by ranged GETs inside the retries
    v1.py           v1 data recognised by its schema wherever it sits, and the split datasets gives each file
    remote.py       remote state: the repo's listing, tags and card, read once, and the access checks (connect)
    planning.py     inputs checked before any request, and the operations of the one commit (pure)
    conversion.py   converting v1 data: the refusals, and what the run says it does
    kept.py         the remote splits a run keeps: checked against the raw data, and sized for the card
    verify.py       what the upload computed and what the commit holds, checked against the records and the plan
    publishing.py   the commit and its tags (publish)

`from openeds import hub` gives every public name of the nine (`hub.publish`, `hub.connect`,
`hub.PublishError`, `hub.check_kept`, ...), as push.py and the tests use them.
"""

from openeds.hub.conversion import (
    check_v1_head,
    check_v1_tag,
    conversion_notes,
    refuse_mixing,
    split_notes,
    v1_by_split,
)
from openeds.hub.errors import DEFAULT_RETRY, NOTHING_PUBLISHED, PublishError
from openeds.hub.footers import WrongFormatError, read_arrow_schema, read_footer, read_footers
from openeds.hub.kept import check_kept, check_tag_at_head, kept_sizes, kept_splits
from openeds.hub.planning import (
    V2_TAG,
    Plan,
    check_card,
    check_tag,
    check_tag_free,
    collect_local_files,
    foreign_files,
    git_blob_id,
    holds,
    next_publication_tag,
    plan_operations,
    replaces_v1_card,
    require_token,
    reserved_tag,
    shard_records,
    tag_problem,
)
from openeds.hub.publishing import DEFAULT_COMMIT_MESSAGE, PublishResult, publish
from openeds.hub.remote import (
    V1_TAG,
    RemoteFile,
    RemoteState,
    check_repo_id,
    connect,
    has_v1_revision,
    inspect_remote,
    list_files,
    remote_splits,
)
from openeds.hub.v1 import V1_ARRAYS, V2_COLUMN, find_v1_files, is_v1_schema, resolve_splits
from openeds.hub.verify import check_against_records, check_commit, refuse_ignored
from openeds.retry import RetryPolicy

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "DEFAULT_RETRY",
    "NOTHING_PUBLISHED",
    "V1_ARRAYS",
    "V1_TAG",
    "V2_COLUMN",
    "V2_TAG",
    "Plan",
    "PublishError",
    "PublishResult",
    "RemoteFile",
    "RemoteState",
    "RetryPolicy",
    "check_against_records",
    "WrongFormatError",
    "check_card",
    "check_commit",
    "check_kept",
    "check_repo_id",
    "check_tag",
    "check_tag_at_head",
    "check_tag_free",
    "check_v1_head",
    "check_v1_tag",
    "collect_local_files",
    "connect",
    "conversion_notes",
    "find_v1_files",
    "foreign_files",
    "git_blob_id",
    "has_v1_revision",
    "holds",
    "inspect_remote",
    "is_v1_schema",
    "kept_sizes",
    "kept_splits",
    "list_files",
    "next_publication_tag",
    "plan_operations",
    "publish",
    "read_arrow_schema",
    "read_footer",
    "read_footers",
    "refuse_ignored",
    "refuse_mixing",
    "remote_splits",
    "replaces_v1_card",
    "require_token",
    "reserved_tag",
    "resolve_splits",
    "shard_records",
    "split_notes",
    "tag_problem",
    "v1_by_split",
]
