"""The preview picture: which rows it draws (the edge cases a split holds), and its size limits.

The picture push.py writes for the sample is checked in tests/test_push.py (`out_all`): its width, its
bytes and its rows.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openeds import preview
from openeds.parquet import read_rows
from openeds.synthetic import EDGE_CASES, render_eye

pytestmark = pytest.mark.datasets_independent("the preview's rows and pixels: our code and OpenCV decide them")

#: the traits of the sample's frame kinds, by config (the `pupil` label is the raw label's class 3)
SAMPLE_TRAITS = {
    "pupil": {
        "normal": set(),
        "closed": {"no pupil"},
        "border": {"pupil at the border"},
        "full_frame": set(),
        "lid_pupil": {"no pupil"},
    },
    "full": {
        "normal": set(),
        "closed": {"no sclera, iris, pupil"},
        "border": {"pupil at the border"},
        "full_frame": {"no background"},
        "lid_pupil": {"no pupil"},
    },
}


@pytest.mark.parametrize("kind", ["normal", *EDGE_CASES])
def test_the_traits_of_the_sample_kinds(kind):
    _, raw = render_eye(np.random.default_rng(3), kind)
    assert preview.traits((raw == 3).astype(np.uint8), 2) == SAMPLE_TRAITS["pupil"][kind]
    assert preview.traits(raw, 4) == SAMPLE_TRAITS["full"][kind]


def test_the_traits_of_labels_the_sample_does_not_draw():
    label = np.zeros((40, 64), np.uint8)
    label[30:40, 20:30] = 1  # a pupil cut by the bottom edge
    assert preview.traits(label, 2) == {"pupil at the border"}
    full = label * 3  # the same pupil as the full config's class 3, an iris beside it, and no sclera
    full[5:10, 20:30] = 2
    assert preview.traits(full, 4) == {"no sclera", "pupil at the border"}
    assert preview.traits(np.ones((40, 64), np.uint8), 2) == {"no not pupil", "pupil at the border"}  # all pupil
    label = np.zeros((40, 64), np.uint8)
    label[10:20, 10:20] = 1  # a pupil inside the frame
    assert preview.traits(label, 2) == set()


@pytest.mark.parametrize(
    ("found", "picked"),
    [
        # the edge cases late in the shard are picked, one per trait, after the first ordinary row
        ([set()] * 20 + [{"no pupil"}, {"no pupil"}, {"pupil at the border"}], [0, 1, 2, 20, 22]),
        # more traits than rows: the first ordinary row, then the rows with traits not shown yet
        ([{"a"}, {"b"}, set(), {"c"}, {"a", "d"}, {"e"}, {"f"}], [0, 1, 2, 3, 4]),
        # no ordinary row at all; rows with traits already shown fill up
        ([{"a"}, {"a"}, {"a"}], [0, 1, 2]),
        ([set()] * 9, [0, 1, 2, 3, 4]),
        ([set(), {"x"}], [0, 1]),
    ],
)
def test_the_rows_picked(found, picked):
    assert preview.pick([frozenset(t) for t in found]) == picked


def _rows(count: int, rng: np.random.Generator, channels: int = 2) -> list[dict]:
    rows = []
    for i in range(count):
        _, raw = render_eye(rng, EDGE_CASES[i % len(EDGE_CASES)])
        label = (raw == 3).astype(np.uint8) if channels == 2 else raw
        rows.append(
            {
                "image": rng.integers(0, 256, raw.shape, dtype=np.uint8),  # noise: the worst case for PNG
                "label": label,
                "spatial_weights": (rng.random(raw.shape) < 0.01).astype(np.float32) * 20,
                "dist_map": rng.normal(0, 0.3, (channels, *raw.shape)).astype(np.float32),
                "filename": f"{i:012d}",
                "traits": preview.traits(label, channels),
            }
        )
    return rows


@pytest.mark.parametrize("channels", [2, 4])
def test_a_picture_of_noise_keeps_the_limits(channels, tmp_path):
    """Noise does not compress: the picture still fits in MAX_BYTES (fewer levels, then smaller) and MAX_WIDTH."""
    path = tmp_path / "preview.png"
    preview.render(_rows(preview.ROWS, np.random.default_rng(0), channels), path)
    assert path.stat().st_size <= preview.MAX_BYTES
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[1] <= preview.MAX_WIDTH and picture.shape[0] > 200


def test_read_rows_reads_the_rows_asked_across_row_groups(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table({"n": list(range(10)), "grid": [[[i, i + 1]] for i in range(10)]})
    pq.write_table(table, path, row_group_size=3)
    rows = read_rows(path, indices=[7, 0, 4, 9])
    assert [row["n"] for row in rows] == [7, 0, 4, 9]
    assert [row["grid"].tolist() for row in rows] == [[[7, 8]], [[0, 1]], [[4, 5]], [[9, 10]]]
    assert [row["n"] for row in read_rows(path, 5, columns=["n"])] == [0, 1, 2, 3, 4]
    assert list(read_rows(path, 2, columns=["n"])[0]) == ["n"] and read_rows(path, indices=[]) == []
