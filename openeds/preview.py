"""The preview picture of a config: a few rows of a split, readable at the size the Hub shows a card's images.

One line per row, one column per array: the image; the label over the dimmed image, each class a colour,
with the spatial weights drawn on it in green, thickened so that a one-pixel ring survives the scaling;
then each distance map, in one diverging colour scale centred on 0 for all of them, blue inside the
class (negative), white at its boundary (0), red outside (positive), on a square-root scale so that
the small negative values inside a pupil still show their sign; a colour bar gives the values. Thin
separators part the rows and the columns, and each row is labelled with its filename and what makes it
an edge case.

**Which rows.** A shard's first rows are often alike. The rows are picked from the first
:data:`SCAN_ROWS` of the split's first shard by what their label shows (:func:`traits`): a class
absent (no pupil: a closed eye, a pupil under the lid; no background: an eye covering the frame) or
the pupil cut by the frame's border. The first ordinary row comes first, then a row for each trait not
shown yet, then more ordinary rows, up to :data:`ROWS`, in the shard's order. The synthetic sample's
edge cases (``openeds.synthetic.EDGE_CASES``) are found so; so are the real data's, whatever their
names.

**Size.** At most :data:`MAX_WIDTH` pixels wide and :data:`MAX_BYTES` bytes: the Hub shows a card's
images in a column about 800 pixels wide, and a smaller file loads faster. OpenCV and NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from openeds.disk import write_atomically
from openeds.names import shown
from openeds.parquet import num_rows, read_rows
from openeds.schema import DIST_CHANNELS, HEIGHT, WIDTH

MAX_WIDTH = 900
MAX_BYTES = 300_000
#: rows drawn
ROWS = 5
#: rows of the first shard whose labels are read to find the edge cases
SCAN_ROWS = 512
#: the classes of a label with this many classes (the distance-map channels, in order)
CLASS_NAMES = {2: ("not pupil", "pupil"), 4: ("background", "sclera", "iris", "pupil")}
#: BGR colour of each class over the dimmed image (None: not coloured), per class count
CLASS_COLOURS = {
    2: (None, (0, 140, 255)),
    4: (None, (200, 170, 40), (200, 60, 150), (0, 140, 255)),
}
WEIGHTS_COLOUR = (60, 255, 60)
#: the same colours as text on white (the weights' green darker, to be read there)
_TEXT_COLOURS = {"weights": (0, 150, 0)}
#: the diverging scale, from -1 (deep inside a class) through 0 (its boundary) to +1 (far outside): RGB anchors
_ANCHORS_RGB = (
    (20, 50, 130),
    (70, 130, 210),
    (190, 215, 240),
    (250, 250, 250),
    (245, 200, 170),
    (220, 95, 70),
    (120, 10, 30),
)
_GAP, _HEADER, _BAR, _BAR_LABELS = 2, 34, 14, 52
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _diverging_table() -> np.ndarray:
    """256 BGR colours: index 0 is -1, 127.5 is 0, 255 is +1, linear between the anchors."""
    anchors = np.array(_ANCHORS_RGB, np.float64)[:, ::-1]
    at = np.linspace(0, 255, len(anchors))
    return np.stack([np.interp(np.arange(256), at, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


_TABLE = _diverging_table()


def traits(label: np.ndarray, classes: int) -> frozenset[str]:
    """What makes a row an edge case, from its label (``classes`` classes): the classes it lacks (``no pupil``,
    ``no sclera, iris, pupil``, ``no background``), and ``pupil at the border`` when the pupil (the last class)
    touches the frame's edge. An ordinary row has none."""
    counts = np.bincount(label.ravel(), minlength=classes)
    names = CLASS_NAMES[classes]
    found = set()
    absent = [names[c] for c in range(classes) if counts[c] == 0]
    if absent:
        found.add("no " + ", ".join(absent))
    pupil = label == classes - 1
    if counts[classes - 1] and (pupil[0].any() or pupil[-1].any() or pupil[:, 0].any() or pupil[:, -1].any()):
        found.add("pupil at the border")
    return frozenset(found)


def pick(found: Sequence[frozenset[str]], count: int = ROWS) -> list[int]:
    """Which rows to draw, of rows with these :func:`traits` (module docstring): indices, in order."""
    ordinary = [i for i, t in enumerate(found) if not t]
    chosen, shown_traits = ordinary[:1], set()
    for i, t in enumerate(found):
        if len(chosen) < count and t - shown_traits:
            chosen.append(i)
            shown_traits |= t
    rest = [i for i in [*ordinary, *range(len(found))] if i not in chosen]
    chosen += list(dict.fromkeys(rest))[: max(count - len(chosen), 0)]
    return sorted(chosen)


def preview_rows(shard: Path, config: str) -> list[dict]:
    """The rows of ``shard`` to draw (module docstring), each with its ``traits``."""
    classes = DIST_CHANNELS[config]
    labels = read_rows(shard, min(num_rows(shard), SCAN_ROWS), columns=["label"])
    found = [traits(row["label"], classes) for row in labels]
    chosen = pick(found)
    rows = read_rows(shard, indices=chosen)
    for row, index in zip(rows, chosen, strict=True):
        row["traits"] = found[index]
    return rows


def _tile_size(columns: int) -> tuple[int, int]:
    width = (MAX_WIDTH - _BAR - _BAR_LABELS - _GAP * (columns + 2)) // columns
    return width, round(width * HEIGHT / WIDTH)


def _shrink(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def _image_tile(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.cvtColor(_shrink(image, size), cv2.COLOR_GRAY2BGR)


def _label_tile(
    image: np.ndarray, label: np.ndarray, weights: np.ndarray, classes: int, size: tuple[int, int]
) -> np.ndarray:
    """The label's classes over the dimmed image, and the weights drawn on top, thickened to stay visible."""
    # the image dimmed, in 16 grey levels: context for the label, and a few bytes
    tile = (_image_tile(image, size) // 16 * 7).astype(np.uint8)
    for value, colour in enumerate(CLASS_COLOURS[classes]):
        if colour is None:
            continue
        share = _shrink((label == value).astype(np.float32), size)[..., None] * 0.6
        tile = (tile * (1 - share) + np.array(colour, np.float32) * share).astype(np.uint8)
    ring = cv2.dilate((_shrink((weights > 0).astype(np.float32), size) > 0).astype(np.uint8), np.ones((2, 2), np.uint8))
    tile[ring > 0] = WEIGHTS_COLOUR
    return tile


def _dist_tile(dist: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """A signed distance map in the diverging colours: ``sign(d) * sqrt(|d| / scale)`` from -1 to +1."""
    signed = np.sign(dist) * np.sqrt(np.abs(dist) / scale)
    index = np.clip(np.rint(127.5 + 127.5 * signed), 0, 255).astype(np.uint8)
    return _TABLE[_shrink(index, size)]


def _text(canvas: np.ndarray, text: str, at: tuple[int, int], scale: float = 0.42, colour=(0, 0, 0)) -> int:
    """Write ``text`` with its baseline's left end at ``at``; the x after it."""
    cv2.putText(canvas, text, at, _FONT, scale, colour, 1, cv2.LINE_AA)
    return at[0] + cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def _words(canvas: np.ndarray, words: Sequence[tuple[str, tuple[int, int, int]]], at: tuple[int, int]) -> None:
    """Words one after the other, each in its colour."""
    x, y = at
    for word, colour in words:
        x = _text(canvas, word, (x, y), colour=colour) + 4


def _annotate(tile: np.ndarray, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    """Lines of text on a black band at the bottom of a tile, the first line on top."""
    height = tile.shape[0]
    top = height - 14 * len(lines) - 3
    tile[top:] = 0
    for i, (text, colour) in enumerate(lines):
        _text(tile, text, (3, top + 14 * (i + 1)), 0.4, colour)


def _colour_bar(height: int, scale: float) -> np.ndarray:
    """The colour scale of the distance maps, +scale at the top, -scale at the bottom, with its values."""
    bar = np.full((height, _BAR + _BAR_LABELS, 3), 255, np.uint8)
    signed = np.linspace(1, -1, height)
    bar[:, :_BAR] = _TABLE[np.clip(np.rint(127.5 + 127.5 * signed), 0, 255).astype(np.uint8)][:, None]
    for at in (1, 0.5, 0, -0.5, -1):
        y = min(max(int(round((1 - at) / 2 * (height - 1))), 0), height - 1)
        value = np.sign(at) * at * at * scale  # the inverse of the square-root scale
        bar[y, _BAR : _BAR + 4] = 0
        label = "0" if at == 0 else f"{value:+.2f}"
        _text(bar, label, (_BAR + 6, min(max(y + 4, 10), height - 2)), 0.4)
    return bar


def render(rows: list[dict], path: Path) -> None:
    """Draw ``rows`` (from :func:`preview_rows`) into the PNG ``path``; at most :data:`MAX_WIDTH` px wide."""
    channels = len(rows[0]["dist_map"])
    names = CLASS_NAMES[channels]
    size = _tile_size(2 + channels)
    tile_w, tile_h = size
    scale = max(max(float(np.abs(row["dist_map"]).max()) for row in rows), 1e-6)
    lines = []
    for row in rows:
        image = _image_tile(row["image"], size)
        notes = [(trait, (0, 255, 255)) for trait in sorted(row.get("traits", ()))]
        _annotate(image, [*notes, (str(row["filename"]), (255, 255, 255))])
        tiles = [image, _label_tile(row["image"], row["label"], row["spatial_weights"], channels, size)]
        for channel in row["dist_map"]:
            tiles.append(_dist_tile(channel, scale, size))
            if not channel.any():  # an absent class: all zeros, which alone would look like a blank
                _text(tiles[-1], "class absent: all 0", (4, tile_h // 2 + 4), 0.4, (90, 90, 90))
        line = np.full((tile_h, _GAP + len(tiles) * (tile_w + _GAP), 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            line[:, _GAP + i * (tile_w + _GAP) : _GAP + i * (tile_w + _GAP) + tile_w] = tile
        lines.append(line)
    body = np.full((len(lines) * (tile_h + _GAP) + _GAP, lines[0].shape[1], 3), 200, np.uint8)
    for i, line in enumerate(lines):
        body[_GAP + i * (tile_h + _GAP) : _GAP + i * (tile_h + _GAP) + tile_h] = line
    for i in range(1, len(lines)):  # the row separators, darker than the column gaps
        body[i * (tile_h + _GAP) : i * (tile_h + _GAP) + _GAP] = 120
    header = np.full((_HEADER, body.shape[1], 3), 255, np.uint8)
    black = (0, 0, 0)
    classes = [(name, colour) for name, colour in zip(names, CLASS_COLOURS[channels], strict=True) if colour]
    titles = [
        ([("image", black)], []),
        ([("label", black), ("+", black), ("weights", _TEXT_COLOURS["weights"])], classes),
        *(([(f"dist_map[{i}]", black)], [(name, black)]) for i, name in enumerate(names)),
    ]
    for i, (first, second) in enumerate(titles):
        x = _GAP + i * (tile_w + _GAP) + 2
        _words(header, first, (x, 14))
        _words(header, second, (x, 29))
    picture = np.vstack([header, body])
    bar = np.full((picture.shape[0], _BAR + _BAR_LABELS + _GAP, 3), 255, np.uint8)
    bar[_HEADER + _GAP : _HEADER + body.shape[0] - _GAP, _GAP:] = _colour_bar(body.shape[0] - 2 * _GAP, scale)
    _text(bar, "dist_map", (_GAP, 14), 0.4)
    _text(bar, "-in +out", (_GAP, 29), 0.4)
    write_atomically(path, _encode(np.hstack([picture, bar]), path))


def _encode(picture: np.ndarray, path: Path) -> bytes:
    """PNG bytes of ``picture`` within :data:`MAX_BYTES`: as it is; else in fewer levels a channel (down to 32),
    which a noisy image needs; else smaller, step by step."""
    levels, scale = 256, 1.0
    while True:
        step = 256 // levels
        drawn = picture if step == 1 else (picture // step * step + step // 2).astype(np.uint8)
        if scale < 1:
            drawn = cv2.resize(drawn, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", drawn, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise OSError(f"could not encode the preview picture {shown(path)}")
        if png.size <= MAX_BYTES:
            return png.tobytes()
        levels, scale = (levels // 2, scale) if levels > 32 else (levels, scale * 0.85)


def write_preview(shard: Path, config: str, path: Path) -> None:
    """The preview picture of ``config`` at ``path``, from the split whose first shard is ``shard``."""
    render(preview_rows(shard, config), path)
