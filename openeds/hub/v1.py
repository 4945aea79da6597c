"""v1 data on the Hub, recognised by its content wherever it sits, and the split `datasets` gives each file.

v1 (`Conner/openeds-precomputed` before this tool) was written by VisionAssist's precompute script:
shards of 500 rows written with `pq.write_table`, uploaded with `HfApi.upload_folder` as
`data/train/shard_00000.parquet`, ... and `data/validation/shard_00000.parquet`, ..., and no card.
Other copies of v1 may sit under `push_to_hub`'s names (`data/train-00000-of-00001.parquet`), in a
`datasets` cache layout (`.../default/0.0.0/<hash>/openeds-precomputed-train.arrow`), in a
`save_to_disk` folder (`train/data-00000-of-00001.arrow`), or in any other folder. So a name never
says whether a file is v1 data; its schema does (`is_v1_schema`): the arrays `image`, `label`,
`spatial_weights` and `dist_map` as flat lists of numbers, and no `preprocessed` column.

`find_v1_files` reads the schema of each data file of the head (`DATA_SUFFIXES`: parquet, and the
Arrow files of `datasets`' caches and `save_to_disk`) with ranged GETs (`openeds.hub.footers`: a
parquet footer, kept in the run's footer cache, or the start of an Arrow file). It skips only what
needs no read: this tool's own shards (`data/`, `full/`, as `openeds.layout` names them) when the
card is one this tool wrote and nobody edited (`openeds.card.card_origin`), which says they are v2.
A v2 repo published by this tool thus costs no read, and the real v1 repo one small read a file.
A file named as this tool's shard that is not parquet is one `PublishError` line naming it; a file of
another name that is not of its format is no v1 data (the run names it among the files it leaves).

`resolve_splits` gives each v1 file the split that `load_dataset(repo, revision="v1")` reads it as,
by the installed `datasets` itself: `datasets.data_files.get_data_patterns` and `resolve_pattern`
run over an empty copy of the repo's tree in a temporary folder (the card's `configs`, when it has
any, instead: `sanitize_patterns`). So `data/train/shard_00000.parquet` is `train` (a folder named
after the split), `data/train-00000-of-00001.parquet` too (a file name), and `data/shard_00000.parquet`
in a repo without split names is `train` (everything is). A v1 file that no split reads is None.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi

from openeds.card import card_data, card_origin
from openeds.hub.footers import WrongFormatError, read_arrow_schema, read_footer
from openeds.layout import CONFIG_DIRS, SHARD_RE
from openeds.retry import RetryPolicy

V2_COLUMN: Final = "preprocessed"  # the column v2 added; v1 data has none
#: The arrays v1 stored, each as a flat list of numbers (reshaped by its reader).
V1_ARRAYS: Final = ("image", "label", "spatial_weights", "dist_map")
#: Files whose schema is read: parquet, and Arrow (a `datasets` cache, a `save_to_disk` folder), any case.
DATA_SUFFIXES: Final = (".parquet", ".arrow")
#: Schemas read at once: each is a small request, and the real v1 repo holds about 60 shards.
_PARALLEL: Final = 8


def is_v1_schema(schema: pa.Schema) -> bool:
    """Whether `schema` is v1's: every array of `V1_ARRAYS` a flat list of integers or floats, and no `preprocessed`.

    Other columns (v1's `filename`) may be there too; the element types are not pinned (v1's writers
    used uint8/float32, a `datasets` 2.x push int64)."""
    if V2_COLUMN in schema.names:
        return False
    for name in V1_ARRAYS:
        if schema.get_field_index(name) < 0:  # absent (or twice)
            return False
        kind = schema.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            return False
        if not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
            return False
    return True


def is_own_shard(path: str) -> bool:
    """Whether `path` is named as this tool names its shards (`data/test-00000-of-00002.parquet`, `full/...`)."""
    shard = SHARD_RE.fullmatch(path)
    return shard is not None and shard["dir"] in CONFIG_DIRS.values()


def find_v1_files(
    api: HfApi,
    repo_id: str,
    head: str,
    paths: Iterable[str],
    card: str | None,
    *,
    token: str | None,
    retry: RetryPolicy,
    footers: MutableMapping[str, pq.FileMetaData],
) -> list[str]:
    """The data files among `paths` (the repo's files at `head`) whose schema is v1's, sorted (module docstring).

    `card` is the text of the repo's card at `head` (None: none); `footers` is the run's footer cache."""
    vouched = card is not None and card_origin(card) == "generated"
    todo = [p for p in sorted(paths) if p.lower().endswith(DATA_SUFFIXES) and not (vouched and is_own_shard(p))]
    if not todo:
        return []

    def schema_of(path: str) -> pa.Schema | None:
        try:
            if path.lower().endswith(".parquet"):
                footer = read_footer(api, repo_id, head, path, token=token, retry=retry, cache=footers)
                return footer.schema.to_arrow_schema()
            return read_arrow_schema(api, repo_id, head, path, token=token, retry=retry)
        except WrongFormatError:
            if is_own_shard(path):
                raise  # a shard of this tool that is not parquet: said as it is
            return None  # not of its format, so not v1 data: one of the files this tool did not write

    executor = ThreadPoolExecutor(max_workers=min(_PARALLEL, len(todo)), thread_name_prefix="v1-schema")
    try:
        schemas = list(executor.map(schema_of, todo))  # the first failure, in path order, is raised
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [path for path, schema in zip(todo, schemas, strict=True) if schema is not None and is_v1_schema(schema)]


def resolve_splits(tree: Iterable[str], wanted: Iterable[str], card: str | None = None) -> dict[str, str | None]:
    """`{path: split}` for each of `wanted`: the split `load_dataset` gives it in a repo holding the files `tree`
    (and `wanted`) and the card `card`, by the installed `datasets` (module docstring); None where no split reads it.

    A tree that `datasets` itself cannot resolve (a split name it refuses) leaves every file None."""
    from datasets.data_files import get_data_patterns, resolve_pattern

    splits: dict[str, str | None] = dict.fromkeys(sorted(wanted))
    if not splits:
        return splits
    with tempfile.TemporaryDirectory(prefix="openeds-tree-") as scratch:
        root = Path(scratch).resolve()
        for path in {*tree, *splits}:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).touch()
        try:
            patterns = _card_patterns(card) or get_data_patterns(str(root))
        except (FileNotFoundError, ValueError):  # no data file datasets reads, or a split name it refuses
            return splits
        for split, split_patterns in patterns.items():
            for pattern in split_patterns:
                try:
                    matched = resolve_pattern(pattern, str(root))
                except FileNotFoundError:
                    continue
                for found in matched:
                    path = Path(found).resolve().relative_to(root).as_posix()
                    if path in splits and splits[path] is None:
                        splits[path] = str(split)
    return splits


def _card_patterns(card: str | None) -> dict[str, list[str]]:
    """`{split: patterns}` of the `data_files` of the card's `configs` (every config, in order), or {} if none."""
    from datasets.data_files import sanitize_patterns

    data = card_data(card)
    configs = data.get("configs") if data is not None else None
    patterns: dict[str, list[str]] = {}
    for config in configs if isinstance(configs, list) else ():
        data_files = config.get("data_files") if isinstance(config, Mapping) else None
        if data_files:
            for split, found in sanitize_patterns(data_files).items():
                patterns.setdefault(split, []).extend(found)
    return patterns
