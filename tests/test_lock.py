"""openeds.lock with real processes: a second holder ends at once, naming the first."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from openeds.layout import BOOKKEEPING_DIR, LOCK_NAME, LOCK_OWNER_NAME
from openeds.lock import hold

pytestmark = pytest.mark.datasets_independent("file locks between real processes")

REPO = Path(__file__).resolve().parents[1]

#: holds the lock of argv[1] until stdin closes; argv[2] "record" writes the owner record (openeds.lock),
#: "bare" takes the same OS lock without one, as another tool might, "legacy" the lock file an earlier
#: version of this tool held, in the folder itself
HOLDER = """
import sys
from pathlib import Path
from filelock import FileLock
from openeds.layout import LOCK_NAME
from openeds.lock import hold
folder = Path(sys.argv[1])
if sys.argv[2] == "record":
    with hold(folder, what="the test folder", option="--x", error=RuntimeError):
        print("held", flush=True)
        sys.stdin.read()
else:
    path = folder / (LOCK_NAME if sys.argv[2] == "bare" else ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        print("held", flush=True)
        sys.stdin.read()
"""


class Busy(RuntimeError):
    pass


@contextmanager
def holder(folder: Path, kind: str = "record") -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), kind],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.wait()


def _take(folder: Path) -> None:
    with hold(folder, what="the test folder", option="--x", error=Busy):
        pass


def test_a_second_holder_ends_at_once_naming_the_first(tmp_path):
    folder = tmp_path / "staging"
    with holder(folder) as first:
        record = json.loads((folder / LOCK_OWNER_NAME).read_text())
        assert record["pid"] == first.pid and record["program"] == "python"
        start = time.monotonic()
        with pytest.raises(Busy) as info:
            _take(folder)
        assert time.monotonic() - start < 0.5, "it waited"
    started = time.strftime("%H:%M:%S", time.localtime(record["started"]))
    assert str(info.value) == (
        f"another python (pid {first.pid} on {socket.gethostname()}, started {started}) is using the test folder "
        f"{folder}; wait for it to finish or pass another --x"
    )


def test_the_lock_is_free_once_the_holder_ends_and_its_record_goes(tmp_path):
    """Its owner record goes; the lock file stays, in the one bookkeeping folder: never deleted."""
    folder = tmp_path / "staging"
    with holder(folder) as first:
        first.stdin.close()
        assert first.wait(timeout=30) == 0
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [BOOKKEEPING_DIR, LOCK_NAME]
    _take(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [BOOKKEEPING_DIR, LOCK_NAME]


def test_the_lock_files_of_an_earlier_version_are_retired_once_free(tmp_path):
    """`.lock` and `.lock.owner` in the folder itself (earlier versions): taken, then removed; while a run of
    such a version holds them, the folder is refused like any held folder."""
    folder = tmp_path / "staging"
    with holder(folder, "legacy"), pytest.raises(Busy, match=f"^another process is using the test folder {folder};"):
        _take(folder)
    (folder / ".lock.owner").write_text('{"pid": 999999999, "host": "gone", "started": 0}')
    _take(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [BOOKKEEPING_DIR, LOCK_NAME]


def test_a_killed_holder_frees_the_lock_and_its_stale_record_is_replaced(tmp_path):
    folder = tmp_path / "staging"
    with holder(folder) as first:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert json.loads((folder / LOCK_OWNER_NAME).read_text())["pid"] == first.pid  # left by the killed run
    with hold(folder, what="the test folder", option="--x", error=Busy):
        assert json.loads((folder / LOCK_OWNER_NAME).read_text())["pid"] == os.getpid()


def test_a_holder_without_a_record_is_still_refused(tmp_path):
    folder = tmp_path / "staging"
    with holder(folder, "bare"), pytest.raises(Busy, match=f"^another process is using the test folder {folder};"):
        _take(folder)


def test_a_stale_record_of_a_dead_process_is_not_blamed(tmp_path):
    """A killed run's record stays behind; while a new holder has not written its own, nobody is named."""
    folder = tmp_path / "staging"
    with holder(folder, "bare"):
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0, "program": "push.py"}
        (folder / LOCK_OWNER_NAME).write_text(json.dumps(stale))
        with pytest.raises(Busy, match="^another process is using"):
            _take(folder)


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_a_folder_that_is_a_file_is_refused(tmp_path, where):
    (tmp_path / "notes").write_text("mine")
    folder = tmp_path / "notes" if where == "file" else tmp_path / "notes" / "out"
    expected = "is a file, not a folder" if where == "file" else "cannot be written: Not a directory"
    with pytest.raises(Busy, match=f"^the test folder {folder} {expected}"):
        _take(folder)
    assert (tmp_path / "notes").read_text() == "mine"
