"""One run at a time in a folder: the staging folder of `push.py` and a Kaggle cache folder.

Two runs writing into the same folder would corrupt each other: both write the same
temporary names, and each run's sweep deletes the other's temporary files. So a run
holds ``<folder>/.openeds/lock`` (an OS file lock, :class:`filelock.FileLock`, released by the
kernel even when the process is killed) for as long as it writes there, and a second run
ends at once with one line naming the folder and the process holding it. The lock file
lives in the folder's one bookkeeping folder (``openeds.layout.BOOKKEEPING_DIR``, never
published) and is never deleted: a run that deleted it on its way out could let a second
run lock a new file of that name while a third still holds the old one.

The lock file itself cannot say who holds it (filelock 3.x truncates it when a contender
opens it), so the holder writes ``<folder>/.openeds/lock.owner`` right after taking the lock
and removes it when done (that record is no lock: removing it frees nothing).

Earlier versions kept ``.lock`` and ``.lock.owner`` in the folder itself, beside the files
that go to the Hub. A run retires them once it holds the new lock: it takes the old lock
too (so a run of an earlier version still writing there is refused, as any holder is),
removes both files, and lets it go.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from openeds.layout import BOOKKEEPING_DIR, LEGACY_LOCK_NAMES, LOCK_NAME, LOCK_OWNER_NAME
from openeds.names import shown

#: how long a contender waits for a holder that has just taken the lock to write its record
_OWNER_WAIT_SECONDS = 1.0


@contextlib.contextmanager
def hold(folder: Path, *, what: str, option: str, error: type[Exception]) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the body; yield the folder.

    ``what`` names the folder in messages (``the staging folder``), ``option`` is the flag
    that picks another one (``--local-dir``). Raises ``error`` with one line when ``folder``
    is a file, cannot be written, or another process holds it.
    """
    folder = Path(folder).expanduser()
    _prepare(folder, what=what, option=option, error=error)
    lock = _take(folder, folder / LOCK_NAME, folder / LOCK_OWNER_NAME, what=what, option=option, error=error)
    owner = folder / LOCK_OWNER_NAME
    try:
        try:
            owner.write_text(json.dumps(_me()) + "\n")
            _retire_legacy_lock(folder, what=what, option=option, error=error)
        except OSError as e:
            raise error(_unwritable(folder, what, option, e)) from None
        yield folder
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _take(folder: Path, path: Path, owner: Path, *, what: str, option: str, error: type[Exception]) -> FileLock:
    """The lock at `path`, taken without waiting; `error` naming the holder (its record at `owner`) if it is held."""
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise error(
            f"another {_holder(owner)} is using {what} {shown(folder)}; wait for it to finish or pass another {option}"
        ) from None
    except OSError as e:
        raise error(_unwritable(folder, what, option, e)) from None
    return lock


def _retire_legacy_lock(folder: Path, *, what: str, option: str, error: type[Exception]) -> None:
    """Remove the lock files an earlier version left in the folder itself, once no run of it holds them."""
    legacy, legacy_owner = (folder / name for name in LEGACY_LOCK_NAMES)
    if not legacy.exists():
        legacy_owner.unlink(missing_ok=True)
        return
    old = _take(folder, legacy, legacy_owner, what=what, option=option, error=error)
    try:
        legacy_owner.unlink(missing_ok=True)
        legacy.unlink(missing_ok=True)
    finally:
        old.release()


def _prepare(folder: Path, *, what: str, option: str, error: type[Exception]) -> None:
    if folder.exists() and not folder.is_dir():
        raise error(
            f"{what} {shown(folder)} is a file, not a folder; expected a folder or a path that does not exist yet. "
            f"Fix: pass another {option}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the folder itself is written, not only its bookkeeping folder
            pass
        (folder / BOOKKEEPING_DIR).mkdir(exist_ok=True)
    except OSError as e:
        raise error(_unwritable(folder, what, option, e)) from None


def _unwritable(folder: Path, what: str, option: str, e: OSError) -> str:
    where = f" ({shown(e.filename)})" if e.filename and Path(e.filename) != folder else ""
    return (
        f"{what} {shown(folder)} cannot be written: {e.strerror or e}{where}; expected a folder this user can create "
        f"and write. Fix: check its permissions and free space, or pass another {option}"
    )


def _program() -> str:
    """How this process was started, shortly: `push.py`, `python -m openeds.download`, `python`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] not in ("", "-c") else ""
    return script or "python"


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "program": _program(),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(owner: Path) -> str:
    """`push.py (pid 1234 on host, started 12:03:04)` from the record at `owner`, or `process` when the holder
    left no record (yet)."""
    deadline = time.monotonic() + _OWNER_WAIT_SECONDS
    while True:
        try:
            record = json.loads(owner.read_text())
            pid, host, started = int(record["pid"]), str(record["host"]), float(record["started"])
            program = str(record.get("program") or "process")
        except (OSError, ValueError, KeyError, TypeError):
            pass
        else:
            # A record of a dead process on this host is stale (a killed run); the holder's own is coming.
            if host != socket.gethostname() or _alive(pid):
                return f"{program} (pid {pid} on {host}, started {_when(started)})"
        if time.monotonic() > deadline:
            return "process"
        time.sleep(0.05)


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp)
    same_day = moment.date() == datetime.date.today()
    return moment.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")
