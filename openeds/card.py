"""The dataset card, rendered from the real shards (its preview pictures: ``openeds.preview``).

The card is ``card_template.md`` (shipped with the code) filled with
:class:`huggingface_hub.DatasetCardData`. Its YAML carries the ``configs`` and the
``dataset_info`` (features and split sizes) that ``load_dataset(repo)`` uses.

Every card this tool writes ends with a checksum line (an HTML comment, invisible on the Hub, in a
provenance block since it differs between builds of the same data, like the command): the sha256 of
the card's text without that line and without the YAML keys ``configs`` and
``dataset_info``, which only say where the data files are and how large they are, and which each
publication rewrites from the repo's files. ``card_origin`` tells a card this tool wrote and nobody
edited since (``generated``) from one a person wrote or edited (``edited``, ``unsigned``): publishing
replaces only the first kind unless told to (``openeds.hub``, ``push.py --replace-card``), so text
an owner wrote on the Hub is never lost without a word. Cards written before the checksum existed
count as ``unsigned``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import yaml
from huggingface_hub import DatasetCard, DatasetCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from openeds import schema
from openeds.disk import human_bytes
from openeds.layout import PREVIEW_PATHS, shard_glob, split_prefix

if TYPE_CHECKING:
    from datasets.info import DatasetInfosDict

# `datasets` is imported in the functions that use it: it costs a second of start-up, which
# push.py's early failures (flags, token, lock, raw tree) do without.

logger = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("card_template.md")
#: The template's provenance lines (where and how this copy was built) sit between these markers;
#: the card may hold several such blocks.
PROVENANCE_START = "<!-- provenance -->"
PROVENANCE_END = "<!-- /provenance -->"
#: Config names that earlier cards used for a config, read back as that config. v1 and the first v2
#: cards named `pupil` `default`; a card naming both says `pupil` for it.
LEGACY_CONFIG_NAMES = {"default": "pupil"}
#: The YAML keys each publication rewrites from the repo's files; the checksum leaves them out, so a card
#: whose file listing was changed (an earlier name of a config, a split left out) still counts as generated.
DATA_KEYS = ("configs", "dataset_info")
#: The last line of a generated card; `{digest}` is the sha256 of the card without it (see `card_checksum`).
#: It sits in a provenance block: like the command and the paths, it differs between builds of the same data.
CHECKSUM_LINE = (
    f"{PROVENANCE_START}<!-- openeds-precomputed card, checksum sha256:{{digest}}. A publication replaces this card "
    f"only while its text matches the checksum; see `python push.py --help` (--replace-card). -->{PROVENANCE_END}"
)
_CHECKSUM_RE = re.compile(
    rf"^(?:{PROVENANCE_START})?<!-- openeds-precomputed card, checksum sha256:(?P<digest>[0-9a-f]{{64}})\b.*?-->"
    rf"(?:{PROVENANCE_END})?[ \t]*$\n?",
    re.MULTILINE,
)
CardOrigin = Literal["generated", "edited", "unsigned"]
#: What the card's config table says of each config: its label, its `dist_map`.
CONFIG_DOCS = {
    "pupil": ("binary pupil mask", "2 channels: not pupil, pupil"),
    "full": ("raw classes 0 bg, 1 sclera, 2 iris, 3 pupil", "4 channels, one per class"),
}


@dataclass(frozen=True)
class SplitSize:
    rows: int
    parquet_bytes: int


SourceKind = Literal["sample", "local", "kaggle"]


@dataclass(frozen=True)
class Source:
    """Where a build's raw frames came from; the card says what this tells, and no more.

    ``sample``: the synthetic sample (``openeds.synthetic``); ``local``: a folder given with
    ``--data-dir``, which holds the Kaggle layout but may have come from anywhere; ``kaggle``: the
    Kaggle dataset ``slug``, downloaded by this run or an earlier one.
    """

    kind: SourceKind
    slug: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(SourceKind):
            raise ValueError(f"source kind {self.kind!r}; expected one of {', '.join(get_args(SourceKind))}")
        if (self.kind == "kaggle") != (self.slug is not None):
            raise ValueError(f"source {self.kind!r} with slug {self.slug!r}; expected a slug for 'kaggle' only")

    @property
    def description(self) -> str:
        if self.kind == "sample":
            return "the synthetic sample of `openeds.synthetic`, not real OpenEDS data"
        if self.kind == "local":
            return "a local copy of OpenEDS in the Kaggle layout (`--data-dir`)"
        return f"OpenEDS as downloaded from the Kaggle dataset {self._kaggle_link}"

    @property
    def _kaggle_link(self) -> str:
        return f"[`{self.slug}`](https://www.kaggle.com/datasets/{self.slug})"

    def described(self, synthetic: Literal["all", "some", ""], splits: Sequence[str] = ()) -> str:
        """What the card says of the source, the data's provenance told: ``synthetic`` says whether all the splits
        the card lists, some (``splits``, named), or none hold the synthetic sample (``openeds.provenance``)."""
        if synthetic == "all" and self.kind != "sample":
            via = (
                "a folder given with `--data-dir`"
                if self.kind == "local"
                else f"the Kaggle dataset {self._kaggle_link}"
            )
            return f"the synthetic sample of `openeds.synthetic` ({via}), not real OpenEDS data"
        if synthetic == "some":
            named = ", ".join(splits)
            return f"{self.description}; {named}: the synthetic sample of `openeds.synthetic`, not real OpenEDS data"
        return self.description


def _versions() -> str:
    names = ["datasets", "huggingface_hub", "numpy", "scipy", "opencv-python-headless", "pyarrow"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found)


def dataset_infos(sizes: dict[str, dict[str, SplitSize]]) -> DatasetInfosDict:
    """``{config: DatasetInfo}`` from ``{config: {split: size}}`` (the Hub config name is the config name)."""
    import datasets
    from datasets.info import DatasetInfosDict

    infos = {}
    for config, splits in sizes.items():
        ordered = ordered_splits(splits)
        split_dict = datasets.SplitDict()
        for split in ordered:
            split_dict.add(
                datasets.SplitInfo(
                    split, num_bytes=splits[split].rows * schema.raw_row_bytes(config), num_examples=splits[split].rows
                )
            )
        infos[config] = datasets.DatasetInfo(
            features=schema.features_for(config),
            splits=split_dict,
            download_size=sum(s.parquet_bytes for s in splits.values()),
            dataset_size=sum(s.rows for s in splits.values()) * schema.raw_row_bytes(config),
        )
    return DatasetInfosDict(infos)


def card_data(text: str | None) -> DatasetCardData | None:
    """The YAML header of a published card, or None if there is no card or its header cannot be read."""
    if not text:
        return None
    try:
        return DatasetCard(text).data
    except (ValueError, yaml.YAMLError) as error:
        logger.warning("The published card's YAML header cannot be read (%s); not using it", error)
        return None


def without_provenance(text: str) -> str:
    """The card without the text between each pair of its provenance markers (source, versions, command,
    local paths).

    Two cards equal after this describe the same publication. Text after a marker left unclosed is kept.
    """
    out, at = [], 0
    while (start := text.find(PROVENANCE_START, at)) >= 0:
        end = text.find(PROVENANCE_END, start + len(PROVENANCE_START))
        if end < 0:
            break
        out.append(text[at : start + len(PROVENANCE_START)])
        at = end
    return "".join(out) + text[at:]


def _without_checksum(text: str) -> str:
    return _CHECKSUM_RE.sub("", text)


def _canonical(text: str) -> str:
    """What the checksum covers: the text without checksum lines, the YAML header parsed and written back
    sorted and without `DATA_KEYS` (so the Hub's reformatting of the header changes nothing), line endings
    as `\\n`, trailing blank space dropped. A header that cannot be parsed is kept as it is."""
    text = _without_checksum(text.replace("\r\n", "\n"))
    match = REGEX_YAML_BLOCK.search(text)
    if match:
        try:
            header = yaml.safe_load(match.group(2))
        except yaml.YAMLError:
            header = None
        if isinstance(header, dict):
            kept = {key: value for key, value in header.items() if key not in DATA_KEYS}
            text = f"---\n{yaml.safe_dump(kept, sort_keys=True, allow_unicode=True)}---\n{text[match.end() :]}"
    return text.rstrip()


def card_checksum(text: str) -> str:
    """The sha256 (hex) a generated card carries in its checksum line."""
    return hashlib.sha256(_canonical(text).encode("utf-8")).hexdigest()


def sign(text: str) -> str:
    """`text` with its checksum line at the end (a line it already has is replaced)."""
    base = _without_checksum(text).rstrip("\n") + "\n\n"
    return base + CHECKSUM_LINE.format(digest=card_checksum(base)) + "\n"


def card_origin(text: str) -> CardOrigin:
    """`generated`: a card this tool wrote, unedited but for `DATA_KEYS`; `edited`: one it wrote that was
    changed since; `unsigned`: no checksum line (written by a person, another tool, or a version of this
    tool from before the checksum)."""
    text = text.replace("\r\n", "\n")
    lines = list(_CHECKSUM_RE.finditer(text))
    if not lines:
        return "unsigned"
    return "generated" if lines[-1]["digest"] == card_checksum(text) else "edited"


def comparable(text: str) -> str:
    """The card without its provenance blocks and its checksum line: two cards equal after this describe
    the same publication."""
    return without_provenance(_without_checksum(text))


def ordered_splits(splits: Iterable[str]) -> list[str]:
    """The v2 splits in their usual order, then any other split name a repo holds, sorted."""
    names = set(splits)
    return [s for s in schema.SPLITS if s in names] + sorted(names - set(schema.SPLITS))


def _splits_table(sizes: dict[str, dict[str, SplitSize]]) -> str:
    lines = ["| config | split | rows | parquet size | bytes per row |", "|---|---|---:|---:|---:|"]
    for config, splits in sizes.items():
        for split in ordered_splits(splits):
            size = splits[split]
            per_row = size.parquet_bytes / size.rows if size.rows else 0
            lines.append(
                f"| `{config}` | {split} | {size.rows:,} | "
                f"{size.parquet_bytes / 1e6:,.1f} MB | {per_row / 1e6:.2f} MB |"
            )
    return "\n".join(lines)


def _disk_table(sizes: dict[str, dict[str, SplitSize]]) -> str:
    """Per config: rows, the parquet bytes a download fetches, and the Arrow cache `load_dataset` writes."""
    lines = ["| config | rows | download (parquet) | Arrow cache written by `load_dataset` |", "|---|---:|---:|---:|"]
    for config, splits in sizes.items():
        rows = sum(size.rows for size in splits.values())
        download = sum(size.parquet_bytes for size in splits.values())
        arrow = rows * schema.raw_row_bytes(config)  # the arrays uncompressed; list offsets add a fraction of 1 %
        lines.append(f"| `{config}` | {rows:,} | {human_bytes(download)} | about {human_bytes(arrow)} |")
    return "\n".join(lines)


def render_card(
    sizes: dict[str, dict[str, SplitSize]],
    *,
    repo_id: str,
    source: Source,
    command: str,
    synthetic: Collection[tuple[str, str]],
    previews: Mapping[str, str] | None = None,
    v1_revision: bool = False,
) -> DatasetCard:
    """The full dataset card for the splits in ``sizes`` (``{config: {split: size}}``), signed (`sign`).

    ``synthetic``: the ``(config, split)`` pairs that hold the synthetic sample, as the data tells
    (``openeds.provenance``), whatever ``source`` says: all of them make a card of the synthetic sample, some a
    "partly synthetic" one naming them, none a card of OpenEDS. ``previews`` maps configs to the preview pictures
    the repo holds (default: every config's in ``sizes``). ``v1_revision``: the repo has a revision ``v1`` (its
    v1 data), which the card then names.
    """
    from datasets.utils.metadata import MetadataConfigs

    if previews is None:
        previews = {config: PREVIEW_PATHS[config] for config in sizes}
    rows = sum(s.rows for splits in sizes.values() for s in splits.values())
    listed = [(config, split) for config, splits in sizes.items() for split in ordered_splits(splits)]
    named = [f"`{config}` {split}" for config, split in listed if (config, split) in synthetic]
    kind: Literal["all", "some", ""] = "all" if named and len(named) == len(listed) else "some" if named else ""
    card_data = DatasetCardData(
        pretty_name="OpenEDS precomputed (v2)"
        + {"all": ", synthetic sample", "some": ", partly synthetic"}.get(kind, ""),
        # No license_link: the OpenEDS licence agreement has no public URL we could check; the card names it.
        license="other",
        license_name="openeds-dataset-license",
        task_categories=["image-segmentation"],
        tags=["eye-tracking", "openeds", "pupil-segmentation", "semantic-segmentation"],
        size_categories=["10K<n<100K" if rows > 10_000 else "n<1K" if rows < 1_000 else "1K<n<10K"],
    )
    dataset_infos(sizes).to_dataset_card_data(card_data)
    MetadataConfigs(
        {
            config: {
                "data_files": [
                    {"split": split, "path": shard_glob(split_prefix(config, split))}
                    for split in ordered_splits(splits)
                ],
                **({"default": True} if config == schema.DEFAULT_CONFIG else {}),
            }
            for config, splits in sizes.items()
        }
    ).to_dataset_card_data(card_data)
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        repo_id=repo_id,
        format_version=schema.FORMAT_VERSION,
        previews=[(config, previews[config]) for config in schema.CONFIG_NAMES if config in previews],
        dist_channels=schema.DIST_CHANNELS,
        configs=[config for config in schema.CONFIG_NAMES if config in sizes],
        default_config=schema.DEFAULT_CONFIG,
        config_docs=CONFIG_DOCS,
        splits_table=_splits_table(sizes),
        disk_table=_disk_table(sizes),
        row_bytes={config: human_bytes(schema.raw_row_bytes(config)) for config in schema.CONFIG_NAMES},
        columns=list(schema.COLUMN_DOCS.items()),
        synthetic=kind,
        synthetic_splits=named,
        source_text=source.described(kind, named),
        v1_revision=v1_revision,
        versions=_versions(),
        command=command,
        citation=schema.CITATION,
    )
    return DatasetCard(sign(str(card)))
