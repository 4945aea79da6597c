"""Where each file lives in a v2 dataset folder, locally and in the Hub repo (one layout for both).

    README.md                                       the dataset card (YAML `configs`, `dataset_info`)
    data/{split}-{i:05d}-of-{n:05d}.parquet         config `pupil`
    full/{split}-{i:05d}-of-{n:05d}.parquet         config `full`
    images/preview.png                              the preview picture of `pupil`, shown first by the card
    images/preview-full.png                         the preview picture of `full`

A local folder also holds ONE bookkeeping folder, `.openeds/`, which is never published
(`openeds.hub.collect_local_files` leaves it out, `load_dataset` skips hidden folders, and the card's
`data_files` patterns cannot match it):

    .openeds/lock                                   held by the run using the folder (`openeds.lock`); never deleted
    .openeds/lock.owner                             who holds it: pid, host, start time, command
    .openeds/records/{shard path}.json              each shard's size and sha256, recorded as it was written
                                                    (`openeds.records`): a file cannot hold its own hash

Nothing else but the Hub's files sits in the folder. Materialising, the card and publishing all name
files through these helpers, so none of them needs to import another to agree on a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from openeds.schema import CONFIG_NAMES, ConfigName

CARD_PATH: Final = "README.md"
#: The one bookkeeping folder of a local folder (the staging folder, a Kaggle cache folder); never published.
BOOKKEEPING_DIR: Final = ".openeds"
#: The lock file of a folder a run writes into; created once and never deleted.
LOCK_NAME: Final = f"{BOOKKEEPING_DIR}/lock"
#: Who holds the lock (JSON), written after taking it.
LOCK_OWNER_NAME: Final = f"{BOOKKEEPING_DIR}/lock.owner"
#: Where earlier versions kept the lock and its owner record, in the folder itself (`openeds.lock` moves them).
LEGACY_LOCK_NAMES: Final = (".lock", ".lock.owner")
#: The records of the shards' bytes: `{RECORDS_DIR}/{shard path}.json` (`openeds.records`).
RECORDS_DIR: Final = f"{BOOKKEEPING_DIR}/records"
#: The preview picture of each config: a few rows, every column drawn. A run draws those of the configs it builds.
PREVIEW_PATHS: Final[Mapping[ConfigName, str]] = {"pupil": "images/preview.png", "full": "images/preview-full.png"}
PREVIEW_PATH: Final = PREVIEW_PATHS["pupil"]
#: Folder of each config's shards.
CONFIG_DIRS: Final[Mapping[ConfigName, str]] = {"pupil": "data", "full": "full"}
#: A shard path: `{dir}/{split}-{index:05d}-of-{count:05d}.parquet`.
SHARD_RE: Final = re.compile(r"(?P<dir>[^/]+)/(?P<split>\w+(?:\.\w+)*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet")


def split_prefix(config: str, split: str) -> str:
    """Path prefix of the shards of `split` of `config`, e.g. `data/test-`.

    Split names hold no `-`, so one split's prefix never matches another split's shards.
    """
    if config not in CONFIG_DIRS:
        raise ValueError(f"unknown config {config!r}; expected one of {', '.join(CONFIG_NAMES)}")
    return f"{CONFIG_DIRS[config]}/{split}-"  # type: ignore[index]


def shard_path(prefix: str, index: int, count: int) -> str:
    """Shard `index` of `count` under a split prefix, e.g. `data/test-00000-of-00002.parquet`."""
    return f"{prefix}{index:05d}-of-{count:05d}.parquet"


def shard_glob(prefix: str) -> str:
    """The pattern the card gives `load_dataset` for the shards under a split prefix: exactly the names
    `shard_path` makes (`data/test-?????-of-?????.parquet`), so no other file the repo holds, such as
    `data/test-notes.txt`, is read as data."""
    return f"{prefix}?????-of-?????.parquet"


def complete_shard_set(prefix: str, paths: Sequence[str]) -> list[str]:
    """Every shard path the first of the sorted `paths` implies: `{prefix}00000-of-N` ... `(N-1)-of-N`."""
    count = int(paths[0].rsplit("-of-", 1)[1].removesuffix(".parquet"))
    return [shard_path(prefix, i, count) for i in range(count)]
