"""Local disk helpers shared by materialising (`push.py`) and the Kaggle download.

* :func:`human_bytes` writes a size the way every message of the project shows sizes;
* :func:`require_free_space` is the one free-space check, run before long writes;
* :func:`is_disk_full` tells a full disk (or quota) from other write failures;
* :func:`write_atomically` writes a small file under a temporary name and renames it,
  so a failed write leaves the earlier file intact and no temporary file behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from openeds.names import shown

#: errors that mean "no room left": the disk is full, or the user's quota is
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNITS = (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000))


def human_bytes(n: int) -> str:
    """`640 B`, `640 kB`, `12.3 MB`, `1.50 GB`: three significant digits in the largest unit that fits."""
    for unit, factor in _UNITS:
        if abs(n) >= factor:
            value = n / factor
            decimals = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{decimals}f} {unit}"
    return f"{n} B"


def require_free_space(folder: Path, needed: int, *, purpose: str, fix: str, error: type[Exception]) -> None:
    """Raise ``error`` (one line) if the disk holding ``folder`` has less than ``needed`` bytes free.

    ``purpose`` completes "needed ...", e.g. ``for 120 rows``; ``fix`` is the way out the
    caller's user has, e.g. ``pass --local-dir on a larger disk``.
    """
    free = shutil.disk_usage(folder).free
    if needed > free:
        have, want = human_bytes(free), human_bytes(needed)
        if have == want:  # sizes within rounding of each other: never print two equal numbers
            have, want = f"{free:,} bytes", f"{needed:,} bytes"
        raise error(
            f"not enough free disk space in {shown(folder)}: {have} free, about {want} needed {purpose}; "
            f"expected room for it. Fix: free some space or {fix}"
        )


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _FULL_ERRNOS


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.{name}.partial``; on any failure the old ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
