"""Whether the data a card describes is the synthetic sample: told by the data, never by the flag that named it.

The synthetic sample (``openeds.synthetic``) writes a marker file in each of its split folders. A
split that a folder or a Hub repo holds is synthetic when

* a footer of its shards says so (``openeds_provenance``, written when a shard is built from a marked
  raw split, and kept by every later run, which skips complete shards as they are), or
* this run built it from a marked raw split, or checked it against one: its build records hold the
  xxh3 hashes of its input files, so a split whose records match is made of that split's very frames.

Any other split is described as OpenEDS. So ``push.py --data-dir RAW`` on a copy of the sample says
it is synthetic as ``--sample`` does, also when it rebuilds nothing ("already complete"), and so does
a Kaggle download that turns out to be the sample. A card that lists splits of both kinds (a split
built from the sample beside one built from real data) is "partly synthetic" and names the synthetic
splits (``openeds.card``): it never calls synthetic frames OpenEDS, nor real ones synthetic.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import pyarrow.parquet as pq

from openeds.layout import split_prefix
from openeds.parquet import provenance_of, source_of
from openeds.synthetic import is_marked

Key = tuple[str, str]  # (config, split)


def marked_splits(split_dirs: Mapping[str, Path]) -> frozenset[str]:
    """The raw splits whose folders carry the synthetic sample's marker."""
    return frozenset(split for split, folder in split_dirs.items() if is_marked(folder))


def says_synthetic(footer: pq.FileMetaData) -> bool:
    """Whether a shard's footer says its frames are the synthetic sample."""
    return provenance_of(footer).get("synthetic") is True


def _synthetic(footers: Iterable[pq.FileMetaData], checked: bool, split: str, marked: Collection[str]) -> bool:
    return any(says_synthetic(footer) for footer in footers) or (checked and split in marked)


def local_synthetic(local_dir: Path, listed: Iterable[Key], marked: Collection[str]) -> frozenset[Key]:
    """The splits of ``listed`` that hold the synthetic sample, of the splits a local folder's card lists.

    Each was built by this run or checked current against the raw data (``push.py`` lists no other), so a marked
    raw split (``marked``) speaks for it as well as its footers.
    """
    found = set()
    for config, split in listed:
        shards = sorted(local_dir.glob(f"{split_prefix(config, split)}*-of-*.parquet"))
        if _synthetic((pq.read_metadata(shard) for shard in shards), True, split, marked):
            found.add((config, split))
    return frozenset(found)


def remote_synthetic(
    kept: Mapping[Key, Sequence[str]],
    footers: Mapping[str, pq.FileMetaData],
    raw_splits: Collection[str],
    marked: Collection[str],
) -> frozenset[Key]:
    """The splits of ``kept`` (``{key: shard paths}``, the Hub's splits a publication keeps) that hold the sample.

    ``footers`` holds the footers ``openeds.hub.check_kept`` read. That check ends the run on a kept split that is
    stale, so one whose shards all carry a build record and whose raw split this run has was checked current, and
    a marked raw split speaks for it too.
    """
    found = set()
    for (config, split), paths in kept.items():
        read = [footers[path] for path in paths if path in footers]
        checked = len(read) == len(paths) and split in raw_splits and all(source_of(f) is not None for f in read)
        if _synthetic(read, checked, split, marked):
            found.add((config, split))
    return frozenset(found)
