"""openeds.disk: sizes in messages, the one free-space check, atomic writes on a full disk."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from openeds.disk import human_bytes, is_disk_full, require_free_space, write_atomically

pytestmark = pytest.mark.datasets_independent("sizes, free space and atomic writes")


@pytest.mark.parametrize(
    "n,text",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.00 kB"),
        (640_000, "640 kB"),
        (12_345_678, "12.3 MB"),
        (99_949_999, "99.9 MB"),
        (1_500_000_000, "1.50 GB"),
        (2_000_000_000_000, "2000 GB"),
    ],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


class Refused(RuntimeError):
    pass


def test_not_enough_space_names_the_folder_both_sizes_and_the_fix(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(Refused) as info:
        require_free_space(
            tmp_path, 2 * free + 10**9, purpose="to extract x.zip", fix="pass --cache-dir elsewhere", error=Refused
        )
    message = str(info.value)
    assert message.startswith(f"not enough free disk space in {tmp_path}: ")
    assert re.search(r": \d+(\.\d+)? [kMG]?B free, about \d+(\.\d+)? [kMG]?B needed to extract x\.zip; ", message)
    assert message.endswith("Fix: free some space or pass --cache-dir elsewhere")
    require_free_space(tmp_path, 0, purpose="", fix="", error=Refused)


def test_sizes_that_round_alike_are_given_in_bytes(tmp_path):
    """Never `0.01 GB free, about 0.01 GB needed`: sizes within rounding of each other are exact."""
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(Refused) as info:
        require_free_space(tmp_path, free + 1, purpose="for 3 rows", fix="x", error=Refused)
    sizes = re.search(r": ([\d,]+) bytes free, about ([\d,]+) bytes needed for 3 rows", str(info.value))
    assert sizes, str(info.value)
    have, want = (int(s.replace(",", "")) for s in sizes.groups())
    assert have < want


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 1 MB tmpfs with an earlier file on it, then filled up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (mount / "card.md").write_text("the earlier card\n")
        (mount / "filler").write_bytes(bytes(shutil.disk_usage(mount).free))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_failed_atomic_write_keeps_the_earlier_file_and_leaves_nothing(full_disk):
    with pytest.raises(OSError) as info:
        write_atomically(full_disk / "card.md", b"the new card\n" * 1000)
    assert is_disk_full(info.value)
    assert (full_disk / "card.md").read_text() == "the earlier card\n"
    assert sorted(p.name for p in full_disk.iterdir()) == ["card.md", "filler"]


def test_an_atomic_write_replaces_the_file(tmp_path):
    (tmp_path / "card.md").write_text("old")
    write_atomically(tmp_path / "card.md", b"new")
    assert (tmp_path / "card.md").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]
