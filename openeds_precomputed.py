"""OpenEDS v2: eye images with gamma + CLAHE already applied, and their training targets.

A HuggingFace ``datasets`` builder over the raw Kaggle copy of OpenEDS
(``soumicksarker/openeds-dataset``). Two configs:

* ``pupil`` (default): the v2 schema of ``Conner/openeds-precomputed``, a binary pupil
  label and two distance channels [not pupil, pupil];
* ``full``: the raw 0..3 label (RITnet semantics) and four distance channels.

The Hub repo has the same two configs under the same names: ``load_dataset(repo)`` and
``load_dataset(repo, "pupil")`` load ``pupil``, ``load_dataset(repo, "full")`` loads ``full``.

Run it (datasets < 4, which still runs loading scripts)::

    datasets-cli test openeds_precomputed.py --data_dir RAW --trust_remote_code --all_configs

(without ``--data_dir`` it downloads the raw data from Kaggle, once), or on any datasets
version, as a plain builder class::

    from openeds_precomputed import OpenEDSPrecomputed
    builder = OpenEDSPrecomputed(config_name="full", data_dir="RAW")
    builder.download_and_prepare(num_proc=2)
    ds = builder.as_dataset()
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from openeds import download, raw, schema
from openeds.rows import iter_rows

_LICENSE = "OpenEDS research license (Meta Reality Labs); see the dataset card"


@dataclass
class OpenEDSConfig(datasets.BuilderConfig):
    """``name`` is ``pupil`` or ``full``; ``on_missing_label`` is ``error`` or ``skip``.

    Without ``data_dir`` the raw data is downloaded from the Kaggle dataset
    ``kaggle_dataset`` into ``raw_cache_dir`` (default ``~/.cache/openeds-precomputed``), once.
    """

    on_missing_label: raw.MissingLabelPolicy = "error"
    kaggle_dataset: str = download.DEFAULT_SLUG
    raw_cache_dir: str | None = None

    def __post_init__(self):
        super().__post_init__()
        schema.check_config(self.name)
        if self.on_missing_label not in raw.MISSING_LABEL_POLICIES:
            raise ValueError(
                f"on_missing_label={self.on_missing_label!r}; expected one of {raw.MISSING_LABEL_POLICIES}"
            )


class OpenEDSPrecomputed(datasets.GeneratorBasedBuilder):
    """OpenEDS eye segmentation, preprocessed (v2)."""

    VERSION = datasets.Version(schema.FORMAT_VERSION)
    BUILDER_CONFIG_CLASS = OpenEDSConfig
    BUILDER_CONFIGS = [
        OpenEDSConfig(name="pupil", version=VERSION, description="Binary pupil label, dist_map [not pupil, pupil]."),
        OpenEDSConfig(name="full", version=VERSION, description="Raw 0..3 label, dist_map for the four classes."),
    ]
    DEFAULT_CONFIG_NAME = schema.DEFAULT_CONFIG
    # A row is about 3.6 MB (5.6 MB in `full`); the default 1000-row writer buffer would
    # hold gigabytes. 16 rows keeps the peak of each process well under 1 GiB.
    DEFAULT_WRITER_BATCH_SIZE = 16

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__.split("\n\n")[0],
            features=schema.features_for(self.config.name),
            homepage=schema.KAGGLE_PAGE,
            license=_LICENSE,
            citation=schema.CITATION,
        )

    def _split_generators(self, dl_manager):
        data_dir = self.config.data_dir or download.fetch_raw(self.config.kaggle_dataset, self.config.raw_cache_dir)
        generators = []
        split_dirs = raw.find_split_dirs(data_dir)
        for note in raw.check_disjoint(split_dirs):
            datasets.logging.get_logger(__name__).warning(note)
        for split, folder in split_dirs.items():
            listing = raw.list_pairs(folder, self.config.on_missing_label)
            for note in listing.notes(split):
                datasets.logging.get_logger(__name__).warning(note)
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"pairs": listing.pairs}))
        return generators

    def _generate_examples(self, pairs):
        yield from iter_rows(pairs, self.config.name)
