"""The remote splits a publication keeps: checked against the raw data as it is now, and sized for the card.

A publication rebuilds some splits (`rebuilt`, `{config: splits}`) and keeps every other split the
repo holds (`kept_splits`), which the new card lists beside the new ones. The rule, as for the local
folder (`openeds.materialize.stale_reason`): a card never describes data built from inputs that have
since changed. So `check_kept`, which push.py calls once the raw data is listed and before anything
is built, reads the build record in the footer of each kept shard (`openeds.hub.footers`, ranged
reads) and compares it with what the raw data would build now (`openeds.materialize.records_stale_reason`:
versions, frames, xxh3 hashes of the inputs):

* current: kept, and listed by the card;
* stale (built from other files, frames or versions): the run stops with one line naming each such
  split, why, and the one command that rebuilds them with what the run was asked to build; the Hub
  is left as it was. Neither publishing data of a config the user did not ask about, nor deleting
  published data, is done without being asked;
* not checkable, kept with a warning line naming it: a split whose shards carry no build record (a
  version of this tool before the records, or another tool), or one whose raw split this raw data
  lacks (a copy holding only some splits).

A `--tag` that already names the head is checked here too (`check_tag_at_head`): the run may then
only confirm that publication, so a run that would commit (a split rebuilt that the Hub lacks or holds
from other inputs) is refused before the build. `kept_sizes` sizes the kept splits for the card, from
the footers already read (no footer is read twice) and the repo's listing, never from the old card's text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Final, Literal

from huggingface_hub import HfApi

from openeds import raw
from openeds.card import SplitSize
from openeds.hub.errors import DEFAULT_RETRY, NOTHING_PUBLISHED, PublishError
from openeds.hub.footers import read_footers
from openeds.hub.planning import next_publication_tag
from openeds.hub.remote import RemoteState, remote_splits
from openeds.layout import SHARD_RE, complete_shard_set, split_prefix
from openeds.materialize import records_stale_reason
from openeds.parquet import source_of
from openeds.retry import RetryPolicy
from openeds.schema import CONFIG_NAMES, SPLITS

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (config, split)
Verdict = Literal["current", "stale", "unrecorded", "gone"]
#: What helps with a kept shard that is not parquet, besides replacing it.
_REBUILD_FIX: Final = "or rebuild its split (--splits) so that this run replaces it"


def kept_splits(remote: RemoteState, rebuilt: Mapping[str, Sequence[str]]) -> dict[Key, list[str]]:
    """`{(config, split): shard paths}` of the remote splits a run rebuilding `rebuilt` keeps (v1 data left out)."""
    return {
        (config, split): paths
        for config, splits in remote_splits(remote).items()
        for split, paths in splits.items()
        if split not in rebuilt.get(config, ())
    }


def check_kept(
    api: HfApi,
    repo_id: str,
    remote: RemoteState,
    *,
    rebuilt: Mapping[str, Sequence[str]],
    raw_splits: Collection[str],
    pairs: Mapping[str, Sequence[raw.Pair]],
    digests: dict[raw.Pair, str],
    rebuild: Callable[[str, Sequence[str] | None], str],
    token: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[str]:
    """Check each kept remote split against the raw data as it is now (module docstring); the warning lines.

    `raw_splits` names the splits of the raw data; `pairs` maps each of them that a kept split needs to
    its frames as they pair up now; `digests` holds the input hashes computed so far in the run (filled
    here). `rebuild(config, splits)` is the command line that builds those splits of `config` (`all`:
    both; `splits` None: every split) from this run's raw data. A stale split is a PublishError of one
    line, raised before anything changes.
    """
    kept = kept_splits(remote, rebuilt)
    _read(api, repo_id, remote, kept.values(), token, retry)
    stale: dict[Key, str] = {}
    notes = []
    for key, paths in sorted(kept.items(), key=_order):
        verdict, why = _judge(key, paths, remote, raw_splits, pairs, digests)
        config, split = key
        if verdict == "stale":
            stale[key] = why
        elif verdict == "unrecorded":
            notes.append(
                f"{repo_id}: {config}/{split} is kept as the Hub holds it, unchecked: {why}, so whether it was built "
                f"from the raw data as it is now cannot be told, and the card lists it. If its images or labels "
                f"changed since, rebuild it with: {rebuild(config, [split])}"
            )
        elif verdict == "gone":
            notes.append(
                f"{repo_id}: {config}/{split} is kept as the Hub holds it, unchecked: the raw data of this run has no "
                f"{split} split to compare it with, and the card lists it. To check or rebuild it, run from raw data "
                f"that holds {split}: {rebuild(config, [split])}"
            )
    if stale:
        listed = "; ".join(f"{config}/{split}: {why}" for (config, split), why in sorted(stale.items(), key=_order))
        raise PublishError(
            f"{repo_id} holds {len(stale)} split(s) that this run keeps but that were not built from the raw data "
            f"as it is now ({listed}); publishing would list them in the new card beside data built from the new "
            f"inputs; expected every split the card lists built from the same raw data; {NOTHING_PUBLISHED} and "
            f"nothing was built. Rebuild them with what this run builds, in one run: "
            f"{_rebuild_all(stale, rebuilt, raw_splits, rebuild)}"
        )
    return notes


def check_tag_at_head(
    api: HfApi,
    repo_id: str,
    remote: RemoteState,
    tag: str | None,
    *,
    rebuilt: Mapping[str, Sequence[str]],
    pairs: Mapping[str, Sequence[raw.Pair]],
    digests: dict[raw.Pair, str],
    token: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> None:
    """Refuse a `tag` that already names the head when this run would commit, before anything is built.

    A tag naming another commit is refused right after `connect` (`openeds.hub.planning.check_tag_free`).
    One naming the head may only confirm it: the run is then one that publishes nothing (`holds`), which
    it can only be if every split it builds is on the Hub, whole, and built from the same inputs (the
    shards are deterministic). A card that changes all the same (another template) is refused by
    `publish`, before the upload.
    """
    if tag is None or not remote.head or remote.tags.get(tag) != remote.head:
        return
    held = remote_splits(remote)
    changes = ["it converts the v1 data"] if remote.v1_files else []
    wanted = {
        (config, split): held.get(config, {}).get(split, []) for config, splits in rebuilt.items() for split in splits
    }
    _read(api, repo_id, remote, wanted.values(), token, retry)
    for key, paths in sorted(wanted.items(), key=_order):
        name = "/".join(key)
        if not paths:
            changes.append(f"{name} is not on the Hub yet")
        elif paths != complete_shard_set(split_prefix(*key), paths):
            changes.append(f"the Hub holds only some shards of {name}")
        elif (found := _judge(key, paths, remote, pairs, pairs, digests))[0] != "current":
            changes.append(f"{name} on the Hub: {found[1]}")
    if changes:
        raise PublishError(
            f"tag {tag!r} already names the head of {repo_id} ({remote.head[:12]}), and this run would publish a new "
            f"commit ({'; '.join(changes)}); expected a new tag for a new publication (a tag is never moved); "
            f"{NOTHING_PUBLISHED} and nothing was built; pass another --tag, or none for the next one "
            f"({next_publication_tag(remote.tags)})"
        )


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

    Taken from the repo itself, never from the published card's text (which anyone may have edited): bytes
    from the sizes of the split's shards in the repo's listing (complete: `remote.list_files`), rows from
    the shards' parquet footers (those `check_kept` read, else ranged reads). Every remote split is kept,
    listed by the old card or not, so a new card never hides files the repo holds.
    """
    sizes: dict[str, dict[str, SplitSize]] = {}
    for (config, split), paths in kept_splits(remote, rebuilt).items():
        if paths != complete_shard_set(split_prefix(config, split), paths):
            expected = len(complete_shard_set(split_prefix(config, split), paths))
            logger.warning(
                "%s holds %d of the %d shards of %s/%s; the card lists those",
                repo_id,
                len(paths),
                expected,
                config,
                split,
            )
        footers = read_footers(
            api, repo_id, remote.head, paths, token=token, retry=retry, cache=remote.footers, fix=_REBUILD_FIX
        )
        rows = sum(footer.num_rows for footer in footers.values())
        sizes.setdefault(config, {})[split] = SplitSize(rows, sum(remote.files[path].size for path in paths))
    return sizes


def _read(
    api: HfApi,
    repo_id: str,
    remote: RemoteState,
    shard_sets: Iterable[Sequence[str]],
    token: str | None,
    retry: RetryPolicy,
) -> None:
    """Read the footers of every shard of `shard_sets` (lists of paths) into `remote.footers`."""
    paths = [path for paths in shard_sets for path in paths]
    read_footers(api, repo_id, remote.head, paths, token=token, retry=retry, cache=remote.footers, fix=_REBUILD_FIX)


def _judge(
    key: Key,
    paths: Sequence[str],
    remote: RemoteState,
    raw_splits: Collection[str],
    pairs: Mapping[str, Sequence[raw.Pair]],
    digests: dict[raw.Pair, str],
) -> tuple[Verdict, str]:
    """Whether the remote split `key` (its shards' footers read) is what the raw data builds now, and why not."""
    config, split = key
    shards = [SHARD_RE.fullmatch(path) for path in paths]
    counts = sorted({int(shard["count"]) for shard in shards if shard})
    if len(counts) != 1:
        sets = " and ".join(f"-of-{count:05d}" for count in counts)
        return "stale", f"its shards are of more than one set ({sets}), as no single build writes them"
    records = {
        int(shard["index"]): source_of(remote.footers[path]) for shard, path in zip(shards, paths, strict=True) if shard
    }
    if any(record is None for record in records.values()):
        lacking = sum(record is None for record in records.values())
        return "unrecorded", (
            f"{lacking} of its {len(records)} shard(s) carry no build record (published by a "
            "version of this tool before the records, or by another tool)"
        )
    if split not in raw_splits:
        return "gone", f"the raw data has no {split} split"
    why = records_stale_reason(records, counts[0], config, split, pairs[split], digests)  # type: ignore[arg-type]
    return ("current", "") if why is None else ("stale", why)


def _rebuild_all(
    stale: Mapping[Key, str],
    rebuilt: Mapping[str, Sequence[str]],
    raw_splits: Collection[str],
    rebuild: Callable[[str, Sequence[str] | None], str],
) -> str:
    """One command building what the run builds and the stale splits: every config and split of either.

    It may rebuild a current split too; its shards then come out byte for byte as the Hub holds them, and
    are neither committed nor uploaded again.
    """
    configs = {config for config, splits in rebuilt.items() if splits} | {config for config, _ in stale}
    splits = {split for splits in rebuilt.values() for split in splits} | {split for _, split in stale}
    config = "all" if len(configs) > 1 else next(iter(configs))
    return rebuild(config, None if splits >= set(raw_splits) else sorted(splits, key=SPLITS.index))


def _order(item: tuple[Key, object]) -> tuple[int, int]:
    (config, split), _ = item
    return (
        CONFIG_NAMES.index(config) if config in CONFIG_NAMES else len(CONFIG_NAMES),
        SPLITS.index(split) if split in SPLITS else len(SPLITS),
    )
