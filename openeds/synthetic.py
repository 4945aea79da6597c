"""A small, deterministic synthetic OpenEDS sample in the Kaggle layout.

The eyes look like eyes, coarsely: skin with shading, an almond-shaped opening between
two eyelids (sclera), an iris with radial texture, a dark pupil, glints, lashes and
sensor noise. Labels follow OpenEDS: 0 background, 1 sclera, 2 iris, 3 pupil.

Besides ordinary frames, every sample holds the edge cases the preprocessing must get
right (:data:`EDGE_CASES`):

* ``closed``: a closed eye, no sclera, iris or pupil (all-background label, so the
  "not pupil" mask is all True);
* ``border``: a pupil cut by the left image border;
* ``full_frame``: an eye that covers the whole frame (no background class at all);
* ``lid_pupil``: the iris shows but the pupil is hidden under the upper lid.

The sample says what it is: each split folder it writes holds :data:`MARKER`, a short text file
naming the generator, so that what is built from it is never described as OpenEDS, whichever flag
(``--sample``, ``--data-dir``, a Kaggle download of it) named the folder (:func:`is_marked`;
``openeds.provenance`` carries it into the shards' footers and the card).

``python -m openeds.synthetic OUT`` writes the sample.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from openeds import cli, stages
from openeds.names import shown
from openeds.schema import HEIGHT, WIDTH

EDGE_CASES = ("closed", "border", "full_frame", "lid_pupil")
#: The file in each split folder of the sample that says its frames are synthetic (see :func:`is_marked`).
MARKER = "SYNTHETIC.txt"
_MARKER_TEXT = (
    "The images and labels of this split were drawn by openeds.synthetic (seed {seed}), the synthetic sample of the\n"
    "openeds-precomputed builder repo. They are not OpenEDS data. push.py recognises this file and says so in the\n"
    "dataset card of anything built from this folder.\n"
)
#: frames per split; the train split carries every edge case, the others one each
DEFAULT_COUNTS: Mapping[str, int] = {"train": 8, "validation": 3, "test": 3}
_SPLIT_OFFSET = {"train": 0, "validation": 100_000, "test": 200_000}


def _kinds(split: str, count: int) -> list[str]:
    edge = list(EDGE_CASES) if split == "train" else [EDGE_CASES[list(_SPLIT_OFFSET).index(split) % len(EDGE_CASES)]]
    edge = edge[:count]
    return ["normal"] * (count - len(edge)) + edge


def render_eye(rng: np.random.Generator, kind: str = "normal") -> tuple[np.ndarray, np.ndarray]:
    """One synthetic frame: ``(image uint8[400, 640], label uint8[400, 640])``."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cy, cx = HEIGHT / 2 + rng.uniform(-30, 30), WIDTH / 2 + rng.uniform(-60, 60)
    half_width = rng.uniform(220, 290)
    upper, lower = rng.uniform(95, 135), rng.uniform(70, 100)
    iris_r = rng.uniform(85, 110)
    iy, ix = cy + rng.uniform(-25, 25), cx + rng.uniform(-70, 70)
    if kind == "closed":
        upper = lower = 0.0
    elif kind == "border":
        cx, ix = 90.0, 8.0
        iy = cy
    elif kind == "full_frame":
        half_width, upper, lower, cy, cx = 2000.0, 2000.0, 2000.0, HEIGHT / 2, WIDTH / 2
        iris_r, iy, ix = 170.0, HEIGHT / 2, WIDTH / 2
    elif kind == "lid_pupil":
        upper, lower = 45.0, 60.0
        iy = cy - 95
    pupil_r = iris_r * rng.uniform(0.3, 0.5)

    # Eyelids: parabolas through the eye corners; the opening lies between them.
    t = np.clip(1.0 - ((xx - cx) / half_width) ** 2, 0.0, None)
    lid_top, lid_bottom = cy - upper * t, cy + lower * t
    opening = (yy > lid_top) & (yy < lid_bottom)
    iris = ((yy - iy) ** 2 + (xx - ix) ** 2 < iris_r**2) & opening
    pupil = ((yy - iy) ** 2 / 0.9 + (xx - ix) ** 2 < pupil_r**2) & opening
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[opening] = 1
    label[iris] = 2
    label[pupil] = 3

    # Intensities: skin with a light gradient, sclera, textured iris, dark pupil.
    skin = rng.uniform(110, 150) + 25 * (xx / WIDTH - 0.5) + 15 * (yy / HEIGHT - 0.5)
    image = skin.copy()
    image[opening] = rng.uniform(170, 205) - 20 * np.abs(xx[opening] - cx) / max(half_width, 1.0)
    angle = np.arctan2(yy - iy, xx - ix)
    radius = np.sqrt((yy - iy) ** 2 + (xx - ix) ** 2)
    texture = 12 * np.sin(angle * rng.integers(18, 30)) + 10 * np.cos(radius / 6)
    image[iris] = rng.uniform(70, 105) + texture[iris]
    image[pupil] = rng.uniform(12, 30)
    for _ in range(int(rng.integers(1, 4))):  # corneal glints
        gy, gx = iy + rng.uniform(-0.6, 0.6) * iris_r, ix + rng.uniform(-0.6, 0.6) * iris_r
        image[((yy - gy) ** 2 + (xx - gx) ** 2 < rng.uniform(9, 36)) & opening] = 250
    lash = np.abs(yy - lid_top) < 2.5  # upper lid line and lashes (a crease when closed)
    image[lash & (t > 0)] = rng.uniform(20, 45)
    image *= 1.0 - 0.35 * (((xx - WIDTH / 2) / WIDTH) ** 2 + ((yy - HEIGHT / 2) / HEIGHT) ** 2)  # vignette
    image += rng.normal(0, 4, image.shape)
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    return image, label


def write_sample(root: str | Path, counts: Mapping[str, int] = DEFAULT_COUNTS, seed: int = 0) -> Path:
    """Write the sample under ``root/openEDS/openEDS/<split>/{images,labels,masks}``, and :data:`MARKER` in each
    split folder.

    Deterministic for a given ``counts`` and ``seed``. Returns ``root``.
    """
    root = Path(root)
    for split, count in counts.items():
        rng = np.random.default_rng([seed, _SPLIT_OFFSET[split]])
        base = root / "openEDS" / "openEDS" / split
        for sub in ("images", "labels", "masks"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        _write(base / MARKER, _MARKER_TEXT.format(seed=seed).encode("utf-8"))
        for i, kind in enumerate(_kinds(split, count)):
            stem = f"{_SPLIT_OFFSET[split] + i:012d}"
            image, label = render_eye(rng, kind)
            _write(base / "images" / f"{stem}.png", _png(image))
            label_file = io.BytesIO()
            np.save(label_file, label)
            _write(base / "labels" / f"{stem}.npy", label_file.getvalue())
            _write(base / "masks" / f"{stem}.png", _png(label * np.uint8(85)))
    return root


def is_marked(split_dir: Path) -> bool:
    """Whether the raw split folder ``split_dir`` holds :data:`MARKER`: its frames are the synthetic sample."""
    return (split_dir / MARKER).is_file()


def _png(image: np.ndarray) -> bytes:
    """The bytes ``cv2.imwrite`` writes, to be written by :func:`_write` (``imwrite`` says only False on failure)."""
    encoded, png = cv2.imencode(".png", image)
    assert encoded, f"OpenCV could not encode a {image.dtype} {image.shape} array as PNG"
    return png.tobytes()


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``; a failure (a full disk) is an ``OSError`` naming the file.

    (``np.save`` to a path says only how many bytes it wrote, and a failed ``write`` names no file.)
    """
    try:
        path.write_bytes(data)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None


#: `python -m openeds.synthetic` behind the one error boundary (`openeds.cli`)
COMMAND = cli.Command("python -m openeds.synthetic", again="run it again: it writes the whole sample afresh")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write openEDS/openEDS/... into")
    parser.add_argument("--seed", type=int, default=0)
    for split, n in DEFAULT_COUNTS.items():
        parser.add_argument(f"--{split}", type=int, default=n, metavar="N", help=f"frames in {split} (default {n})")
    cli.add_traceback_argument(parser)

    def run() -> None:
        args = parser.parse_args(argv)
        counts = {s: getattr(args, s) for s in DEFAULT_COUNTS}
        stages.now(f"writing the synthetic sample into {shown(args.out)}")
        print(write_sample(args.out, counts, args.seed))

    return cli.run(COMMAND, run)


if __name__ == "__main__":
    cli.exit(main())
