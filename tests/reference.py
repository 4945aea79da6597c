"""Plain reference implementations, written straight from FACTS.md section 1.

Slow and obvious on purpose: this is what v1's precompute script and the training
code computed. The fast code in ``preprocessing/`` is tested against it.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt


def image(raw: np.ndarray) -> np.ndarray:
    table = 255.0 * np.linspace(0, 1, 256) ** 0.8
    gamma = np.uint8(cv2.LUT(raw, table))
    return cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8)).apply(gamma)


def spatial_weights(canny_input: np.ndarray) -> np.ndarray:
    # Verbatim v1, including the (3, 3) passed as the dilate *kernel*.
    return (cv2.dilate(cv2.Canny(canny_input, 0, 3) / 255, (3, 3), iterations=1) * 20).astype(np.float32)


def sdf(mask: np.ndarray) -> np.ndarray:
    """float64 signed distance map of a boolean mask, as v1 computed it (before the float32 cast)."""
    h, w = mask.shape
    if not mask.any():
        return np.zeros(mask.shape, np.float64)
    neg = ~mask
    res = distance_transform_edt(neg) * neg - (distance_transform_edt(mask) - 1) * mask
    return res / np.sqrt((h - 1) ** 2 + (w - 1) ** 2)


def targets(raw_label: np.ndarray, config: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label uint8, spatial_weights float32, dist_map float64) of one frame."""
    if config == "pupil":
        label = (raw_label == 3).astype(np.uint8)
        weights = spatial_weights(label * 255)
        dist = np.stack([sdf(label == 0), sdf(label == 1)])
    else:
        label = raw_label.astype(np.uint8)
        weights = spatial_weights(label)
        dist = np.stack([sdf(label == i) for i in range(4)])
    return label, weights, dist


# -- PNG, written plainly from the PNG specification (3rd edition), to make test files of any header --------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Adam7's seven passes: (first column, first row, column step, row step)
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """length, type, data, CRC-32 of type and data (section 5.3)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def ihdr(width: int, height: int, bit_depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    """The IHDR chunk (section 11.2.1): compression and filter method 0."""
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, interlace))


def _scanlines(samples: np.ndarray, bit_depth: int) -> bytes:
    """Each row of ``samples`` (rows, samples per row) as filter type 0 and its packed samples, MSB first."""
    out = []
    for row in samples:
        if bit_depth == 16:
            packed = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            packed = row.astype(np.uint8).tobytes()
        else:
            bits = (row.astype(np.uint8)[:, None] >> np.arange(bit_depth - 1, -1, -1)) & 1
            packed = np.packbits(bits.reshape(-1)).tobytes()
        out.append(b"\x00" + packed)
    return b"".join(out)


def png(
    samples: np.ndarray,
    bit_depth: int = 8,
    colour: int = 0,
    interlace: int = 0,
    *,
    before_idat: tuple[bytes, ...] = (),
    header: bytes | None = None,
) -> bytes:
    """A PNG of ``samples`` (rows, columns[, samples per pixel]); ``header`` replaces the IHDR made from them,
    ``before_idat`` are chunks (e.g. PLTE, tRNS) put between IHDR and IDAT."""
    height, width = samples.shape[:2]
    flat = samples.reshape(height, width, -1)
    if interlace:
        passes = [flat[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
        data = b"".join(_scanlines(p.reshape(p.shape[0], -1), bit_depth) for p in passes if p.size)
    else:
        data = _scanlines(flat.reshape(height, -1), bit_depth)
    head = ihdr(width, height, bit_depth, colour, interlace) if header is None else header
    chunks = [head, *before_idat, png_chunk(b"IDAT", zlib.compress(data)), png_chunk(b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(chunks)
