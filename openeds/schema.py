"""The v2 schema of ``Conner/openeds-precomputed``, declared once.

The builder's ``_info``, ``push.py``, the dataset card and the tests all import these
features, so there is a single definition of what a v2 row is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import datasets

from preprocessing.shapes import DIST_CHANNELS, HEIGHT, WIDTH  # noqa: F401 (part of the schema, declared in the core)

#: Where the raw data comes from, and how to cite it (the builder's info and the card use these).
KAGGLE_PAGE = "https://www.kaggle.com/datasets/soumicksarker/openeds-dataset"
CITATION = """@article{garbin2019openeds,
  title   = {OpenEDS: Open Eye Dataset},
  author  = {Garbin, Stephan J. and Shen, Yiru and Schuetz, Immo and Cavin, Robert
             and Hughes, Gregory and Talathi, Sachin S.},
  journal = {arXiv preprint arXiv:1905.03702},
  year    = {2019}
}"""

#: Version of the data format. v1 stored flat lists and the raw image; v2 stores typed
#: arrays, the gamma + CLAHE image and a ``preprocessed`` flag.
FORMAT_VERSION = "2.0.0"

ConfigName = Literal["pupil", "full"]
CONFIG_NAMES: tuple[str, ...] = get_args(ConfigName)
DEFAULT_CONFIG: ConfigName = "pupil"
SPLITS = ("train", "validation", "test")

COLUMN_DOCS = {
    "image": "uint8 [400, 640]: raw frame after gamma 0.8 (truncated LUT) and CLAHE (clip 1.5, 8x8 tiles)",
    "label": "uint8 [400, 640]: pupil mask (1 = pupil) for `pupil`; raw classes 0..3 for `full`",
    "spatial_weights": "float32 [400, 640]: 20 on the dilated Canny edges of the label, else 0",
    "dist_map": "float32 [C, 400, 640]: normalised signed distance per class (C = 2 for `pupil`, 4 for `full`)",
    "filename": "string: stem of the source image (no `.png`)",
    "preprocessed": "bool: always True in v2; the image already has gamma + CLAHE applied",
}


def check_config(name: str) -> ConfigName:
    if name not in CONFIG_NAMES:
        raise ValueError(f"unknown config {name!r}; expected one of {', '.join(CONFIG_NAMES)}")
    return name  # type: ignore[return-value]


def features_for(config: str) -> datasets.Features:
    """The v2 features of ``config`` (``pupil`` or ``full``)."""
    # Imported here, not at the top: `datasets` costs a second of start-up, and push.py's early
    # failures, the Kaggle download and the lock need only the names and sizes above.
    import datasets

    channels = DIST_CHANNELS[check_config(config)]
    return datasets.Features(
        {
            "image": datasets.Array2D((HEIGHT, WIDTH), "uint8"),
            "label": datasets.Array2D((HEIGHT, WIDTH), "uint8"),
            "spatial_weights": datasets.Array2D((HEIGHT, WIDTH), "float32"),
            "dist_map": datasets.Array3D((channels, HEIGHT, WIDTH), "float32"),
            "filename": datasets.Value("string"),
            "preprocessed": datasets.Value("bool"),
        }
    )


def __getattr__(name: str) -> dict[str, datasets.Features]:
    """``FEATURES``, ``{config: features_for(config)}``, built on first use (see `features_for`)."""
    if name == "FEATURES":
        globals()["FEATURES"] = features = {config: features_for(config) for config in CONFIG_NAMES}
        return features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def raw_row_bytes(config: str) -> int:
    """Uncompressed bytes of one row's arrays in ``config``: an upper bound on its parquet size."""
    return HEIGHT * WIDTH * (1 + 1 + 4 + 4 * DIST_CHANNELS[check_config(config)])
