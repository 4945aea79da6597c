"""Converting a repo that holds v1 data: what the run refuses, and what it says it does.

The v1 files are found by their content (`openeds.hub.v1`, `RemoteState.v1_files`), each with the
split `load_dataset(repo, revision="v1")` reads it as. The conversion, one publication:

1. the v1 state is tagged `v1` before anything changes (`openeds.hub.publishing`), unless the
   repo has that tag already;
2. its one commit deletes every v1 file from `main`, whatever its name or split, beside adding
   v2; they stay readable at revision `v1`, so `load_dataset(repo, revision="v1")` loads v1 as the
   old code did and `load_dataset(repo)` loads v2;
3. the card of the v1 repo (or none) is replaced by the v2 card and stays readable at `v1`.

Refused before anything is built, each in one line (`PublishError`):

* `refuse_mixing`: a push that converts some of the v1 splits the raw data holds but not all (a
  conversion removes every v1 file from `main`, so the others would be gone from it with no v2
  split in their place);
* `check_v1_head`: v1 files beside this tool's own v2 output at a head that has no tag `v1` (an
  earlier version of this tool published v2 without converting the v1 files): the head is no
  longer the v1 state, and tagging it `v1` would make revision `v1` read v2;
* `check_v1_tag`: a tag `v1` on another commit that does not hold the v1 files of `main` as they
  are (one paths-info request): removed from `main`, no named revision would keep them.

Said (`conversion_notes`, right after the remote is read, and `split_notes`, once the raw splits are
known): every v1 file by split, the tag, the card, a v1 split that the raw data cannot rebuild (it
leaves `main` with the rest of v1 and stays at `v1`), v1 files that no split reads, and the splits
v2 adds that v1 lacked (the real v1 has no `test`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence

from huggingface_hub import HfApi

from openeds.card import card_origin
from openeds.hub.errors import DEFAULT_RETRY, NOTHING_PUBLISHED, PublishError, _retry
from openeds.hub.planning import V2_TAG, _names, replaces_v1_card
from openeds.hub.remote import V1_TAG, RemoteState, remote_splits
from openeds.hub.v1 import V2_COLUMN
from openeds.layout import CARD_PATH
from openeds.retry import RetryPolicy
from openeds.schema import DEFAULT_CONFIG


def v1_by_split(remote: RemoteState) -> dict[str | None, list[str]]:
    """The v1 files of the remote by the split `load_dataset(repo, revision="v1")` reads them as (None: none),
    the named splits sorted, None last."""
    by_split: dict[str | None, list[str]] = {}
    for path, split in sorted(remote.v1_files.items()):
        by_split.setdefault(split, []).append(path)
    return dict(sorted(by_split.items(), key=lambda item: (item[0] is None, item[0] or "")))


def refuse_mixing(
    repo_id: str,
    remote: RemoteState,
    splits_by_config: Mapping[str, Sequence[str]],
    raw_splits: Collection[str] | None = None,
) -> None:
    """Refuse a push that converts some of a v1 repo's splits (all in the default config) but not all of them.

    `raw_splits`: the splits of the raw data, once known; a v1 split it lacks cannot be rebuilt, so it is not
    refused but leaves `main` with the rest of v1 (`split_notes` says so). push.py calls it right after
    `connect` when it knows the splits already, before any download or build, and `publish` again.
    """
    pushed = sorted(splits_by_config.get(DEFAULT_CONFIG, ()))
    v1_splits = [split for split in v1_by_split(remote) if split is not None]
    left = [s for s in v1_splits if s not in pushed and (raw_splits is None or s in raw_splits)]
    if left:
        raise PublishError(
            f"{repo_id} holds v1 data (no {V2_COLUMN!r} column) in splits {v1_splits} and this push converts "
            f"{pushed}: a conversion removes every v1 file from main, so {left} would be gone from main with no v2 "
            f"split in their place; expected every v1 split converted at once; {NOTHING_PUBLISHED}; run push "
            "without --splits (with --config pupil or all) to convert every split"
        )


def check_v1_head(repo_id: str, remote: RemoteState) -> None:
    """Refuse to convert v1 files that sit beside this tool's own v2 output at a head without a tag `v1`.

    An earlier version of this tool recognised v1 only under push_to_hub's names, published v2 beside the
    real v1 layout and left it there. That head is not the v1 state: tagged `v1`, revision `v1` would read
    v2. The v1 state is the commit before that publication, which only the repo's owner can confirm.
    """
    if not remote.v1_files or V1_TAG in remote.tags:
        return
    ours = sorted(path for splits in remote_splits(remote).values() for paths in splits.values() for path in paths)
    if remote.card is not None and card_origin(remote.card) == "generated":
        ours.append(f"{CARD_PATH} (its card)")
    if not ours:
        return
    first = remote.tags.get(V2_TAG)
    first = f"; if {first[:12]}, tagged {V2_TAG!r}, was the first, it is its parent" if first else ""
    raise PublishError(
        f"{repo_id} holds v1 data ({len(remote.v1_files)} files: {_names(sorted(remote.v1_files))}) beside v2 "
        f"files this tool wrote ({_names(ours)}) at its head {remote.head[:12]}, and has no tag {V1_TAG!r}: an "
        f"earlier run published v2 without converting the v1 files, so the head is not the v1 state, and tagged "
        f"{V1_TAG!r} it would make load_dataset({repo_id!r}, revision={V1_TAG!r}) read v2; expected a tag "
        f"{V1_TAG!r} on the last commit that held the v1 data alone; {NOTHING_PUBLISHED}; find that commit in the "
        f"repo's history (the one before the first v2 publication{first}), tag it with `hf repos tag create "
        f"{repo_id} {V1_TAG} --revision COMMIT --repo-type dataset`, then re-run: the run removes the v1 files "
        "from main"
    )


def check_v1_tag(
    api: HfApi, repo_id: str, remote: RemoteState, *, token: str | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> None:
    """Refuse to remove from `main` v1 files that revision `v1`, a tag on another commit than the head, does not
    hold byte for byte (by their git blob ids, one paths-info request): no named revision would keep them.

    A tag `v1` on the head holds them by definition, and one that does not exist yet is made on the head."""
    tagged = remote.tags.get(V1_TAG)
    if not remote.v1_files or tagged is None or tagged == remote.head:
        return
    paths = sorted(remote.v1_files)
    infos = _retry(
        retry,
        f"check that revision {V1_TAG!r} of {repo_id} holds the v1 files of main",
        lambda: api.get_paths_info(repo_id, paths, revision=tagged, repo_type="dataset", token=token),
        endpoint=api.endpoint,
    )
    held = {info.path: getattr(info, "blob_id", None) for info in infos}
    missing = [path for path in paths if held.get(path) is None or held[path] != remote.files[path].blob_id]
    if missing:
        raise PublishError(
            f"{repo_id} holds v1 data at main that its revision {V1_TAG!r} (commit {tagged[:12]}) does not hold as "
            f"it is ({len(missing)} of {len(paths)} files: {_names(missing)}); the conversion removes every v1 file "
            f"from main, and no named revision would keep these; expected revision {V1_TAG!r} to hold every v1 file "
            f"of main byte for byte; {NOTHING_PUBLISHED}; move the tag to the commit that holds them (`hf repos tag "
            f"delete {repo_id} {V1_TAG} --repo-type dataset`, then `hf repos tag create {repo_id} {V1_TAG} --revision "
            "COMMIT --repo-type dataset`), or delete those files from main if nobody needs them, then re-run"
        )


def conversion_notes(repo_id: str, remote: RemoteState) -> list[str]:
    """What converting the remote's v1 data does, for the run's output: one line, then one line per split naming
    every v1 file. Empty for a repo without v1 data."""
    if not remote.v1_files:
        return []
    if V1_TAG not in remote.tags:
        tag = f"it tags the head {remote.head[:12]} {V1_TAG!r} before anything changes"
    elif remote.tags[V1_TAG] == remote.head:
        tag = f"the head {remote.head[:12]} is tagged {V1_TAG!r} already"
    else:
        tag = f"revision {V1_TAG!r} is commit {remote.tags[V1_TAG][:12]}, tagged before"
    if remote.card is None:
        card = f"The repo has no card ({CARD_PATH}); the v2 card is added."
    elif replaces_v1_card(remote):
        card = f"Its card {CARD_PATH} is replaced by the v2 card; the v1 card stays readable at revision {V1_TAG!r}."
    else:
        card = ""  # a card changed since the tag: `check_card` says what becomes of it
    load = f"load_dataset({json.dumps(repo_id)}, revision={json.dumps(V1_TAG)})"
    count = _files(len(remote.v1_files))
    lines = [
        f"{repo_id} holds v1 data in {count} (image, label, spatial_weights and dist_map as flat lists, no "
        f"{V2_COLUMN!r} column), listed below by the split that {load} reads each as.",
        f"This run converts it: {tag}, and its one commit removes the {count} from main, where v2 takes their "
        f"place; they stay readable at revision {V1_TAG!r}: {load}. {card}".rstrip(),
    ]
    for split, paths in v1_by_split(remote).items():
        if split is None:
            lines.append(
                f"v1 data in no split that load_dataset reads at revision {V1_TAG!r} ({_files(len(paths))}): "
                f"{', '.join(paths)}; removed from main all the same, and kept at revision {V1_TAG!r} (read them "
                "there with data_files=...)"
            )
        else:
            lines.append(f"v1 {split} ({_files(len(paths))}): {', '.join(paths)}")
    return lines


def _files(count: int) -> str:
    return f"{count} file{'' if count == 1 else 's'}"


def split_notes(repo_id: str, remote: RemoteState, *, built: Collection[str], raw_splits: Collection[str]) -> list[str]:
    """Lines on the splits of a conversion that do not pair up (`built`: the `pupil` splits this run publishes,
    `raw_splits`: those of the raw data): a v1 split without raw data to rebuild it, and a split v1 lacked."""
    if not remote.v1_files:
        return []
    v1_splits = [split for split in v1_by_split(remote) if split is not None]
    notes = [
        f"{repo_id}: v1 split {split!r} is not rebuilt: the raw data of this run has no {split} split. It leaves "
        f"main with the rest of v1, so main has no {split} split, and stays readable at revision {V1_TAG!r}: "
        f"load_dataset({json.dumps(repo_id)}, revision={json.dumps(V1_TAG)}, split={json.dumps(split)}). To "
        f"publish it as v2, run push.py on raw data that holds a {split} split, with --splits {split}"
        for split in v1_splits
        if split not in built and split not in raw_splits
    ]
    for split in (split for split in built if split not in v1_splits):
        notes.append(
            f"{repo_id}: v1 has no {split} split: this publication adds it to main (revision {V1_TAG!r} has none)"
        )
    return notes
