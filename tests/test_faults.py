"""The fault catalogue: `push.py` run as a user runs it, once per case, in a fresh process.

Each case breaks one thing (the raw tree, the local folder, the Hub, the flags, the
environment), runs `python push.py ...` against the local test Hub, and checks what a user
would see and what is left behind:

* the exit code;
* a failure prints exactly one `error: ...` line (argparse's usage errors: one
  `python push.py: error: ...` line) and names what was wrong; a success or a warning prints
  what it promised;
* never a `Traceback`, never the token;
* nothing half-done: no temporary file left in the local folder, and a failed run leaves the
  Hub repo exactly as it was (same head, same tags);
* whatever the case's own `check` asserts on top (the earlier state intact, the data right).

Adding a failure path to the code means adding its case here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi

from openeds.card import card_origin, sign
from openeds.synthetic import MARKER, write_sample
from tests import reference
from tests.hub_server import HubServer, SilentServer
from tests.kaggle_server import Credentials, KaggleStub
from tests.push_runner import run_push
from tests.test_download import with_entry
from tests.test_hub import push_v1
from tests.v1data import tiny_v1_table

pytestmark = pytest.mark.datasets_independent("our checks decide push.py's failures; a Case says when it needs both")

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_faults_write_token"
READ_TOKEN = "hf_faults_read_token"
#: a small sample: every run builds it, so it is kept tiny (the edge cases are in train)
COUNTS = {"train": 3, "validation": 1, "test": 1}


@dataclass
class World:
    """One case's surroundings: a raw tree of its own, a local folder, a Hub repo id, the environment."""

    tmp: Path
    raw: Path
    out: Path
    repo_id: str
    hub: HubServer
    env: dict[str, str]
    #: undone after the case, last first, pass or fail (a helper process, a mount)
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    #: the Kaggle stub of a case that downloads the raw data
    kaggle: KaggleStub | None = None

    @property
    def split_dir(self) -> Path:
        return self.raw / "openEDS" / "openEDS"

    def files(self, split: str, kind: str) -> list[Path]:
        return sorted((self.split_dir / split / kind).iterdir())

    def push(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600, prelude: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_push(
            [self.fill(a) for a in args],
            env={**self.env, **(env or {})},
            cwd=self.tmp,
            timeout=timeout,
            prelude=prelude and prelude.replace("{tmp}", str(self.tmp)).replace("{out}", str(self.out)),
        )

    def fill(self, arg: str) -> str:
        return arg.format(raw=self.raw, out=self.out, repo=self.repo_id, tmp=self.tmp)

    def remote(self) -> tuple[str, dict[str, str]] | None:
        """The repo's head and tags on the test Hub, or None if it does not exist."""
        repo = self.hub._repos.get(self.repo_id)
        return None if repo is None else (repo.branches.get("main", ""), dict(repo.tags))

    def local_digests(self) -> dict[str, str]:
        if not self.out.is_dir():
            return {}
        return {
            p.relative_to(self.out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.out.rglob("*"))
            if p.is_file()
        }


@dataclass(frozen=True)
class Case:
    """One row of the catalogue. `args` may name `{raw}`, `{out}`, `{repo}` and `{tmp}`."""

    name: str
    args: tuple[str, ...]
    exit: int = 0
    #: failures: a piece of the one error line
    error: str | None = None
    #: successes and warnings: pieces of what stderr must say
    says: tuple[str, ...] = ()
    #: breaks something before the run
    arrange: Callable[[World], None] | None = None
    #: checks what is left after the run, beyond the generic checks
    check: Callable[[World, subprocess.CompletedProcess[str]], None] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    #: seconds after which the run is killed and the case fails (a run that hangs)
    timeout: float = 600
    #: runs on datasets 3.6 too (tests/conftest.py says when); None: if its arrange or check code reads the
    #: result with a `datasets` API (found at collection), else on the default line only
    datasets_line: bool | None = None
    #: Python code the push.py process runs first (tests/push_runner.py), e.g. a resource limit; `{tmp}`, `{out}` filled
    prelude: str | None = None


LOCAL = ("--data-dir", "{raw}", "--local-dir", "{out}", "--no-upload")
PUBLISH = ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", "{repo}")


def _edit(path_of: Callable[[World], Path], edit: Callable[[Path], object]) -> Callable[[World], None]:
    return lambda world: edit(path_of(world))


def _first(split: str, kind: str) -> Callable[[World], Path]:
    return lambda world: world.files(split, kind)[0]


def _save_label(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.save(path, array)


def _write_image(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: cv2.imwrite(str(path), array)


def _published_first(world: World) -> None:
    """An earlier publication of the whole sample to the case's repo."""
    result = world.push(*PUBLISH, "--local-dir", str(world.tmp / "earlier"), env={"HF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr[-2000:]


def _built_first(world: World) -> None:
    result = world.push(*LOCAL)
    assert result.returncode == 0, result.stderr[-2000:]


def _skips_every_shard(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert result.stdout.count("already complete") == 3, result.stdout


# -- the Hub: arranging and checking ---------------------------------------------------------------

#: a local port bound for the whole session but never listening: every connection to it is refused
_CLOSED = socket.socket()
_CLOSED.bind(("127.0.0.1", 0))
CLOSED_ENDPOINT = f"http://127.0.0.1:{_CLOSED.getsockname()[1]}"
FAST = ("--retry-timeout", "2")  # failing-network cases give up within seconds
#: the LFS path: publications go through Xet unless this is set (read when huggingface_hub is imported)
LFS = {"HF_HUB_DISABLE_XET": "1"}


def _arrange(*steps: Callable[[World], None]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        for step in steps:
            step(world)

    return arrange


def _earlier_commit(world: World) -> None:
    """An earlier state of the case's repo, made with the real client: a card (signed, as this tool writes
    them, so that a publication may replace it) and a tag."""
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(
        world.repo_id,
        [CommitOperationAdd("README.md", sign("# earlier\n").encode())],
        commit_message="earlier",
        repo_type="dataset",
    )
    api.create_tag(world.repo_id, tag="v2", repo_type="dataset")


def _fail(method: str, path: str, **fault: object) -> Callable[[World], None]:
    """From now on the test Hub fails requests to `path` (`{repo}` is the case's repo id), see HubServer.fail."""
    return lambda world: world.hub.fail(method, path.format(repo=re.escape(world.repo_id)), **fault)


def _repo(world: World):
    return world.hub._repos[world.repo_id]


def _card_at_head(world: World) -> dict:
    repo = _repo(world)
    text = repo.read(repo.commits[repo.branches["main"]].files["README.md"]).decode()
    return yaml.safe_load(text.split("---\n")[1])


def _lists_every_split(world: World, result: subprocess.CompletedProcess[str]) -> None:
    header = _card_at_head(world)
    [config] = header["configs"]
    assert [f["split"] for f in config["data_files"]] == ["train", "validation", "test"], config


def _not_republished(world: World, result: subprocess.CompletedProcess[str]) -> None:
    repo = _repo(world)
    head = repo.branches["main"]
    assert f"published: nothing to publish: {world.repo_id} already holds this data at v2" in result.stdout
    assert len(list(repo.history(repo.commits[head]))) == 2 and repo.tags == {"v2": head}  # created, published
    assert len([r for r in world.hub.requests if r.method == "POST" and "/commit/" in r.path]) == 1  # the earlier


def _tag_not_created(world: World, result: subprocess.CompletedProcess[str]) -> None:
    _not_republished(world, result)  # no commit, and only the earlier run's tag
    assert "at v2; tag 'v2-final' not created: there is no new publication to name" in result.stdout


def _v1_published(world: World) -> None:
    """The repo as the v1 script left it: data/train/shard_00000.parquet, ... (v1's flat list columns, no
    `preprocessed` column), two shards a split, train and validation, uploaded with upload_folder; no card."""
    push_v1(HfApi(token=TOKEN), world.repo_id)


def _v1_untouched_and_not_built(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert _repo(world).tags == {}  # the head is checked by every failing case
    assert not world.out.exists(), "the data was built before the refusal"


def _published_under_old_names(world: World) -> None:
    """The sample published as earlier versions named it: the card calls `pupil` `default`."""
    folder = _prebuilt(world)
    text = (folder / "README.md").read_text().replace("config_name: pupil", "config_name: default")
    files = [p for p in folder.rglob("*") if p.is_file() and ".openeds" not in p.parts and p.name != "README.md"]
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(
        world.repo_id,
        [
            CommitOperationAdd("README.md", text.encode()),
            *(CommitOperationAdd(p.relative_to(folder).as_posix(), p) for p in files),
        ],
        commit_message="v2 with the old config names",
        repo_type="dataset",
    )


def _renamed_in_one_commit(world: World, result: subprocess.CompletedProcess[str]) -> None:
    repo = _repo(world)
    head = repo.commits[repo.branches["main"]]
    assert f"published: {world.hub.url}/datasets/{world.repo_id}/commit/" in result.stdout, result.stdout
    assert [c.title for c in repo.history(head)][:2] == [
        "Publish OpenEDS precomputed v2",
        "v2 with the old config names",
    ]
    configs = {c["config_name"]: c.get("default", False) for c in _card_at_head(world)["configs"]}
    assert configs == {"pupil": True}, configs
    shards = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (_prebuilt(world) / "data").iterdir()}
    assert {f"data/{p.name}": sha for p, sha in shards.items()} == {
        path: entry.lfs_sha256 for path, entry in head.files.items() if path.endswith(".parquet")
    }, "the data files moved or changed"


def _nothing_built_or_sent(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert not world.out.exists(), "the data was built before the failure was found"
    assert world.hub.requests == [], [r.path for r in world.hub.requests]


def _no_hub_request(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert world.hub.requests == [], [r.path for r in world.hub.requests]
    assert (world.out / "README.md").is_file()


def _not_built(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert not world.out.exists(), "the data was built before the failure was found"


def _at_most_five_whoami(world: World, result: subprocess.CompletedProcess[str]) -> None:
    attempts = [r for r in world.hub.requests if r.path == "/api/whoami-v2"]
    assert 2 <= len(attempts) <= 5, len(attempts)  # 2 s at no less than 0.5 s a wait, not a hammering loop


# -- cases that end well, or with a warning ------------------------------------------------------

SUCCESSES = [
    # the end-to-end runs, on both datasets lines: the build writes datasets' Features and card metadata
    Case("sample-local", ("--sample", "--local-dir", "{out}", "--no-upload"), datasets_line=True),
    Case("data-dir-local", LOCAL),
    Case("rerun-skips-finished-shards", LOCAL, arrange=_built_first, check=_skips_every_shard),
    Case(
        "skip-unlabeled-warns-with-a-count",
        (*LOCAL, "--skip-unlabeled"),
        says=("train: skipped 1 images without a label",),
        arrange=_edit(_first("train", "labels"), Path.unlink),
    ),
    Case("publish", PUBLISH, env={"HF_TOKEN": TOKEN}, datasets_line=True),
    Case(
        "sample-without-repo-id-does-not-publish",
        ("--sample", "--local-dir", "{out}"),
        says=("not publishing: --sample without --repo-id materialises only",),
        check=_no_hub_request,
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "unchanged-data-is-not-republished",
        PUBLISH,
        arrange=_published_first,
        check=_not_republished,
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "card-naming-default-is-renamed-in-one-commit",
        PUBLISH,
        arrange=_published_under_old_names,
        check=_renamed_in_one_commit,
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "tag-on-unchanged-data-is-not-created",
        (*PUBLISH, "--tag", "v2-final"),
        arrange=_published_first,
        check=_tag_not_created,
        env={"HF_TOKEN": TOKEN},
    ),
]

# -- flags a user can get wrong (argparse's usage errors, exit 2) --------------------------------

USAGE = [
    Case(
        "sample-and-data-dir", ("--sample", "--data-dir", "{raw}"), exit=2, error="--sample conflicts with --data-dir"
    ),
    Case(
        "repo-id-without-upload",
        ("--sample", "--no-upload", "--repo-id", "a/b"),
        exit=2,
        error="--repo-id conflicts with --no-upload",
    ),
    Case(
        "num-proc-0", ("--sample", "--no-upload", "--num-proc", "0"), exit=2, error="--num-proc 0: expected 1 or more"
    ),
    Case("unknown-config", ("--sample", "--no-upload", "--config", "iris"), exit=2, error="invalid choice: 'iris'"),
    Case("unknown-split", ("--sample", "--no-upload", "--splits", "dev"), exit=2, error="invalid choice: 'dev'"),
    Case(
        "sample-to-the-default-repo",
        ("--sample", "--repo-id", "Conner/openeds-precomputed"),
        exit=2,
        error="--sample conflicts with --repo-id Conner/openeds-precomputed",
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "negative-retry-timeout",
        ("--sample", "--no-upload", "--retry-timeout", "-5"),
        exit=2,
        error="argument --retry-timeout: '-5' is not a number of seconds; expected 0 or more",
    ),
]


def _savez(path: Path, label: np.ndarray) -> None:
    with path.open("wb") as f:
        np.savez(f, label=label)


def _same_stem_in_train_and_test(world: World) -> None:
    image, label = world.files("train", "images")[0], world.files("train", "labels")[0]
    shutil.copy(image, world.split_dir / "test" / "images")
    shutil.copy(label, world.split_dir / "test" / "labels")


def _same_name_in_train_and_test(world: World) -> None:
    """A test frame renamed to a train frame's name: a naming clash, not a leak."""
    name = world.files("train", "images")[0].stem
    image, label = world.files("test", "images")[0], world.files("test", "labels")[0]
    image.rename(image.with_name(f"{name}.png"))
    label.rename(label.with_name(f"{name}.npy"))


def _no_decoder_noise(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """OpenCV's `[ WARN ...]` and libpng's `libpng error: ...` lines do not reach the terminal."""
    noise = [line for line in result.stderr.splitlines() if "WARN" in line or line.startswith("libpng")]
    assert not noise, noise


# -- bad raw input ---------------------------------------------------------------------------------

RAW = [
    Case(
        "data-dir-missing",
        ("--data-dir", "{tmp}/nowhere", "--local-dir", "{out}", "--no-upload"),
        exit=1,
        error="nowhere does not exist or is not a folder",
    ),
    Case(
        "data-dir-without-splits",
        ("--data-dir", "{tmp}", "--local-dir", "{out}", "--no-upload"),
        exit=1,
        error="no split folders with images/ found",
    ),
    Case(
        "split-asked-but-absent",
        (*LOCAL, "--splits", "validation"),
        exit=1,
        error="--splits validation not found",
        arrange=lambda w: shutil.rmtree(w.split_dir / "validation"),
    ),
    Case(
        "image-without-label", LOCAL, exit=1, error="has no label", arrange=_edit(_first("test", "labels"), Path.unlink)
    ),
    Case(
        "png-that-is-not-a-png",
        LOCAL,
        exit=1,
        error="is not a decodable PNG",
        arrange=_edit(_first("test", "images"), lambda p: p.write_bytes(b"broken")),
    ),
    Case(
        "rgb-image",
        LOCAL,
        exit=1,
        error="is a PNG of 8-bit RGB (bit depth 8, colour type 2); expected an 8-bit grayscale PNG",
        arrange=_edit(_first("test", "images"), _write_image(np.zeros((400, 640, 3), np.uint8))),
    ),
    Case(
        "16-bit-image",
        LOCAL,
        exit=1,
        error="is a PNG of 16-bit grayscale (bit depth 16, colour type 0)",
        arrange=_edit(_first("test", "images"), _write_image(np.zeros((400, 640), np.uint16))),
    ),
    Case(
        "portrait-2019-release",
        LOCAL,
        exit=1,
        error="2019 portrait release",
        arrange=_edit(_first("test", "images"), _write_image(np.zeros((640, 400), np.uint8))),
    ),
    Case(
        "label-of-another-shape",
        LOCAL,
        exit=1,
        error="has shape (640, 400); expected (400, 640)",
        arrange=_edit(_first("test", "labels"), _save_label(np.zeros((640, 400), np.uint8))),
    ),
    Case(
        "label-values-out-of-range",
        LOCAL,
        exit=1,
        error="..7; expected class ids 0..3",
        arrange=_edit(_first("test", "labels"), lambda p: np.save(p, np.where(np.load(p) == 3, 7, np.load(p)))),
    ),
    Case(
        "label-of-floats",
        LOCAL,
        exit=1,
        error="has dtype float64; expected integer class ids",
        arrange=_edit(_first("test", "labels"), _save_label(np.zeros((400, 640)))),
    ),
    Case(
        "shard-size-below-one-row", (*LOCAL, "--max-shard-size", "1MB"), exit=2, error="is smaller than one pupil row"
    ),
    Case(
        "npz-saved-under-a-npy-name",
        LOCAL,
        exit=1,
        error="is an .npz archive (zip data, from numpy.savez) under a .npy name",
        arrange=_edit(_first("test", "labels"), lambda p: _savez(p, np.load(p))),
    ),
    Case(
        "text-file-named-npy",
        LOCAL,
        exit=1,
        error="is a text file (it starts with 'class ids: 0 1 2 3\\n'), not a .npy array",
        arrange=_edit(_first("test", "labels"), lambda p: p.write_text("class ids: 0 1 2 3\n")),
    ),
    Case(
        "labels-without-an-image-warn-with-a-count",
        LOCAL,
        says=("train: ignored 1 labels without an image (e.g. labels/",),
        arrange=_edit(_first("train", "images"), Path.unlink),
    ),
    Case(
        "image-that-is-a-folder",
        LOCAL,
        exit=1,
        error=".png is a folder; expected an 8-bit grayscale PNG file",
        arrange=_edit(_first("test", "images"), lambda p: (p.unlink(), p.mkdir())),
    ),
    Case(
        "image-that-is-a-broken-symlink",
        LOCAL,
        exit=1,
        error="is a broken symbolic link (to ",
        arrange=_edit(_first("test", "images"), lambda p: (p.unlink(), p.symlink_to(p.with_name("gone.png")))),
    ),
    Case(
        "same-frame-in-two-splits",
        LOCAL,
        exit=1,
        error="is in both train and test with the same content (1 identical frames in the two splits)",
        arrange=_same_stem_in_train_and_test,
    ),
    Case(
        "same-name-for-different-frames-warns",
        LOCAL,
        says=("train and test: 1 image names appear in both, with different images",),
        arrange=_same_name_in_train_and_test,
    ),
    Case(
        "jpeg-data-in-a-png",
        LOCAL,
        exit=1,
        error="holds JPEG data, not PNG",
        arrange=_edit(
            _first("test", "images"),
            lambda p: p.write_bytes(cv2.imencode(".jpg", cv2.imread(str(p), cv2.IMREAD_UNCHANGED))[1]),
        ),
    ),
    Case(
        "truncated-png-prints-nothing-but-the-error",
        LOCAL,
        exit=1,
        error="is not a decodable PNG (",
        arrange=_edit(_first("test", "images"), lambda p: p.write_bytes(p.read_bytes()[:-2000])),
        check=_no_decoder_noise,
    ),
]


# -- the local folder, the locks and the disk ------------------------------------------------------
#
# Cases that need an earlier build start from a copy of one build of the sample (made once per
# session), so "the earlier state intact" is checked byte for byte against it.

_PREBUILT: dict[str, Path] = {}
#: holds a folder's lock, as a second push.py would, until the test ends it; argv: the folder
_HOLDER = """
import sys
from pathlib import Path
from openeds.lock import hold
with hold(Path(sys.argv[1]), what="a folder", option="--x", error=RuntimeError):
    print("held", flush=True)
    sys.stdin.read()
"""


def _prebuilt(world: World) -> Path:
    if "out" not in _PREBUILT:
        folder = world.tmp / "prebuilt"
        result = world.push("--data-dir", "{raw}", "--local-dir", str(folder), "--no-upload")
        assert result.returncode == 0, result.stderr[-2000:]
        _PREBUILT["out"] = folder
    return _PREBUILT["out"]


def _digests(folder: Path) -> dict[str, str]:
    """Every file but the lock's, by path (the records of the shards' bytes included): the lock file stays, its
    owner record goes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in (".openeds/lock", ".openeds/lock.owner")
    }


def _copy_prebuilt(world: World) -> None:
    shutil.copytree(_prebuilt(world), world.out, ignore=shutil.ignore_patterns("lock*"), dirs_exist_ok=True)


def _earlier_state_intact(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert _digests(world.out) == _digests(_prebuilt(world)), "the earlier build changed"


def _root_or_skip(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount)")


def _mount_tmpfs(world: World, size: str) -> None:
    """A small tmpfs at the local folder, unmounted after the case."""
    _root_or_skip("a small disk")
    world.out.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(world.out)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    world.cleanups.append(lambda: subprocess.run(["umount", "-l", str(world.out)], check=True))


def _fill_leaving(folder: Path, pages: int) -> None:
    """Fill the disk of `folder` with one file so that exactly `pages` 4 kB pages stay free."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(bytes(free - pages * 4096))
    assert shutil.disk_usage(folder).free == pages * 4096


def _pages(path: Path) -> int:
    return -(-path.stat().st_size // 4096)


def _disk_full_at(what: str) -> Callable[[World], None]:
    """An earlier build on a full disk, without its preview: the run skips every shard, then writes
    the owner record (1 page) and the preview; `what` says which of the preview and the card finds
    the disk full."""

    def arrange(world: World) -> None:
        _mount_tmpfs(world, "16m")
        _copy_prebuilt(world)
        preview = world.out / "images" / "preview.png"
        pages = 1 + (_pages(preview) if what == "card" else 0)
        assert _pages(world.out / "README.md") >= 2, "the card must need more than the one page left for it"
        preview.unlink()
        _fill_leaving(world.out, pages)

    return arrange


def _full_disk_kept_the_rest(world: World, result: subprocess.CompletedProcess[str]) -> None:
    expected = _digests(_prebuilt(world))
    expected.pop("images/preview.png")
    got = _digests(world.out)
    got.pop("filler")
    if "README.md is full" in result.stderr:  # the card case: the new preview was written first
        got.pop("images/preview.png", None)
    assert got == expected, "a shard or the earlier card changed"


def _read_only(world: World) -> None:
    _mount_tmpfs(world, "16m")
    _copy_prebuilt(world)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(world.out)], capture_output=True, text=True)
    if remount.returncode:
        pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.strip()}")


def _without_permission(world: World) -> None:
    """A folder this user may not write in: mode 555, or, for root (which ignores modes), immutable."""
    _copy_prebuilt(world)
    if os.geteuid() != 0:
        world.out.chmod(0o555)
        world.cleanups.append(lambda: world.out.chmod(0o755))
        return
    if subprocess.run(["chattr", "+i", str(world.out)], capture_output=True).returncode:
        pytest.skip("root ignores permission bits and `chattr +i` does not work on this file system")
    world.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(world.out)], check=True))


def _held_by_another_process(folder_of: Callable[[World], Path]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        folder = folder_of(world)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(folder)],
            cwd=REPO,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        world.cleanups.append(lambda: (holder.kill(), holder.wait()))
        assert holder.stdout.readline() == "held\n"
        (world.tmp / "holder.pid").write_text(str(holder.pid))

    return arrange


def _names_the_holder(world: World, result: subprocess.CompletedProcess[str]) -> None:
    pid = (world.tmp / "holder.pid").read_text()
    assert f"another python (pid {pid} on " in result.stderr, result.stderr[-2000:]
    assert "Hashing inputs" not in result.stderr and not (world.out / "data").exists(), "it built before checking"


def _file_where_images_should_be(world: World) -> None:
    _copy_prebuilt(world)
    shutil.rmtree(world.out / "images")
    (world.out / "images").write_text("not a folder")


def _only_the_preview_is_missing(world: World, result: subprocess.CompletedProcess[str]) -> None:
    expected = {p: d for p, d in _digests(_prebuilt(world)).items() if p != "images/preview.png"}
    assert _digests(world.out) == {**expected, "images": hashlib.sha256(b"not a folder").hexdigest()}


def _corrupt(relpath: str) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        _copy_prebuilt(world)
        (world.out / relpath).write_bytes(b"not parquet")

    return arrange


def _corrupt_shard_kept_and_nothing_else_changed(world: World, result: subprocess.CompletedProcess[str]) -> None:
    expected = {
        **_digests(_prebuilt(world)),
        "data/train-00000-of-00001.parquet": hashlib.sha256(b"not parquet").hexdigest(),
    }
    assert _digests(world.out) == expected


def _corrupt_shard_rebuilt(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert result.stdout.count("already complete") == 2, result.stdout
    built = _digests(world.out)
    assert built["data/test-00000-of-00001.parquet"] == _digests(_prebuilt(world))["data/test-00000-of-00001.parquet"]


def _killed_run_leftovers(world: World) -> None:
    _copy_prebuilt(world)
    for leftover in (
        "data/.train-00000-of-00001.parquet.partial",
        "images/.preview.png.partial",
        ".README.md.partial",
        "full/.test-00000-of-00001.parquet.partial",
        ".openeds/records/data/.train-00000-of-00001.parquet.json.partial",
    ):
        (world.out / leftover).parent.mkdir(exist_ok=True)
        (world.out / leftover).write_bytes(b"half written")
    (world.out / ".openeds" / "lock.owner").write_text('{"pid": 999999999, "host": "gone", "started": 0}')
    # and the lock files of a run of an earlier version, in the folder itself: retired
    (world.out / ".lock").touch()
    (world.out / ".lock.owner").write_text('{"pid": 999999998, "host": "gone", "started": 0}')


def _swept_and_skipped(world: World, result: subprocess.CompletedProcess[str]) -> None:
    _skips_every_shard(world, result)
    unchanged = {path: digest for path, digest in _digests(world.out).items() if path != "README.md"}
    assert unchanged == {p: d for p, d in _digests(_prebuilt(world)).items() if p != "README.md"}
    assert sorted(p.name for p in world.out.iterdir() if p.name.startswith(".")) == [".openeds"]


def _sizes_differ(world: World, result: subprocess.CompletedProcess[str]) -> None:
    sizes = re.search(r": (\S+ \S+) free, about (\S+ \S+) needed for 5 rows", result.stderr)
    assert sizes and sizes[1] != sizes[2] and sizes[2] == "5.00 MB", result.stderr[-2000:]


LOCAL_DIR = [
    Case(
        "local-dir-is-a-file",
        LOCAL,
        exit=1,
        error="out is a file, not a folder; expected a folder",
        arrange=lambda w: w.out.write_text("my notes"),
        check=lambda w, r: w.out.read_text() == "my notes" or pytest.fail("the file changed"),
    ),
    Case(
        "local-dir-read-only",
        LOCAL,
        exit=1,
        error="cannot be written: Read-only file system",
        arrange=_read_only,
        check=_earlier_state_intact,
    ),
    Case(
        "local-dir-without-permission",
        LOCAL,
        exit=1,
        error="cannot be written: ",
        arrange=_without_permission,
        check=_earlier_state_intact,
    ),
    Case(
        "staging-folder-in-use",
        LOCAL,
        exit=1,
        error="is using the staging folder",
        arrange=_held_by_another_process(lambda w: w.out),
        check=_names_the_holder,
    ),
    Case(
        "kaggle-cache-in-use",
        ("--local-dir", "{out}", "--no-upload", "--cache-dir", "{tmp}/kaggle"),
        exit=1,
        error="is using the Kaggle cache",
        arrange=_held_by_another_process(lambda w: w.tmp / "kaggle" / "soumicksarker--openeds-dataset"),
        check=_names_the_holder,
    ),
    Case(
        "disk-too-small-for-the-shards",
        LOCAL,
        exit=1,
        error="not enough free disk space in",
        arrange=lambda w: _mount_tmpfs(w, "2m"),
        check=_sizes_differ,
    ),
    Case(
        "disk-full-while-writing-the-preview",
        LOCAL,
        exit=1,
        error="preview.png is full (No space left",
        arrange=_disk_full_at("preview"),
        check=_full_disk_kept_the_rest,
    ),
    Case(
        "disk-full-while-writing-the-card",
        LOCAL,
        exit=1,
        error="README.md is full (No space left",
        arrange=_disk_full_at("card"),
        check=_full_disk_kept_the_rest,
    ),
    Case(
        "a-file-where-images-should-be",
        LOCAL,
        exit=1,
        error="preview.png: File exists (",
        arrange=_file_where_images_should_be,
        check=_only_the_preview_is_missing,
    ),
    Case(
        "corrupt-shard-of-a-split-not-rebuilt",
        (*LOCAL, "--splits", "test"),
        exit=1,
        error="train-00000-of-00001.parquet cannot be read (",
        arrange=_corrupt("data/train-00000-of-00001.parquet"),
        check=_corrupt_shard_kept_and_nothing_else_changed,
    ),
    Case(
        "corrupt-shard-of-a-rebuilt-split-is-rebuilt",
        LOCAL,
        arrange=_corrupt("data/test-00000-of-00001.parquet"),
        check=_corrupt_shard_rebuilt,
    ),
    Case("killed-run-leftovers-are-swept", LOCAL, arrange=_killed_run_leftovers, check=_swept_and_skipped),
]

# -- the Hub ---------------------------------------------------------------------------------------

HUB = [
    Case("unknown-token", PUBLISH, exit=1, error="token was rejected", env={"HF_TOKEN": "hf_not_a_token"}),
    Case("read-only-token", PUBLISH, exit=1, error="is read-only", env={"HF_TOKEN": READ_TOKEN}),
    Case(
        "namespace-of-someone-else",
        ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", "someone/else"),
        exit=1,
        error="may not write to someone/else",
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "repo-id-without-namespace",
        ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", "openeds"),
        exit=1,
        error="is not of the form namespace/name",
        env={"HF_TOKEN": TOKEN},
    ),
    Case("no-token", PUBLISH, exit=1, error="no Hugging Face token found", check=_nothing_built_or_sent),
    Case(
        "offline-mode",
        PUBLISH,
        exit=1,
        error="HF_HUB_OFFLINE is set, so nothing can be published",
        check=_nothing_built_or_sent,
        env={"HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "card-download-500-with-splits-test",
        (*PUBLISH, "--splits", "test", *FAST),
        exit=1,
        error="could not download the card README.md of",
        arrange=_arrange(_published_first, _fail("GET", "/datasets/{repo}/resolve/.*/README.md", times=1000)),
        check=_lists_every_split,
        env={"HF_TOKEN": TOKEN},
    ),
    *(
        Case(
            f"commit-refused-{status}",
            (*PUBLISH, "--splits", "test"),
            exit=1,
            error=f"the Hub answered HTTP {status}: injected fault",
            says=(
                "nothing was published (the commit is atomic; the files already uploaded are not sent again); "
                "re-running will not help",
            ),
            arrange=_arrange(_earlier_commit, _fail("POST", "/api/datasets/{repo}/commit/main", status=status)),
            env={"HF_TOKEN": TOKEN},
        )
        for status in (400, 413, 422)
    ),
    Case(
        "commit-500-after-retries",
        (*PUBLISH, "--splits", "test", *FAST),
        exit=1,
        error="could not commit to faults/",
        says=("HTTP 500", "nothing was published (the commit is atomic;"),
        arrange=_arrange(_earlier_commit, _fail("POST", "/api/datasets/{repo}/commit/main", times=1000)),
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "lfs-upload-refused-413",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="could not upload the files to faults/",
        says=("HTTP 413", "nothing was published"),
        arrange=_arrange(_earlier_commit, _fail("POST", r"/datasets/{repo}\.git/info/lfs/objects/batch", status=413)),
        env={"HF_TOKEN": TOKEN, **LFS},
    ),
    Case(
        "endpoint-refuses-connections",
        (*PUBLISH, *FAST),
        exit=1,
        error=f"the network or the Hub endpoint {CLOSED_ENDPOINT} is unreachable",
        says=("Connection refused", "the network budget is 2 s"),
        check=_not_built,
        env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": CLOSED_ENDPOINT},
    ),
    Case(
        "endpoint-does-not-resolve",
        (*PUBLISH, *FAST),
        exit=1,
        error="the network or the Hub endpoint http://hub.openeds.invalid is unreachable",
        says=("Name or service not known",),
        check=_not_built,
        env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": "http://hub.openeds.invalid"},
    ),
    Case(
        "splits-test-on-a-v1-repo",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="holds v1 data (no 'preprocessed' column) in splits ['train', 'validation'] and this push converts",
        says=("so ['train', 'validation'] would be gone from main with no v2 split in their place",),
        arrange=_v1_published,
        check=_v1_untouched_and_not_built,
        env={"HF_TOKEN": TOKEN},
    ),
    Case(
        "rate-limited-with-retry-after-0",
        (*PUBLISH, *FAST),
        exit=1,
        error="could not check the Hugging Face token: HTTP 429",
        arrange=_fail("GET", "/api/whoami-v2", status=429, times=1000, headers={"Retry-After": "0"}),
        check=_at_most_five_whoami,
        env={"HF_TOKEN": TOKEN},
    ),
]


# -- a network that stops answering (issue 14, section 1) ------------------------------------------
#
# The servers accept a request and never answer (`hang`), or answer part of it and then send
# nothing more, the connection kept open (`stall`). Every case runs with a 1 s timeout and a 2 s
# retry budget and is killed after `_ends_within(...)` seconds: the budget, the timeouts the run
# may wait beyond it, and 30 s for Python, the imports and the build of the sample. A run that
# hangs fails its case instead of stalling the suite.

SHORT = ("--timeout", "1", "--retry-timeout", "2")
#: the case's repo-less Kaggle run: no --data-dir, so the raw data comes from the Kaggle stub
KAGGLE = ("--local-dir", "{out}", "--no-upload", "--cache-dir", "{tmp}/kaggle", *SHORT)
#: an endpoint that accepts connections and never answers, for the whole session
_SILENT = SilentServer()
#: huggingface_hub's own retries of the LFS upload (the only requests it retries itself): 6 tries, 1+2+4+8+8 s apart
_CLIENT_RETRIES = 6 * 1 + 23


def _ends_within(timeouts: float) -> float:
    """The subprocess timeout of a case: the 2 s budget, `timeouts` seconds of waiting past it, 30 s of slack."""
    return 2 + timeouts + 30


def _hangs(method: str, path: str) -> Callable[[World], None]:
    return _fail(method, path, hang=True, times=1000)


def _stalls(method: str, path: str, after: int = 10, times: int = 1000) -> Callable[[World], None]:
    return _fail(method, path, stall_after=after, times=times)


def _card_without_dataset_info(world: World) -> None:
    """The published sample under a card a person wrote: no YAML, so the columns come from a shard's footer."""
    HfApi(token=TOKEN).create_commit(
        world.repo_id, [CommitOperationAdd("README.md", b"# my notes\n")], commit_message="notes", repo_type="dataset"
    )


def _landed_once(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The commit whose answer stalled landed; the retry found it and tagged it, and no second commit was made."""
    repo = _repo(world)
    head = repo.commits[repo.branches["main"]]
    assert [c.title for c in repo.history(head)][:2] == ["Publish OpenEDS precomputed v2", "earlier"]
    assert repo.tags.get("v2.1") == head.sha, repo.tags
    commits = [r.status for r in world.hub.requests if r.method == "POST" and "/commit/" in r.path]
    assert commits == [200, 200, 412], commits  # the earlier commit, the stalled one, the retry (412: it landed)


# -- Kaggle, through the stub of tests/kaggle_server.py

KAGGLE_STUB_SLUG = "soumicksarker/openeds-dataset"


def _kaggle(fault: Callable[[KaggleStub, int], object], credentials: Credentials = "key") -> Callable[[World], None]:
    """The case's raw tree served as the Kaggle dataset by a stub of its own; `fault(stub, archive size)` breaks it."""

    def arrange(world: World) -> None:
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(world.raw.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(world.raw).as_posix())
        stub = KaggleStub({KAGGLE_STUB_SLUG: archive.getvalue()})
        world.cleanups.append(stub.close)
        world.kaggle = stub
        fault(stub, len(archive.getvalue()))
        world.env.update(stub.client_env(world.tmp / "home", credentials))

    return arrange


def _no_shard_built(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The run held the staging folder (it makes it) but built nothing: the download failed first."""
    assert not (world.out / "data").exists(), "the data was built"


def _resumed_with_range(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The retry resumed the archive where the stalled transfer left it, and the data was built."""
    gets = world.kaggle.requests_to("file")
    assert gets[0].range is None and gets[-1].range is not None and gets[-1].range.startswith("bytes="), gets
    assert "bytes kept, resuming" in result.stderr, result.stderr[-2000:]
    assert sorted(p.name for p in (world.out / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]


NETWORK = [
    Case(
        "hang-at-the-token-check",
        (*PUBLISH, *SHORT),
        exit=1,
        error="could not check the Hugging Face token: GET http://127.0.0.1:",
        says=("/api/whoami-v2 got no data for 1 s (read timeout; --timeout sets it)", "the retry budget is 2 s"),
        arrange=_hangs("GET", "/api/whoami-v2"),
        check=_not_built,
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "endpoint-that-never-answers",
        (*PUBLISH, *SHORT),
        exit=1,
        error=f"could not check the Hugging Face token: GET {_SILENT.url}/api/whoami-v2 got no data for 1 s",
        check=_not_built,
        env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": _SILENT.url},
        timeout=_ends_within(1),
    ),
    Case(
        "hang-at-the-repo-info",
        (*PUBLISH, *SHORT),
        exit=1,
        error="could not read the repo faults/",
        says=("got no data for 1 s (read timeout",),
        arrange=_hangs("GET", "^/api/datasets/{repo}$"),
        check=_not_built,
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "hang-at-the-repo-listing",
        (*PUBLISH, *SHORT),
        exit=1,
        error="could not list the files of faults/",
        says=("got no data for 1 s (read timeout",),
        arrange=_arrange(_earlier_commit, _hangs("GET", "^/api/datasets/{repo}/tree/")),
        check=_not_built,
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "hang-at-the-tag-listing",
        (*PUBLISH, *SHORT),
        exit=1,
        error="could not list the tags of faults/",
        says=("/refs got no data for 1 s (read timeout",),
        arrange=_arrange(_earlier_commit, _hangs("GET", "/api/datasets/{repo}/refs")),
        check=_not_built,
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "card-download-stalls-mid-body",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="could not download the card README.md of",
        says=("/README.md got no data for 1 s (read timeout", "nothing was published"),
        arrange=_arrange(_published_first, _stalls("GET", "/datasets/{repo}/resolve/.*/README.md")),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    # a ranged GET inside the project's own retries: the budget plus one timeout, not the client's 6 tries
    Case(
        "parquet-footer-read-stalls",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="could not read the parquet footer of faults/",
        says=(".parquet got no data for 1 s (read timeout", "the retry budget is 2 s"),
        arrange=_arrange(
            _published_first, _card_without_dataset_info, _stalls("GET", r"/datasets/{repo}/resolve/.*\.parquet")
        ),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "hang-at-the-commit",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="could not commit to faults/",
        says=("/commit/main got no data for 1 s (read timeout", "the commit may have landed"),
        arrange=_arrange(_earlier_commit, _hangs("POST", "/api/datasets/{repo}/commit/main")),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    # a budget that surely leaves room for a second attempt after the 1 s timeout and a wait of up to 1 s
    Case(
        "commit-answer-stalls-and-the-retry-finds-it-landed",
        (*PUBLISH, "--splits", "test", "--timeout", "1", "--retry-timeout", "5"),
        says=("/commit/main got no data for 1 s (read timeout",),
        arrange=_arrange(_earlier_commit, _stalls("POST", "/api/datasets/{repo}/commit/main", times=1)),
        check=_landed_once,
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(4),
    ),
    Case(
        "hang-at-the-v1-tag",
        (*PUBLISH, *SHORT),
        exit=1,
        error="could not tag faults/",
        says=("as 'v1': POST http://127.0.0.1:", "got no data for 1 s (read timeout", "nothing was published"),
        arrange=_arrange(_v1_published, _hangs("POST", "/api/datasets/{repo}/tag/")),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "hang-at-the-lfs-batch",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="uploading to faults/",
        says=(
            "failed after the client's retries (POST http://127.0.0.1:",
            "/info/lfs/objects/batch got no data for 1 s",
            "nothing was published",
        ),
        arrange=_arrange(_earlier_commit, _hangs("POST", r"/datasets/{repo}\.git/info/lfs/objects/batch")),
        env={"HF_TOKEN": TOKEN, **LFS},
        timeout=_ends_within(_CLIENT_RETRIES),
    ),
    Case(
        "kaggle-api-call-hangs",
        KAGGLE,
        exit=1,
        error=f"Kaggle download of {KAGGLE_STUB_SLUG} still fails after ",
        says=("POST http://localhost/api/v1/datasets.DatasetApiService/DownloadDataset got no data for 1 s",),
        arrange=_kaggle(lambda stub, size: stub.hang(times=1000)),
        check=_no_shard_built,
        timeout=_ends_within(1),
    ),
    Case(
        "kaggle-token-check-hangs",
        KAGGLE,
        exit=1,
        error="could not reach Kaggle to check the access token (POST ",
        says=("/security.OAuthService/IntrospectToken got no data for 1 s (read timeout",),
        arrange=_kaggle(lambda stub, size: stub.hang(on="auth", times=1000), credentials="token"),
        check=_no_shard_built,
        timeout=_ends_within(2),
    ),  # import kaggle checks the token once already
    Case(
        "kaggle-archive-stalls-mid-file",
        KAGGLE,
        exit=1,
        error=f"Kaggle download of {KAGGLE_STUB_SLUG} still fails after ",
        says=(f"http://storage.localhost/files/{KAGGLE_STUB_SLUG}.zip got no data for 1 s (read timeout",),
        arrange=_kaggle(lambda stub, size: stub.stall_transfers(size // 2, times=1000)),
        check=_no_shard_built,
        timeout=_ends_within(1),
    ),
    Case(
        "kaggle-archive-stalled-once-is-resumed",
        (*KAGGLE, "--retry-timeout", "5"),  # room for the retry
        says=(f"{KAGGLE_STUB_SLUG}.zip got no data for 1 s (read timeout",),
        arrange=_kaggle(lambda stub, size: stub.stall_transfers(size - 1000, times=1)),
        check=_resumed_with_range,
        timeout=_ends_within(4),
    ),
    Case(
        "kaggle-connection-cut-on-every-try",
        KAGGLE,
        exit=1,
        error=f"Kaggle download of {KAGGLE_STUB_SLUG} still fails after ",
        says=("IncompleteRead", "the retry budget is 2 s"),
        arrange=_kaggle(lambda stub, size: stub.cut_transfers(1000, times=1000)),
        check=_no_shard_built,
        timeout=_ends_within(0),
    ),
    Case(
        "negative-timeout",
        ("--sample", "--no-upload", "--timeout", "0"),
        exit=2,
        error="argument --timeout: '0' is not a number of seconds; expected more than 0",
    ),
]


# -- raw data read the wrong way, the staging folder, the sizes (issue 14) ------------------------
#
# Raw input: stems that collide once suffixes are normalised, half split folders, labels that are
# not integer class ids, label suffixes, names that are not one printable line. The staging folder:
# splits a run does not rebuild are checked against the raw data (stale ones removed, named, and
# left out of the card), and a folder inside the raw data or around it is refused before anything
# is written. Sizes: `--max-shard-size` refuses what is not a size of at least one row.


def _copy_as(path_of: Callable[[World], Path], name: str) -> Callable[[World], None]:
    """A copy of a raw file beside it under another name (`{stem}` is the file's stem)."""
    return lambda world: shutil.copy(path_of(world), path_of(world).with_name(name.format(stem=path_of(world).stem)))


def _rename_as(path_of: Callable[[World], Path], name: str) -> Callable[[World], None]:
    return lambda world: path_of(world).rename(path_of(world).with_name(name.format(stem=path_of(world).stem)))


def _empty_folder(folder_of: Callable[[World], Path]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        for path in folder_of(world).iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    return arrange


def _label_to_npz(path: Path) -> None:
    _savez(path.with_suffix(".npz"), np.load(path))
    path.unlink()


def _image_without_label(name: str) -> Callable[[World], None]:
    """A copy of a test image under `name`, with no label: the run names it in its error."""
    return lambda world: shutil.copy(world.files("test", "images")[0], world.split_dir / "test" / "images" / name)


def _rows_in_card(world: World) -> dict[str, dict[str, int]]:
    """{config: {split: rows}} as the local folder's card declares them."""
    header = yaml.safe_load((world.out / "README.md").read_text().split("---\n")[1])
    infos = header["dataset_info"] if isinstance(header["dataset_info"], list) else [header["dataset_info"]]
    return {info["config_name"]: {s["name"]: s["num_examples"] for s in info["splits"]} for info in infos}


def _card_lists(expected: dict[str, dict[str, int]]) -> Callable[[World, subprocess.CompletedProcess[str]], None]:
    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        assert _rows_in_card(world) == expected, _rows_in_card(world)
        shards = {p.relative_to(world.out).as_posix() for p in world.out.rglob("*.parquet")}
        held = {
            f"{'data' if c == 'pupil' else 'full'}/{s}-00000-of-00001.parquet" for c in expected for s in expected[c]
        }
        assert shards == held, f"the folder holds {sorted(shards)}, its card lists {sorted(held)}"
        for config, preview in (("pupil", "preview.png"), ("full", "preview-full.png")):
            assert (world.out / "images" / preview).is_file() == (config in expected), f"{preview} and the card differ"

    return check


ALL_ROWS = {"train": 3, "validation": 1, "test": 1}


def _built_all_configs(*extra: str) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        result = world.push(*LOCAL, "--config", "all", *extra)
        assert result.returncode == 0, result.stderr[-2000:]

    return arrange


def _fix_a_pupil_label(split: str) -> Callable[[World], None]:
    """A corrected label (pupil pixels become iris) in `split`: same shape, dtype and file size."""

    def arrange(world: World) -> None:
        for path in world.files(split, "labels"):
            label = np.load(path)
            if (label == 3).any():
                label[label == 3] = 2
                np.save(path, label)
                return
        raise AssertionError(f"no {split} label with a pupil")

    return arrange


def _raw_digests(world: World) -> dict[str, str]:
    return {
        p.relative_to(world.raw).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(world.raw.rglob("*"))
        if p.is_file()
    }


def _remember_raw(world: World) -> None:
    (world.tmp / "raw.sha256").write_text(repr(_raw_digests(world)))


def _raw_untouched_and_nothing_written(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert repr(_raw_digests(world)) == (world.tmp / "raw.sha256").read_text(), "the raw tree changed"
    assert not [p for p in world.raw.rglob("*") if p.name == ".openeds"], "a lock was taken in the raw tree"
    assert not world.out.exists() or not any(world.out.iterdir()), "the staging folder was written"


def _raw_moved_into_out(world: World) -> None:
    world.out.mkdir()
    world.raw = Path(shutil.move(world.raw, world.out / "raw"))
    _remember_raw(world)


def _out_holds_only_the_raw_data(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert repr(_raw_digests(world)) == (world.tmp / "raw.sha256").read_text(), "the raw tree changed"
    assert [p.name for p in world.out.iterdir()] == ["raw"], "the staging folder was written"


def _test_split_linked_from_elsewhere(world: World) -> None:
    (world.tmp / "elsewhere").mkdir()
    shutil.move(world.split_dir / "test", world.tmp / "elsewhere" / "test")
    (world.split_dir / "test").symlink_to(world.tmp / "elsewhere" / "test")


def _link_to_raw_images(world: World) -> None:
    (world.tmp / "link").symlink_to(world.split_dir / "test" / "images")
    _remember_raw(world)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-2000:]


def _only_pupil_built(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """Built with another shard size, `full` is current all the same: kept, and its two train shards too."""
    assert "removed" not in result.stderr, result.stderr[-2000:]
    assert result.stdout.count("already complete") == 3, result.stdout
    assert len(list((world.out / "full").glob("train-*-of-00002.parquet"))) == 2
    assert _rows_in_card(world) == {"pupil": ALL_ROWS, "full": ALL_ROWS}


def _a_foreign_parquet(world: World) -> None:
    """A parquet file named as a shard but without push.py's build record (e.g. copied in by hand)."""
    _built_first(world)
    (world.out / "full").mkdir()
    shutil.copy(world.out / "data" / "test-00000-of-00001.parquet", world.out / "full" / "test-00000-of-00001.parquet")
    table = pq.read_table(world.out / "full" / "test-00000-of-00001.parquet")
    pq.write_table(table.replace_schema_metadata({}), world.out / "full" / "test-00000-of-00001.parquet")
    (world.tmp / "out.sha256").write_text(repr(_digests(world.out)))


def _folder_unchanged(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert repr(_digests(world.out)) == (world.tmp / "out.sha256").read_text(), "the folder changed"


def _half_of_full_train(world: World) -> None:
    _built_all_configs("--max-shard-size", "12MB")(world)  # full: 2 rows a shard, so train has 2 shards
    (world.out / "full" / "train-00000-of-00002.parquet").unlink()


def _unfinished_left_alone(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert (world.out / "full" / "train-00001-of-00002.parquet").is_file(), "the finished shard was removed"
    assert _rows_in_card(world) == {"pupil": ALL_ROWS, "full": {"validation": 1, "test": 1}}


def _line_with(piece: str) -> Callable[[World, subprocess.CompletedProcess[str]], None]:
    """`piece` is on one line of stderr, and no control character is printed but layout ones."""

    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        assert any(piece in line for line in result.stderr.splitlines()), result.stderr[-2000:]
        control = re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", result.stderr)  # tabs, newlines, \r: tqdm's
        assert not control, f"control characters reached the terminal: {control}"

    return check


_SIZE_FORM = "expected a size of 1 byte or more: a number with an optional unit, e.g. 500MB"

RAW_AND_STAGING = [
    # stems that collide once the suffix is normalised, in images and in labels
    Case(
        "image-png-and-PNG-of-one-frame",
        LOCAL,
        exit=1,
        error=".png in ",
        says=("are two files for the frame", "suffixes are matched ignoring case"),
        arrange=_copy_as(_first("test", "images"), "{stem}.PNG"),
    ),
    Case(
        "label-npy-and-NPY-of-one-frame",
        LOCAL,
        exit=1,
        error=".npy in ",
        says=("labels 000000200000.NPY and 000000200000.npy in ", "are two files for the frame 000000200000"),
        arrange=_copy_as(_first("test", "labels"), "{stem}.NPY"),
    ),
    Case(
        "image-Png-and-png-across-the-train-split",
        LOCAL,
        exit=1,
        error="are two files for the frame",
        arrange=_copy_as(_first("train", "images"), "{stem}.Png"),
    ),
    # the suffixes of images and labels alike
    Case(
        "label-with-suffix-NPY-is-its-frame-s-label",
        LOCAL,
        check=_card_lists({"pupil": ALL_ROWS}),
        arrange=_rename_as(_first("test", "labels"), "{stem}.NPY"),
    ),
    Case(
        "image-with-suffix-PNG-and-label-NpY",
        LOCAL,
        check=_card_lists({"pupil": ALL_ROWS}),
        arrange=_arrange(
            _rename_as(_first("train", "images"), "{stem}.PNG"), _rename_as(_first("train", "labels"), "{stem}.NpY")
        ),
    ),
    Case(
        "missing-label-names-the-npz-of-that-stem",
        LOCAL,
        exit=1,
        error="has no label ",
        says=("(labels/ holds 000000200000.npz, not a .npy); expected one .npy per image",),
        arrange=_edit(_first("test", "labels"), _label_to_npz),
    ),
    # split folders with one of images/ and labels/, or neither
    Case(
        "split-with-labels-but-no-images",
        LOCAL,
        exit=1,
        error="test has labels/ but no images/; expected both",
        arrange=lambda w: shutil.rmtree(w.split_dir / "test" / "images"),
    ),
    Case(
        "split-with-labels-but-no-images-with-splits-train",
        (*LOCAL, "--splits", "train"),
        exit=1,
        error="validation has labels/ but no images/",
        arrange=lambda w: shutil.rmtree(w.split_dir / "validation" / "images"),
    ),
    Case(
        "split-with-images-but-no-labels",
        (*LOCAL, "--skip-unlabeled"),
        exit=1,
        error="validation has images/ but no labels/; expected both",
        arrange=lambda w: shutil.rmtree(w.split_dir / "validation" / "labels"),
    ),
    Case(
        "split-folder-that-is-empty",
        LOCAL,
        exit=1,
        error="test holds neither images/ nor labels/",
        arrange=_empty_folder(lambda w: w.split_dir / "test"),
    ),
    Case(
        "images-folder-that-is-empty",
        LOCAL,
        exit=1,
        error="test/images holds no .png images",
        arrange=_empty_folder(lambda w: w.split_dir / "test" / "images"),
    ),
    Case(
        "images-that-is-a-file",
        LOCAL,
        exit=1,
        error="test/images is not a folder; expected the folder of the",
        arrange=lambda w: (
            shutil.rmtree(w.split_dir / "test" / "images"),
            (w.split_dir / "test" / "images").write_text("x"),
        ),
    ),
    # labels that are not integer class ids
    Case(
        "label-of-bools",
        LOCAL,
        exit=1,
        error="holds a bool array (a True/False mask); expected integer class ids",
        arrange=_edit(_first("test", "labels"), lambda p: np.save(p, np.load(p) == 3)),
    ),
    Case(
        "label-of-whole-float32",
        LOCAL,
        exit=1,
        error="has dtype float32; expected integer class ids 0..3",
        arrange=_edit(_first("test", "labels"), lambda p: np.save(p, np.load(p).astype(np.float32))),
    ),
    Case(
        "label-of-timedelta",
        LOCAL,
        exit=1,
        error="has dtype timedelta64[s]; expected integer class ids",
        arrange=_edit(_first("test", "labels"), lambda p: np.save(p, np.load(p).astype("m8[s]"))),
    ),
    Case(
        "label-of-big-endian-int32-is-read",
        LOCAL,
        check=_card_lists({"pupil": ALL_ROWS}),
        arrange=_edit(_first("test", "labels"), lambda p: np.save(p, np.load(p).astype(">i4"))),
    ),
    # names that are not one printable line
    Case(
        "newline-in-an-image-name",
        LOCAL,
        exit=1,
        error="x\\ny.png' has no label ",
        says=("expected one .npy per image",),
        check=_line_with("expected one .npy per image"),
        arrange=_image_without_label("x\ny.png"),
    ),
    Case(
        "terminal-escape-in-an-image-name",
        LOCAL,
        exit=1,
        error="\\x1b[2J.png' has no label",
        check=_line_with("has no label"),
        arrange=_image_without_label("\x1b[2J.png"),
    ),
    Case(
        "newline-in-an-orphan-label-name-warns-on-one-line",
        LOCAL,
        says=("train: ignored 1 labels without an image (e.g. 'labels/x\\ny.npy')",),
        arrange=_copy_as(_first("train", "labels"), "x\ny.npy"),
    ),
    Case(
        "newline-in-the-local-dir",
        ("--data-dir", "{raw}", "--local-dir", "{tmp}/o\nut", "--no-upload"),
        exit=1,
        error="the staging folder '",
        says=("o\\nut' is a file, not a folder",),
        check=_line_with("is a file"),
        arrange=lambda w: (w.tmp / "o\nut").write_text("a file"),
    ),
    Case(
        "newline-in-a-duplicate-image-name",
        LOCAL,
        exit=1,
        error="are two files for the frame 'x\\ny'",
        arrange=_arrange(_image_without_label("x\ny.png"), _image_without_label("x\ny.PNG")),
    ),
    # the staging folder: splits this run does not rebuild
    Case(
        "stale-config-after-a-fixed-label",
        LOCAL,
        says=(
            "full/train: removed its 1 shard(s) from ",
            "since it was built from image or label files whose "
            "contents have changed since; the folder's card no longer lists it. Rebuild it with: python push.py "
            "--data-dir ",
        ),
        arrange=_arrange(_built_all_configs(), _fix_a_pupil_label("train")),
        check=_card_lists({"pupil": ALL_ROWS, "full": {"validation": 1, "test": 1}}),
    ),
    Case(
        "stale-configs-after-a-fixed-label-in-every-split",
        LOCAL,
        says=("full/test: removed", "full/train: removed", "--config full --splits train test"),
        arrange=_arrange(_built_all_configs(), _fix_a_pupil_label("train"), _fix_a_pupil_label("test")),
        check=_card_lists({"pupil": ALL_ROWS, "full": {"validation": 1}}),
    ),
    Case(
        "stale-split-of-the-same-config-after-a-split-run",
        (*LOCAL, "--splits", "train"),
        says=("pupil/test: removed its 1 shard(s)", "--config pupil --splits test"),
        arrange=_arrange(_built_first, _fix_a_pupil_label("test")),
        check=_card_lists({"pupil": {"train": 3, "validation": 1}}),
    ),
    Case(
        "stale-split-whose-raw-split-is-gone",
        LOCAL,
        says=(
            "pupil/test: removed its 1 shard(s)",
            "since the raw data has no test split any more",
            "Rebuild it, from raw data that holds test, with:",
        ),
        arrange=_arrange(_built_first, lambda w: shutil.rmtree(w.split_dir / "test")),
        check=_card_lists({"pupil": {"train": 3, "validation": 1}}),
    ),
    Case(
        "stale-config-after-a-sample-run-in-the-same-folder",
        ("--sample", "--local-dir", "{out}", "--no-upload"),
        says=(
            "full/train: removed",
            "full/validation: removed",
            "full/test: removed",
            "Rebuild it with: python push.py --sample --local-dir ",
        ),
        arrange=_built_all_configs(),
        check=_card_lists({"pupil": {"train": 8, "validation": 3, "test": 3}}),
    ),
    Case(
        "split-not-asked-for-is-read-with-the-run-s-label-policy",
        (*LOCAL, "--splits", "test"),
        exit=1,
        error="checking the train split that ",
        says=("holds against its raw data: image ", "has no label "),
        arrange=_arrange(
            lambda w: w.files("train", "labels")[0].unlink(), lambda w: _ok(w.push(*LOCAL, "--skip-unlabeled"))
        ),
        check=_card_lists({"pupil": {"train": 2, "validation": 1, "test": 1}}),
    ),
    Case(
        "current-config-is-kept-whatever-its-shard-size",
        LOCAL,
        arrange=_built_all_configs("--max-shard-size", "12MB"),
        check=_only_pupil_built,
    ),
    Case(
        "unfinished-split-of-another-config-is-named-and-kept",
        LOCAL,
        says=(
            "full/train: ",
            "holds 1 of its shards, not the whole set (an unfinished build), so the folder's card "
            "does not list it. Finish it with: python push.py",
        ),
        arrange=_half_of_full_train,
        check=_unfinished_left_alone,
    ),
    Case(
        "foreign-parquet-named-as-a-shard-is-left-alone",
        LOCAL,
        exit=1,
        error="test-00000-of-00001.parquet has no build record of push.py",
        arrange=_a_foreign_parquet,
        check=_folder_unchanged,
    ),
    # the staging folder and the raw data apart
    Case(
        "local-dir-inside-the-raw-test-split",
        ("--data-dir", "{raw}", "--local-dir", "{raw}/openEDS/openEDS/test", "--no-upload"),
        exit=1,
        error="openEDS/openEDS/test is inside the raw data /",
        arrange=_remember_raw,
        check=_raw_untouched_and_nothing_written,
    ),
    Case(
        "local-dir-is-the-data-dir",
        ("--data-dir", "{raw}", "--local-dir", "{raw}", "--no-upload"),
        exit=1,
        error="/raw/openEDS/openEDS is inside --local-dir ",
        arrange=_remember_raw,
        check=_raw_untouched_and_nothing_written,
    ),
    Case(
        "local-dir-is-the-folder-of-the-split-folders",
        ("--data-dir", "{raw}", "--local-dir", "{raw}/openEDS/openEDS", "--no-upload"),
        exit=1,
        error="openEDS/openEDS is inside the raw data ",
        arrange=_remember_raw,
        check=_raw_untouched_and_nothing_written,
    ),
    Case(
        "local-dir-inside-a-split-folder-linked-from-elsewhere",
        ("--data-dir", "{raw}", "--local-dir", "{tmp}/elsewhere/test/out", "--no-upload"),
        exit=1,
        error="elsewhere/test/out is inside the raw test split ",
        arrange=_test_split_linked_from_elsewhere,
    ),
    Case(
        "local-dir-beside-the-split-folders-under-the-data-dir",
        ("--data-dir", "{raw}", "--local-dir", "{raw}/out", "--no-upload"),
        arrange=_arrange(lambda w: setattr(w, "out", w.raw / "out"), _built_first),
        check=_card_lists({"pupil": ALL_ROWS}),
    ),
    Case(
        "local-dir-links-into-the-raw-images",
        ("--data-dir", "{raw}", "--local-dir", "{tmp}/link/out", "--no-upload"),
        exit=1,
        error="link/out (which resolves to ",
        says=("openEDS/openEDS/test/images/out) is inside the raw",),
        arrange=_link_to_raw_images,
        check=_raw_untouched_and_nothing_written,
    ),
    Case(
        "raw-data-inside-the-local-dir",
        ("--data-dir", "{out}/raw", "--local-dir", "{out}", "--no-upload"),
        exit=1,
        error="/raw/openEDS/openEDS is inside --local-dir ",
        arrange=_raw_moved_into_out,
        check=_out_holds_only_the_raw_data,
    ),
    Case(
        "local-dir-inside-the-kaggle-cache",
        (
            "--local-dir",
            "{tmp}/kaggle/soumicksarker--openeds-dataset/data/out",
            "--no-upload",
            "--cache-dir",
            "{tmp}/kaggle",
        ),
        exit=1,
        error="data/out is inside the Kaggle download cache (--cache-dir) of the raw data ",
        check=lambda w, r: not (w.tmp / "kaggle").exists() or pytest.fail("the cache was written"),
    ),
    Case(
        "kaggle-cache-inside-the-local-dir",
        ("--local-dir", "{tmp}", "--no-upload", "--cache-dir", "{tmp}/kaggle"),
        exit=1,
        error="is inside --local-dir ",
        check=lambda w, r: not (w.tmp / ".openeds").exists() or pytest.fail("the folder was written"),
    ),
    Case(
        "local-dir-empty",
        ("--data-dir", "{raw}", "--local-dir", "", "--no-upload"),
        exit=2,
        error="argument --local-dir: '' is empty; expected a folder path",
    ),
    Case(
        "data-dir-empty",
        ("--data-dir", "", "--local-dir", "{out}", "--no-upload"),
        exit=2,
        error="argument --data-dir: '' is empty; expected a folder path",
    ),
    Case(
        "repo-id-empty",
        ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", ""),
        exit=2,
        error="--repo-id '' is empty; expected a value, or leave --repo-id out for its default",
        check=_not_built,
        env={"HF_TOKEN": TOKEN},
    ),  # an empty --tag: tag-empty-is-refused-before-the-build
    Case(
        "kaggle-dataset-empty",
        ("--local-dir", "{out}", "--no-upload", "--kaggle-dataset", " "),
        exit=2,
        error="--kaggle-dataset ' ' is empty; expected a value",
        check=_not_built,
    ),
    # --max-shard-size
    *(
        Case(
            f"max-shard-size-{name}",
            (*LOCAL, f"--max-shard-size={value}"),
            exit=2,
            error=f"argument --max-shard-size: {value!r} {why}; {_SIZE_FORM}",
            check=_not_built,
        )
        for name, value, why in [
            ("inf", "infGB", "is not a size"),
            ("nan", "nanGB", "is not a size"),
            ("negative", "-5MB", "is below 1 byte"),
            ("zero", "0", "is below 1 byte"),
            ("below-one-byte", "0.5", "is below 1 byte"),
            ("junk", "lots", "is not a size"),
            ("exponent", "1e9", "is not a size"),
            ("empty", "", "is not a size"),
            ("megabits", "500Mbit", "is not a size"),
        ]
    ),
    Case(
        "max-shard-size-below-one-full-row",
        (*LOCAL, "--config", "all", "--max-shard-size", "5MB"),
        exit=2,
        error="--max-shard-size 5,000,000 bytes is smaller than one full row (5,632,000 bytes); expected at least",
        check=_not_built,
    ),
    Case(
        "max-shard-size-of-400-digits",
        (*LOCAL, "--max-shard-size", "1" + "0" * 400 + "GB"),
        check=_card_lists({"pupil": ALL_ROWS}),
    ),
    Case(
        "max-shard-size-in-binary-units",
        (*LOCAL, "--max-shard-size", "4MiB"),
        check=lambda w, r: len(list((w.out / "data").glob("train-*-of-00003.parquet"))) == 3 or pytest.fail(""),
    ),
]


# -- what a publication may change on the Hub, and a Hub that is not what it claims ----------------
#
# The owner's files and card survive a publication (or the run stops before the build, leaving the
# Hub as it was); tags and repo ids the Hub would refuse, and tokens no header can carry, are said
# before any request; an answer, a card or a shard that is not what it claims is one line naming it.

HUB_URL = os.environ.get("HF_ENDPOINT", "")  # set by tests/conftest.py before this module is imported
HTML = b"<!DOCTYPE html><html><body><h1>Sign in to the hotel Wi-Fi</h1></body></html>"
MY_NOTES = "# MY NOTES\n\nPlease cite our paper.\n"
USER_FILES = {
    "data/train-notes.txt": b"notes on train\n",  # under a split's shard prefix: the old plan deleted it
    "data/test-extra.parquet": b"my own parquet, not a shard",  # matched by the old `data/test-*` pattern
    "full/NOTES.md": b"about full\n",
    "docs/paper.md": b"# Please cite our paper\n",
}
#: named as push_to_hub names shards: in a v2 repo not this tool's, so it stays (in a v1 repo it is v1 data)
SHARD_LIKE = {"data/train-00000-of-00001-ab12.parquet": b"shard-like, not this tool's"}
REVOKED = {"X-Error-Message": "Invalid credentials in Authorization header"}  # the Hub's words for a dead token
TOKEN_ENV = {"HF_TOKEN": TOKEN}
COMMIT = "/api/datasets/{repo}/commit/main"


def _with_user_files(files: Mapping[str, bytes]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        HfApi(token=TOKEN).create_commit(
            world.repo_id,
            [CommitOperationAdd(p, c) for p, c in files.items()],
            commit_message="the owner's files",
            repo_type="dataset",
        )
        (world.tmp / "user-files.txt").write_text("\n".join(files))

    return arrange


def _head_files(world: World) -> dict[str, bytes]:
    repo = _repo(world)
    return {path: repo.read(entry) for path, entry in repo.commits[repo.branches["main"]].files.items()}


def _user_files_stay_unread(world: World, result: subprocess.CompletedProcess[str]) -> None:
    head = _head_files(world)
    files = {path: {**USER_FILES, **SHARD_LIKE}[path] for path in (world.tmp / "user-files.txt").read_text().split()}
    assert {p: head.get(p) for p in files} == files, "a file of the owner changed or went"
    patterns = [f["path"] for c in _card_at_head(world)["configs"] for f in c["data_files"]]
    assert not [p for p in files for pattern in patterns if PurePosixPath(p).match(pattern)], patterns
    import datasets  # the test process talks to the same test Hub

    loaded = datasets.load_dataset(world.repo_id, cache_dir=str(world.tmp / "load"))
    assert {split: ds.num_rows for split, ds in loaded.items()} == COUNTS


def _v1_converted_and_user_files_stay(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert sorted(_repo(world).tags) == ["v1", "v2"], _repo(world).tags
    _user_files_stay_unread(world, result)


def _owner_card(edit: Callable[[str], str]) -> Callable[[World], None]:
    """The owner's card on the Hub: `edit` of the published one (committed with the real client)."""

    def arrange(world: World) -> None:
        text = edit(_head_files(world)["README.md"].decode())
        HfApi(token=TOKEN).create_commit(
            world.repo_id,
            [CommitOperationAdd("README.md", text.encode())],
            commit_message="my card",
            repo_type="dataset",
        )
        (world.tmp / "owner-card.txt").write_text(text)

    return arrange


def _owner_card_replaced_and_kept_at_its_revision(world: World, result: subprocess.CompletedProcess[str]) -> None:
    repo = _repo(world)
    head = repo.commits[repo.branches["main"]]
    assert card_origin(repo.read(head.files["README.md"]).decode()) == "generated"
    parent = repo.commits[head.parent]
    assert repo.read(parent.files["README.md"]).decode() == (world.tmp / "owner-card.txt").read_text()
    assert f"/datasets/{world.repo_id}/blob/{parent.sha}/README.md" in result.stderr


def _without_checksum(text: str) -> str:
    """A card as versions of this tool before the checksum wrote it."""
    return "\n".join(line for line in text.splitlines() if "openeds-precomputed card, checksum" not in line) + "\n"


def _edited_inside(text: str) -> str:
    return text.replace("Bit-exact", "Bit-exact (we checked)")


def _latin1_card(world: World) -> None:
    world.hub.write_files(world.repo_id, {"README.md": "# Notizen für später\n".encode("latin-1")})


def _broken_kept_shard(world: World) -> None:
    """The train shard replaced by bytes that are not parquet, and the card's listing without train
    (a data key: the card still counts as generated), so that its rows come from the shard's footer."""
    card = DatasetCard(_head_files(world)["README.md"].decode())
    for config in card.data.configs:
        config["data_files"] = [f for f in config["data_files"] if f["split"] != "train"]
    card.data.dataset_info["splits"] = [s for s in card.data.dataset_info["splits"] if s["name"] != "train"]
    operations = [
        CommitOperationAdd("README.md", str(card).encode()),
        CommitOperationAdd("data/train-00000-of-00001.parquet", b"this is not parquet " * 8),
    ]
    HfApi(token=TOKEN).create_commit(world.repo_id, operations, commit_message="broken", repo_type="dataset")


def _shard_without_card(world: World) -> None:
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(
        world.repo_id,
        [CommitOperationAdd("data/train-00000-of-00001.parquet", b"<html>oops</html>")],
        commit_message="not parquet",
        repo_type="dataset",
    )


def _gated_repo_of_someone_else(world: World) -> None:
    world.hub.add_token("hf_faults_gatekeeper", "gatekeeper")
    world.repo_id = world.repo_id.replace("faults/", "gatekeeper/")
    api = HfApi(token="hf_faults_gatekeeper")
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(
        world.repo_id,
        [CommitOperationAdd("README.md", sign("# gated\n").encode())],
        commit_message="gated",
        repo_type="dataset",
    )
    world.hub.gate(world.repo_id, granted={"someone-else"})


def _html_everywhere(world: World) -> None:
    for method in ("GET", "POST", "HEAD", "PUT"):
        world.hub.fail(method, ".*", status=200, body=HTML, times=1000)


def _head_moved_message(world: World, result: subprocess.CompletedProcess[str]) -> None:
    head = _repo(world).branches["main"]
    assert f"the head of {world.repo_id} moved from {head} during the upload" in result.stderr


HUB_SAFETY = [
    # the owner's files: nothing this tool did not write is deleted or read as data, and the run names them
    Case(
        "user-files-stay-are-named-and-are-not-read-as-data",
        (*PUBLISH, "--config", "all"),
        says=("holds 5 files this tool did not write; they stay as they are", "'data/train-notes.txt'"),
        arrange=_arrange(_published_first, _with_user_files({**USER_FILES, **SHARD_LIKE})),
        check=_user_files_stay_unread,
        env=TOKEN_ENV,
    ),
    Case(
        "v1-conversion-keeps-user-files",
        PUBLISH,
        says=("holds 4 files this tool did not write",),
        arrange=_arrange(_v1_published, _with_user_files(USER_FILES)),
        check=_v1_converted_and_user_files_stay,
        env=TOKEN_ENV,
    ),
    # the owner's card: refused before the build, or replaced when asked and kept at its revision
    Case(
        "hand-written-card-is-refused-before-the-build",
        PUBLISH,
        exit=1,
        error="README.md of faults/",
        says=("was written or edited by hand (it has no checksum line of this tool", "re-run with --replace-card"),
        arrange=_arrange(_published_first, _owner_card(lambda text: MY_NOTES)),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "card-with-owner-text-added-is-refused",
        PUBLISH,
        exit=1,
        error="was written or edited by hand (its text no longer matches the checksum",
        arrange=_arrange(_published_first, _owner_card(lambda text: text + MY_NOTES)),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "card-edited-inside-the-generated-text-is-refused",
        PUBLISH,
        exit=1,
        error="was written or edited by hand (its text no longer matches the checksum",
        arrange=_arrange(_published_first, _owner_card(_edited_inside)),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "card-of-an-earlier-version-without-checksum-is-refused",
        PUBLISH,
        exit=1,
        error="it has no checksum line of this tool",
        arrange=_arrange(_published_first, _owner_card(_without_checksum)),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "hand-written-card-is-replaced-with-replace-card",
        (*PUBLISH, "--replace-card"),
        says=("Replacing the card README.md of faults/", "the replaced card stays readable at"),
        arrange=_arrange(_published_first, _owner_card(lambda text: MY_NOTES)),
        check=_owner_card_replaced_and_kept_at_its_revision,
        env=TOKEN_ENV,
    ),
    Case(
        "replace-card-without-upload",
        (*LOCAL, "--replace-card"),
        exit=2,
        error="--replace-card conflicts with --no-upload",
    ),
    # tags: reserved ones, and names the Hub refuses, said right after the arguments are parsed
    *(
        Case(
            f"tag-{label}-is-reserved",
            (*PUBLISH, f"--tag={tag}"),
            exit=2,
            error=f"argument --tag: tag {tag!r} is reserved",
            arrange=_earlier_commit,
            env=TOKEN_ENV,
        )
        for label, tag in (("v1", "v1"), ("V1", "V1"), ("v1.0", "v1.0"), ("main", "main"))
    ),
    *(
        Case(
            f"tag-{label}-is-refused-before-the-build",
            (*PUBLISH, f"--tag={tag}"),
            exit=2,
            error=f"argument --tag: tag {tag!r} is not a tag name the Hub accepts",
            check=_nothing_built_or_sent,
            env=TOKEN_ENV,
        )
        for label, tag in (
            ("with-a-space", "v2 final"),
            ("with-dots", "v2..1"),
            ("ending-in-lock", "v2.lock"),
            ("with-a-leading-dash", "-v2"),
            ("with-a-line-break", "v2\nfinal"),
            ("with-a-colon", "v2:1"),
            ("with-a-star", "v2*"),
            ("empty", ""),
        )
    ),
    # repo ids huggingface_hub refuses: one line, before any request
    *(
        Case(
            f"repo-id-{label}",
            ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", repo_id),
            exit=1,
            error=error,
            check=_nothing_built_or_sent,
            env=TOKEN_ENV,
        )
        for label, repo_id, error in (
            ("too-long", "faults/" + "x" * 97, "maximum length is 96"),
            ("with-dots", "faults/a..b", "Cannot have -- or .. in repo_id"),
            ("with-double-dash", "faults/a--b", "Cannot have -- or .. in repo_id"),
            ("ending-in-git", "faults/data.git", "cannot end by '.git'"),
            ("non-ascii", "faults/daten-für-alle", "is not of the form namespace/name"),
            ("with-a-line-break", "faults/a\nb", "repo id 'faults/a\\nb' is not of the form namespace/name"),
        )
    ),
    # tokens no HTTP header can carry: one line, before any request, the token never shown
    *(
        Case(
            f"token-{label}",
            PUBLISH,
            exit=1,
            error="the Hugging Face token from HF_TOKEN holds a character that is not printable ASCII",
            check=_nothing_built_or_sent,
            env={"HF_TOKEN": token},
        )
        for label, token in (
            ("with-an-accent", "hf_faults_wríte_token"),
            ("with-a-space-inside", "hf_faults write"),
            ("with-a-control-character", "hf_faults\x01write"),
        )
    ),
    # a Hub that is not what it claims: one line naming the endpoint or the file
    Case(
        "endpoint-answers-html-with-200",
        (*PUBLISH, *FAST),
        exit=1,
        error=f"could not check the Hugging Face token: {HUB_URL} answered with text that is not JSON",
        says=("check HF_ENDPOINT and the proxy settings",),
        arrange=_html_everywhere,
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "whoami-answers-json-of-another-shape",
        PUBLISH,
        exit=1,
        error=f"{HUB_URL} answered with JSON without a user name (list)",
        arrange=_fail(
            "GET",
            "/api/whoami-v2",
            status=200,
            body=b'["not", "a", "user"]',
            content_type="application/json",
            times=1000,
        ),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "repo-info-answers-json-of-another-shape",
        PUBLISH,
        exit=1,
        error="could not read the repo faults/",
        says=(f"{HUB_URL} answered with JSON of another shape (",),
        arrange=_fail(
            "GET", "/api/datasets/{repo}$", status=200, body=b"{}", content_type="application/json", times=1000
        ),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "listing-answers-json-of-another-shape",
        PUBLISH,
        exit=1,
        error="could not list the files of faults/",
        says=(f"{HUB_URL} answered with JSON of another shape (",),
        arrange=_arrange(
            _earlier_commit,
            _fail("GET", "/api/datasets/{repo}/tree/", status=200, body=b"{}", content_type="application/json"),
        ),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "card-download-answers-an-html-page",
        (*PUBLISH, *FAST),
        exit=1,
        error="could not download the card README.md of faults/",
        says=("answered with an HTML page",),
        arrange=_arrange(
            _published_first, _fail("GET", "/datasets/{repo}/resolve/.*/README.md", status=200, body=HTML, times=1000)
        ),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "commit-answered-with-html",
        (*PUBLISH, "--splits", "test", *FAST),
        exit=1,
        error="could not commit to faults/",
        says=("answered with text that is not JSON", "the commit may have landed"),
        arrange=_arrange(_earlier_commit, _fail("POST", COMMIT, status=200, body=HTML, times=1000)),
        env=TOKEN_ENV,
    ),
    Case(
        "card-that-is-not-utf8",
        PUBLISH,
        exit=1,
        error="is not UTF-8 text (byte 0xfc at offset 11)",
        arrange=_arrange(_published_first, _latin1_card),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "kept-shard-that-is-not-parquet",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="data/train-00000-of-00001.parquet (at ",
        says=("is not a parquet file (ArrowInvalid",),
        arrange=_arrange(_published_first, _broken_kept_shard),
        env=TOKEN_ENV,
    ),
    Case(
        "first-shard-that-is-not-parquet-without-a-card",
        PUBLISH,
        exit=1,
        error="data/train-00000-of-00001.parquet (at ",
        says=("is not a parquet file",),
        arrange=_shard_without_card,
        check=_not_built,
        env=TOKEN_ENV,
    ),
    # access: a gated repo, a token revoked during the run, a concurrent writer
    Case(
        "gated-repo-is-said-before-the-build",
        PUBLISH,
        exit=1,
        error="is a gated dataset and user 'faults' has not been granted access to it (403 GatedRepo",
        arrange=_gated_repo_of_someone_else,
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "gated-answer-of-the-listing-is-not-a-missing-repo",
        PUBLISH,
        exit=1,
        error="is a gated dataset and user 'faults'",
        arrange=_fail("GET", "/api/datasets/{repo}$", status=403, headers={"X-Error-Code": "GatedRepo"}, times=1000),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "token-revoked-before-the-commit",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="the Hugging Face token was rejected by",
        says=("when trying to commit to faults/", "nothing was published"),
        arrange=_arrange(_earlier_commit, _fail("POST", COMMIT, status=401, headers=REVOKED)),
        env=TOKEN_ENV,
    ),
    Case(
        "commit-412-from-a-concurrent-writer",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="moved from",
        says=("nothing was published",),
        arrange=_arrange(_earlier_commit, _fail("POST", COMMIT, status=412)),
        check=_head_moved_message,
        env=TOKEN_ENV,
    ),
]


# -- follow-ups on the Hub (issue 14): stale remote splits, footer reads, access and tags before the build ---
#
# The splits a publication keeps are checked against the raw data as it is now by the build records in
# their shards' footers: a stale one stops the run before the build, naming it and the command that
# rebuilds it, the Hub unchanged; one that cannot be checked is kept and named. Footers are ranged GETs
# inside the run's own retry budget. A repo the token may read but not write, a namespace that is not the
# user's, and a --tag the repo already has are said before anything is fetched or built.

PARQUET = r"/datasets/{repo}/resolve/.*\.parquet"


def _published_all_first(world: World) -> None:
    """An earlier publication of both configs of the whole sample."""
    result = world.push(*PUBLISH, "--local-dir", str(world.tmp / "earlier"), "--config", "all", env=TOKEN_ENV)
    assert result.returncode == 0, result.stderr[-2000:]


def _nothing_built(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The run may have taken the staging folder (its lock), but built and wrote nothing in it."""
    written = [p for p in world.out.rglob("*") if p.is_file() and not p.name.startswith("lock")]
    assert not written, f"the run built or wrote {written} before its refusal"


def _ends_with(tail: str) -> Callable[[World, subprocess.CompletedProcess[str]], None]:
    """The error line ends with `tail` (`{raw}`, `{out}`, `{repo}` filled in), and nothing was built."""

    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert line.endswith(world.fill(tail)), line
        _nothing_built(world, result)

    return check


def _rewrite_record(path: str, edit: Callable[[dict], dict | None]) -> Callable[[World], None]:
    """The published shard `path` again, with its build record changed by `edit` (None: no record at all),
    committed with the real client: as an earlier version of this tool, or other versions, would have left it."""

    def arrange(world: World) -> None:
        table = pq.read_table(io.BytesIO(_head_files(world)[path]))
        metadata = dict(table.schema.metadata)
        record = edit(json.loads(metadata.pop(b"openeds")))
        if record is not None:
            metadata[b"openeds"] = json.dumps(record, sort_keys=True).encode()
        buffer = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(metadata), buffer)
        HfApi(token=TOKEN).create_commit(
            world.repo_id,
            [CommitOperationAdd(path, buffer.getvalue())],
            commit_message="rewritten",
            repo_type="dataset",
        )

    return arrange


def _card_rows(world: World) -> dict[str, dict[str, int]]:
    infos = _card_at_head(world)["dataset_info"]
    return {
        info["config_name"]: {s["name"]: s["num_examples"] for s in info["splits"]}
        for info in (infos if isinstance(infos, list) else [infos])
    }


def _card_rows_are(expected: dict[str, dict[str, int]]) -> Callable[[World, subprocess.CompletedProcess[str]], None]:
    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        assert _card_rows(world) == expected, _card_rows(world)

    return check


def _full_train_rebuilt(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The command the refusal names did it: full/train on the Hub is built from the fixed label now."""
    record = json.loads(
        pq.read_schema(io.BytesIO(_head_files(world)["full/train-00000-of-00001.parquet"])).metadata[b"openeds"]
    )
    assert record["inputs_xxh3_128"] != (world.tmp / "full-train.xxh3").read_text(), "full/train was not rebuilt"
    assert _card_rows(world) == {"pupil": ALL_ROWS, "full": ALL_ROWS}


def _remember_full_train(world: World) -> None:
    record = pq.read_schema(io.BytesIO(_head_files(world)["full/train-00000-of-00001.parquet"])).metadata[b"openeds"]
    (world.tmp / "full-train.xxh3").write_text(json.loads(record)["inputs_xxh3_128"])


def _footers_read_once(world: World, result: subprocess.CompletedProcess[str]) -> None:
    reads = [r.path for r in world.hub.requests if r.method == "GET" and re.search(r"/resolve/.*\.parquet$", r.path)]
    assert len(reads) == len(set(reads)) == 5, reads  # the five kept shards, each once (one ranged GET)


def _moved_head(world: World) -> None:
    """A commit after the publication: its tag `v2` no longer names the head."""
    world.hub.write_files(world.repo_id, {"NOTES.md": b"notes\n"})


def _gated_and_granted(world: World) -> None:
    _gated_repo_of_someone_else(world)
    world.hub.gate(world.repo_id, granted={"faults"})


def _repo_of_someone_else(world: World) -> None:
    _gated_repo_of_someone_else(world)
    _repo(world).gated = False


def _rerun_nothing_to_publish(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert "already holds this data at v2" in result.stdout, result.stdout
    assert sorted(_repo(world).tags) == ["v2"]


HUB_FOLLOW_UPS = [
    # remote splits a run keeps, checked against the raw data as it is now
    Case(
        "stale-remote-config-after-a-fixed-label",
        PUBLISH,
        exit=1,
        error="holds 1 split(s) that this run keeps but that were not built from the raw data as it is now "
        "(full/train: it was built from image or label files whose contents have changed since)",
        arrange=_arrange(_published_all_first, _fix_a_pupil_label("train")),
        check=_ends_with("in one run: python push.py --data-dir {raw} --local-dir {out} --repo-id {repo} --config all"),
        env=TOKEN_ENV,
    ),
    Case(
        "stale-remote-split-with-splits-test",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="(pupil/train: it was built from image or label files whose contents have changed since)",
        arrange=_arrange(_published_first, _fix_a_pupil_label("train")),
        check=_ends_with("--config pupil --splits train test"),
        env=TOKEN_ENV,
    ),
    Case(
        "stale-remote-splits-of-both-configs-are-named-in-one-line",
        (*PUBLISH, "--splits", "validation"),
        exit=1,
        error="holds 4 split(s) that this run keeps",
        says=("pupil/train: ", "pupil/test: ", "full/train: ", "full/test: "),
        arrange=_arrange(_published_all_first, _fix_a_pupil_label("train"), _fix_a_pupil_label("test")),
        check=_ends_with("--config all"),
        env=TOKEN_ENV,
    ),
    Case(
        "stale-remote-split-built-by-other-versions",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="(pupil/train: it was built by other versions (compute_version 0 -> ",
        arrange=_arrange(
            _published_first,
            _rewrite_record("data/train-00000-of-00001.parquet", lambda r: {**r, "compute_version": 0}),
        ),
        check=_nothing_built,
        env=TOKEN_ENV,
    ),
    Case(
        "stale-remote-split-of-other-frames",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="(pupil/train: it was built from other frames (3 rows) than the raw split pairs up now (2 frames))",
        arrange=_arrange(
            _published_first,
            lambda w: [p.unlink() for p in (w.files("train", "images")[0], w.files("train", "labels")[0])],
        ),
        check=_nothing_built,
        env=TOKEN_ENV,
    ),
    Case(
        "stale-remote-config-is-rebuilt-by-the-command-the-refusal-names",
        (*PUBLISH, "--config", "all"),
        arrange=_arrange(_published_all_first, _remember_full_train, _fix_a_pupil_label("train")),
        check=_full_train_rebuilt,
        env=TOKEN_ENV,
    ),
    Case(
        "remote-split-without-a-build-record-is-kept-and-named",
        (*PUBLISH, "--splits", "test"),
        says=(
            "pupil/train is kept as the Hub holds it, unchecked: 1 of its 1 shard(s) carry no build record",
            "If its images or labels changed since, rebuild it with: python push.py --data-dir ",
        ),
        arrange=_arrange(_published_first, _rewrite_record("data/train-00000-of-00001.parquet", lambda r: None)),
        check=_card_rows_are({"pupil": ALL_ROWS}),
        env=TOKEN_ENV,
    ),
    Case(
        "remote-split-whose-raw-split-is-gone-is-kept-and-named",
        PUBLISH,
        says=(
            "pupil/validation is kept as the Hub holds it, unchecked: the raw data of this run has no validation "
            "split to compare it with",
        ),
        arrange=_arrange(_published_first, lambda w: shutil.rmtree(w.split_dir / "validation")),
        check=_card_rows_are({"pupil": ALL_ROWS}),
        env=TOKEN_ENV,
    ),
    Case(
        "current-remote-splits-are-kept-and-each-footer-is-read-once",
        (*PUBLISH, "--splits", "test"),
        arrange=_published_all_first,
        check=_footers_read_once,
        env=TOKEN_ENV,
    ),
    # footers: ranged GETs inside the run's own budget, one line for what is not parquet
    Case(
        "kept-shard-footer-read-stalls",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="could not read the parquet footer of faults/",
        says=(".parquet got no data for 1 s (read timeout", "the retry budget is 2 s"),
        arrange=_arrange(_published_first, _stalls("GET", PARQUET)),
        check=_nothing_built,
        env=TOKEN_ENV,
        timeout=_ends_within(1),
    ),
    Case(
        "kept-shard-footer-read-hangs",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="could not read the parquet footer of faults/",
        says=("got no data for 1 s (read timeout",),
        arrange=_arrange(_published_first, _hangs("GET", PARQUET)),
        check=_nothing_built,
        env=TOKEN_ENV,
        timeout=_ends_within(1),
    ),
    Case(
        "kept-shard-footer-503-once-is-retried",
        (*PUBLISH, "--splits", "test"),
        says=("Could not read the parquet footer of faults/",),
        arrange=_arrange(_published_first, _fail("GET", PARQUET, status=503, times=1)),
        env=TOKEN_ENV,
    ),
    Case(
        "kept-shard-footer-answered-with-html",
        (*PUBLISH, "--splits", "test", *FAST),
        exit=1,
        error="could not read the parquet footer of faults/",
        says=("answered with an HTML page",),
        arrange=_arrange(_published_first, _fail("GET", PARQUET, status=200, body=HTML, times=1000)),
        check=_nothing_built,
        env=TOKEN_ENV,
    ),
    Case(
        "kept-shard-that-is-empty",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="data/train-00000-of-00001.parquet (at ",
        says=("is not a parquet file (",),
        arrange=_arrange(
            _published_first, lambda w: w.hub.write_files(w.repo_id, {"data/train-00000-of-00001.parquet": b""})
        ),
        check=_nothing_built,
        env=TOKEN_ENV,
    ),
    # access: said right after connect, before anything is built
    Case(
        "gated-repo-readable-but-not-writable-is-said-before-the-build",
        PUBLISH,
        exit=1,
        error="user 'faults' may read the gated dataset gatekeeper/",
        says=("(access was granted) but not write",),
        arrange=_gated_and_granted,
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "repo-of-someone-else-is-said-before-the-build",
        PUBLISH,
        exit=1,
        error="user 'faults' may not write to gatekeeper/",
        says=("(403 from ",),
        arrange=_repo_of_someone_else,
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "new-repo-in-a-namespace-of-someone-else-is-said-before-the-build",
        ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", "someone/new"),
        exit=1,
        error="user 'faults' may not write to someone/new: the repo does not exist, and creating it needs write "
        "rights in 'someone'",
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "write-check-hangs",
        (*PUBLISH, *SHORT),
        exit=1,
        error="could not check write access to faults/",
        says=("/auth-check/write got no data for 1 s",),
        arrange=_arrange(_earlier_commit, _hangs("GET", "/api/datasets/{repo}/auth-check/write")),
        check=_not_built,
        env=TOKEN_ENV,
        timeout=_ends_within(1),
    ),
    # tags the repo already has
    Case(
        "tag-of-another-commit-is-refused-before-the-build",
        (*PUBLISH, "--tag", "v2"),
        exit=1,
        error="tag 'v2' already exists on faults/",
        says=("not the head", "pass another --tag, or none for the next one (v2.1)"),
        arrange=_arrange(_published_first, _moved_head),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "tag-naming-the-head-with-a-new-config-is-refused-before-the-build",
        (*PUBLISH, "--config", "all", "--tag", "v2"),
        exit=1,
        error="tag 'v2' already names the head of faults/",
        says=("(full/train is not on the Hub yet; ",),
        arrange=_published_first,
        check=_nothing_built,
        env=TOKEN_ENV,
    ),
    Case(
        "tag-naming-the-head-after-a-fixed-label-is-refused-before-the-build",
        (*PUBLISH, "--tag", "v2"),
        exit=1,
        error="tag 'v2' already names the head of faults/",
        says=("pupil/train on the Hub: it was built from image or label files whose contents have changed since",),
        arrange=_arrange(_published_first, _fix_a_pupil_label("train")),
        check=_nothing_built,
        env=TOKEN_ENV,
    ),
    Case(
        "tag-naming-the-head-on-a-rerun-publishes-nothing",
        (*PUBLISH, "--tag", "v2"),
        arrange=_published_first,
        check=_rerun_nothing_to_publish,
        env=TOKEN_ENV,
    ),
    # flags that are empty
    Case(
        "cache-dir-empty",
        ("--local-dir", "{out}", "--no-upload", "--cache-dir", ""),
        exit=2,
        error="argument --cache-dir: '' is empty; expected a folder path",
        check=_not_built,
    ),
]

# -- the error boundary (openeds/cli.py): what nobody classified is one last line too; a closed standard output,
# a terminal that cannot encode a name; a server's message that echoes the token; messages that tell the truth

#: the push.py process may write files of at most 200 kB (`ulimit -f`; Python ignores SIGXFSZ, so a write gets EFBIG)
_FILE_SIZE_LIMIT = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))"
#: `push.py ... | head -1`: the standard output is a pipe whose reader has gone
_STDOUT_CLOSED = "import os; r, w = os.pipe(); os.dup2(w, 1); os.close(w); os.close(r)"
_WHOAMI = "/api/whoami-v2"
_ECHO = {"X-Error-Message": f"request refused for the token {TOKEN}, sent as Bearer {TOKEN}"}
#: what S3 answers a PUT to a signed URL that has expired
_EXPIRED = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
_REFUSED_OBJECT = {"oid": "0" * 64, "size": 1, "error": {"code": 422, "message": "this object is too large"}}


def _immutable_data_folder(world: World) -> None:
    """The earlier build, its test shard gone and its data folder immutable (`chattr +i`: even root may not write)."""
    _copy_prebuilt(world)
    (world.out / "data" / "test-00000-of-00001.parquet").unlink()
    if subprocess.run(["chattr", "+i", str(world.out / "data")], capture_output=True).returncode:
        pytest.skip("`chattr +i` does not work on this file system")
    world.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(world.out / "data")], check=True))


def _small_temporary_folder(world: World) -> None:
    """A temporary folder of 400 kB (a tmpfs at {tmp}/small; the case's prelude points tempfile there)."""
    _root_or_skip("a small disk")
    small = world.tmp / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    world.cleanups.append(lambda: subprocess.run(["umount", "-l", str(small)], check=True))


def _without_card(world: World) -> None:
    _copy_prebuilt(world)
    (world.out / "README.md").unlink()


def _card_written(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert (world.out / "README.md").is_file(), "the card was not written"
    assert result.stdout == "", result.stdout


def _non_ascii_folder_shown_escaped(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert "local folder: " in result.stdout and "d\\xe9" in result.stdout, result.stdout
    assert (world.tmp / "dé" / "out" / "README.md").is_file()


def _last_line_is_the_error(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert result.stderr.rstrip("\n").splitlines()[-1].startswith("error: "), result.stderr[-3000:]


def _names_the_file_not_a_missing_right(world: World, result: subprocess.CompletedProcess[str]) -> None:
    uploaded = r"(data/test-00000-of-00001\.parquet|images/preview\.png)"  # whichever upload thread came first
    assert re.search(rf"error: could not upload {uploaded} to {world.repo_id}: ", result.stderr), result.stderr[-3000:]
    assert "may not write" not in result.stderr, result.stderr[-3000:]


BOUNDARY_CASES = [
    Case(
        "file-size-limit-while-writing-a-shard",
        LOCAL,
        exit=1,
        error="error: while building the shards of pupil/train, pupil/validation, pupil/test in ",
        says=("File too large; ", "the file-size limit, ulimit -f, is 200,000 bytes", "(ulimit -f unlimited)"),
        prelude=_FILE_SIZE_LIMIT,
    ),
    Case(
        "immutable-data-folder-with-a-shard-to-rebuild",
        LOCAL,
        exit=1,
        error="error: while building the shards of pupil/train, pupil/validation, pupil/test in ",
        says=("Operation not permitted", "test-00000-of-00001.parquet.partial", "was refused. Fix: ", "lsattr"),
        arrange=_immutable_data_folder,
        check=_last_line_is_the_error,
    ),
    Case(
        "temporary-folder-full-while-writing-the-sample",
        ("--sample", "--local-dir", "{out}", "--no-upload"),
        exit=1,
        error="error: while writing the synthetic sample into the temporary folder ",
        says=("No space left on device", "the temporary folder (", "set TMPDIR to a folder on a larger disk"),
        arrange=_small_temporary_folder,
        prelude="import tempfile; tempfile.tempdir = '{tmp}/small'",
    ),
    Case(
        "rerun-with-its-standard-output-closed-writes-the-card",
        LOCAL,
        arrange=_without_card,
        prelude=_STDOUT_CLOSED,
        check=_card_written,
    ),
    Case(
        "ascii-terminal-and-a-non-ascii-local-dir",
        ("--data-dir", "{raw}", "--local-dir", "{tmp}/dé/out", "--no-upload"),
        env={"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"},
        check=_non_ascii_folder_shown_escaped,
    ),
    Case(
        "hub-messages-that-echo-the-token-are-printed-without-it",
        PUBLISH,
        exit=1,
        error="[hidden: Hugging Face token], sent as Bearer [hidden: Hugging Face token]",
        says=("Could not check the Hugging Face token (HTTP 503: request refused for the token [hidden: ",),
        arrange=_arrange(
            _fail("GET", _WHOAMI, status=503, headers=_ECHO), _fail("GET", _WHOAMI, status=400, headers=_ECHO)
        ),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "lfs-batch-refuses-an-object",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error=f"the Hub's LFS batch API refused 1 of them (object {'0' * 64}: this object is too large)",
        says=("nothing was published",),
        arrange=_arrange(
            _earlier_commit,
            _fail(
                "POST",
                r"/datasets/{repo}\.git/info/lfs/objects/batch",
                status=200,
                body=json.dumps({"transfer": "basic", "objects": [_REFUSED_OBJECT]}).encode(),
                content_type="application/json",
                times=1000,
            ),
        ),
        env={**TOKEN_ENV, **LFS},  # the LFS batch protocol's
    ),
    Case(
        "expired-upload-url-is-not-a-missing-right",
        (*PUBLISH, "--splits", "test"),
        exit=1,
        error="the storage refused it (HTTP 403 for PUT http://127.0.0.1:",
        says=("Request has expired", "says nothing of the token's rights", "the Hub hands out fresh upload URLs"),
        arrange=_arrange(
            _earlier_commit,
            _fail("PUT", "/lfs/datasets/{repo}/", status=403, body=_EXPIRED, content_type="application/xml", times=9),
        ),
        check=_names_the_file_not_a_missing_right,
        env={**TOKEN_ENV, **LFS},  # the LFS batch protocol's
    ),
    Case(
        "gated-advice-names-a-repo-of-ones-own",
        PUBLISH,
        exit=1,
        error="or publish to another repo of your own (--repo-id faults/NAME)",
        arrange=_fail("GET", "/api/datasets/{repo}$", status=403, headers={"X-Error-Code": "GatedRepo"}, times=1000),
        check=_not_built,
        env=TOKEN_ENV,
    ),
]


# -- headers before payloads (issue 22): a raw file or an archive member is refused from what its header declares --

#: a frame of every gray level (the sample's own frames are smooth eyes)
_LEVELS = np.arange(400 * 640, dtype=np.uint32).reshape(400, 640).astype(np.uint8)


def _npy_declaring(descr: str, shape: tuple[int, ...], payload: bytes) -> Callable[[Path], None]:
    """A label file whose .npy header declares ``descr`` and ``shape``, followed by ``payload``."""

    def write(path: Path) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
        path.write_bytes(header.getvalue() + payload)

    return write


def _archive_member(fix: Callable[[bytes, str], bytes]) -> Callable[[KaggleStub, int], None]:
    """The stub's archive with ``fix(archive, name)`` applied to its first image member."""

    def fault(stub: KaggleStub, size: int) -> None:
        archive = stub.datasets[KAGGLE_STUB_SLUG]
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".png"))
        stub.datasets[KAGGLE_STUB_SLUG] = fix(archive, name)

    return fault


def _a_train_frame_renamed_into(split: str) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        image, label = world.files("train", "images")[0], world.files("train", "labels")[0]
        shutil.copy(image, world.split_dir / split / "images" / "renamed.png")
        shutil.copy(label, world.split_dir / split / "labels" / "renamed.npy")

    return arrange


# -- the bytes are those written, the card's view of the repo is the repo's, the commit is what was planned ------
# (openeds.records, openeds.hub.verify, openeds.hub.remote.list_files, openeds.hub.kept.kept_sizes)

TRAIN_SHARD = "data/train-00000-of-00001.parquet"  # the shard the preview of `pupil` is drawn from
TEST_SHARD = "data/test-00000-of-00001.parquet"


def _flip_in(relpath: str) -> Callable[[World], None]:
    """One bit of the local file `relpath` flipped, its modification time given back: only its bytes tell."""

    def arrange(world: World) -> None:
        path = world.out / relpath
        times = path.stat()
        content = bytearray(path.read_bytes())
        content[len(content) // 2] ^= 0x04
        path.write_bytes(bytes(content))
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))

    return arrange


def _rebuilt_as_before(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The damaged shard rebuilt, the others skipped: the shards and their records as the earlier build left them."""
    assert result.stdout.count("already complete") == 2, result.stdout
    got, expected = _digests(world.out), _digests(_prebuilt(world))
    got.pop("README.md"), expected.pop("README.md")  # its command names another folder
    assert got == expected


def _local_card_splits(world: World) -> list[str]:
    [config] = yaml.safe_load((world.out / "README.md").read_text().split("---\n")[1])["configs"]
    return [f["split"] for f in config["data_files"]]


def _damaged_split_removed(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert _local_card_splits(world) == ["validation", "test"]
    assert (
        not (world.out / TRAIN_SHARD).exists() and not (world.out / ".openeds/records" / f"{TRAIN_SHARD}.json").exists()
    )


def _record_removed(relpath: str) -> Callable[[World, subprocess.CompletedProcess[str]], None]:
    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        assert not (world.out / ".openeds/records" / f"{relpath}.json").exists(), "its record still vouches for it"

    return check


def _record_removed_then_rebuilt_and_published(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """The refused run removed the shard's record; the next run rebuilds it and publishes the bytes built."""
    _record_removed(TEST_SHARD)(world, result)
    again = world.push(*PUBLISH, env=TOKEN_ENV)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"Rebuilding {world.out / TEST_SHARD}: it has no record of the bytes written" in again.stderr
    assert _head_files(world)[TEST_SHARD] == (_prebuilt(world) / TEST_SHARD).read_bytes()


def _gitignore(rules: str) -> Callable[[World], None]:
    return lambda world: world.hub.write_files(world.repo_id, {".gitignore": rules.encode()})


def _remote_rows_edited(claim: str) -> Callable[[World], None]:
    """The published card's `dataset_info` row counts edited to `claim` by hand (its checksum leaves them out)."""

    def arrange(world: World) -> None:
        text = re.sub(r"num_examples: \d+", f"num_examples: {claim}", _head_files(world)["README.md"].decode())
        HfApi(token=TOKEN).create_commit(
            world.repo_id, [CommitOperationAdd("README.md", text.encode())], commit_message="rows", repo_type="dataset"
        )

    return arrange


def _a_large_repo(world: World) -> None:
    """Files of the owner's that sort before the data, and a repo info cut after 4 files, as a large repo's is:
    only the complete, paginated listing still shows the kept splits."""
    world.hub.write_files(world.repo_id, {f"a/notes-{i:02d}.txt": b"mine\n" for i in range(12)})
    limit = world.hub.siblings_limit
    world.hub.siblings_limit = 4
    world.cleanups.append(lambda: setattr(world.hub, "siblings_limit", limit))


RECORD_CASES = [
    Case(
        "bit-flip-then-rerun-rebuilds-the-shard",
        LOCAL,
        says=(f"{TRAIN_SHARD}: its bytes are not those written (sha256 ",),
        arrange=_arrange(_copy_prebuilt, _flip_in(TRAIN_SHARD)),
        check=_rebuilt_as_before,
    ),
    Case(
        "bit-flip-in-a-split-not-rebuilt-removes-it",
        (*LOCAL, "--splits", "test"),
        says=("pupil/train: removed its 1 shard(s) from ", f"its shard {TRAIN_SHARD} cannot be vouched for: its bytes"),
        arrange=_arrange(_copy_prebuilt, _flip_in(TRAIN_SHARD)),
        check=_damaged_split_removed,
    ),
    Case(
        "bit-flip-then-publish-commits-nothing",
        PUBLISH,
        exit=1,
        error=f"are not the bytes written ({TEST_SHARD}: the upload hashed sha256 ",
        arrange=_arrange(_earlier_commit, _copy_prebuilt, _flip_in(TEST_SHARD)),
        check=_record_removed_then_rebuilt_and_published,
        env=TOKEN_ENV,
    ),
    Case(
        "bit-flip-in-a-shard-the-hub-holds-is-read",
        PUBLISH,
        exit=1,
        error=f"are not the bytes written ({TEST_SHARD}: a read hashed sha256 ",
        arrange=_arrange(_published_first, _copy_prebuilt, _flip_in(TEST_SHARD)),
        check=_record_removed(TEST_SHARD),
        env=TOKEN_ENV,
    ),
    Case(
        # the preview is drawn before the upload: a damage its read meets is said there, or else by the upload
        "bit-flip-in-the-shard-of-the-preview-then-publish",
        PUBLISH,
        exit=1,
        error=TRAIN_SHARD,
        arrange=_arrange(_earlier_commit, _copy_prebuilt, _flip_in(TRAIN_SHARD)),
        check=_record_removed(TRAIN_SHARD),
        env=TOKEN_ENV,
    ),
    Case(
        "gitignore-ignores-the-shards",
        PUBLISH,
        exit=1,
        error="ignores 3 file(s) this publication adds ('data/test-00000-of-00001.parquet', ",
        arrange=_arrange(_earlier_commit, _gitignore("*.parquet\n")),
        env=TOKEN_ENV,
    ),
    Case(
        "gitignore-ignores-one-config",
        (*PUBLISH, "--config", "all"),
        exit=1,
        error="ignores 3 file(s) this publication adds ('full/test-00000-of-00001.parquet', ",
        arrange=_arrange(_earlier_commit, _gitignore("/full/\n")),
        env=TOKEN_ENV,
    ),
    Case(
        "card-rows-edited-by-hand-are-not-copied",
        (*PUBLISH, "--splits", "test"),
        arrange=_arrange(_published_first, _remote_rows_edited("999999")),
        check=_card_rows_are({"pupil": ALL_ROWS}),
        env=TOKEN_ENV,
    ),
    Case(
        "card-rows-as-text-are-not-read",
        (*PUBLISH, "--splits", "test"),
        arrange=_arrange(_published_first, _remote_rows_edited("many rows")),
        check=_card_rows_are({"pupil": ALL_ROWS}),
        env=TOKEN_ENV,
    ),
    Case(
        "a-large-repo-is-listed-whole",
        (*PUBLISH, "--splits", "test"),
        arrange=_arrange(_published_first, _a_large_repo),
        check=_lists_every_split,
        env=TOKEN_ENV,
    ),
]

HEADER_CASES = [
    Case(
        "png-of-2-bit-grayscale",
        LOCAL,
        exit=1,
        error="is a PNG of 2-bit grayscale (bit depth 2, colour type 0); expected an 8-bit grayscale PNG",
        arrange=_edit(_first("test", "images"), lambda p: p.write_bytes(reference.png(_LEVELS >> 6, bit_depth=2))),
    ),
    Case(
        "png-declaring-65535-by-65535-is-not-decoded",  # a decoder would fail on the frame's own data first
        LOCAL,
        exit=1,
        error="has shape (65535, 65535) (rows, cols); expected (400, 640).",
        arrange=_edit(
            _first("test", "images"),
            lambda p: p.write_bytes(reference.png(_LEVELS, header=reference.ihdr(65535, 65535))),
        ),
        check=_no_decoder_noise,
    ),
    Case(
        "png-whose-first-chunk-is-not-ihdr",
        LOCAL,
        exit=1,
        error="its first chunk is b'tEXt' of 3 bytes, not the 13-byte IHDR a PNG starts with",
        arrange=_edit(
            _first("test", "images"),
            lambda p: p.write_bytes(
                reference.PNG_SIGNATURE + reference.png_chunk(b"tEXt", b"a\x00b") + reference.png(_LEVELS)[8:]
            ),
        ),
    ),
    Case(
        "png-over-the-size-bound",
        LOCAL,
        exit=1,
        error="bytes; expected at most 33,554,432",
        arrange=_edit(_first("test", "images"), lambda p: os.truncate(p, 32 * 1024**2 + 1)),  # sparse
    ),
    Case(
        "npy-header-declaring-a-terabyte",
        LOCAL,
        exit=1,
        error="has shape (1048576, 1048576); expected (400, 640), the shape of its image",
        arrange=_edit(_first("test", "labels"), _npy_declaring("<f8", (2**20, 2**20), b"")),
    ),
    Case(
        "npy-header-declaring-more-bytes-than-stored",
        LOCAL,
        exit=1,
        error="is 256,128 bytes, but its .npy header declares uint16 of shape (400, 640)",
        arrange=_edit(_first("test", "labels"), _npy_declaring("<u2", (400, 640), bytes(400 * 640))),
    ),
    Case(
        "npy-of-strings",
        LOCAL,
        exit=1,
        error="has dtype <U3; expected integer class ids 0..3",
        arrange=_edit(_first("test", "labels"), _npy_declaring("<U3", (400, 640), bytes(12 * 400 * 640))),
    ),
    Case(
        "kaggle-member-compressed-with-deflate64",
        KAGGLE,
        exit=1,
        error="that is compressed with Deflate64 (method 9), which Python's zipfile cannot decompress",
        says=("Nothing was extracted", "7z x"),
        arrange=_kaggle(_archive_member(lambda archive, name: with_entry(archive, name, method=9))),
        check=_no_shard_built,
    ),
    Case(
        "kaggle-member-encrypted",
        KAGGLE,
        exit=1,
        error="that is encrypted (password-protected); expected members stored or compressed with Deflate",
        arrange=_kaggle(_archive_member(lambda archive, name: with_entry(archive, name, flags=0x1))),
        check=_no_shard_built,
    ),
    Case(
        "a-train-frame-under-another-name-in-test-warns",
        LOCAL,
        says=("warning: test frame renamed.png has the same image and label bytes as train frame ",),
        arrange=_a_train_frame_renamed_into("test"),
    ),
]

# -- publishing through Xet (issue 23) -------------------------------------------------------------
#
# Every publication goes through hf_xet unless HF_HUB_DISABLE_XET is set: its token from the Hub's
# `xet-write-token` route, its xorbs and shard to the Xet storage service (tests/xet_server.py). Each
# fault there ends as the LFS path's do: a transient one is retried and the data published; a lasting
# one ends within --retry-timeout plus one --timeout with one line, and the Hub unchanged. The LFS path
# keeps its own cases above (`LFS`), and the body that stalls mid-upload runs on both.


def _xet_fail(method: str, path: str, **fault: object) -> Callable[[World], None]:
    """From now on the Xet service fails requests to `path` (see FaultInjector.fail)."""
    return lambda world: world.hub.xet.fail(method, path, **fault)


def _xet_token_fails(**fault: object) -> Callable[[World], None]:
    return _fail("GET", "/api/datasets/{repo}/xet-write-token/", times=1000, **fault)


XORB = r"^/v1/xorbs/"


def _stored_in_xet(world: World, result: subprocess.CompletedProcess[str]) -> None:
    """Published through Xet: every shard of the head is a Xet file whose bytes, read back from the
    service's xorbs, are the staged shard's."""
    repo = _repo(world)
    head = repo.commits[repo.branches["main"]]
    shards = {p: e for p, e in head.files.items() if p.endswith(".parquet")}
    assert shards and all(e.xet_hash for e in shards.values()), "a shard was not stored through Xet"
    assert not world.hub.lfs_uploads(world.repo_id), "a file went through LFS"
    for path, entry in shards.items():
        assert world.hub.xet.read(entry.xet_hash) == (world.out / path).read_bytes(), f"{path} differs"


XET_CASES = [
    Case("xet-publish-stores-the-staged-shards", PUBLISH, check=_stored_in_xet, env={"HF_TOKEN": TOKEN}),
    Case(
        "xet-token-route-401",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="token was rejected",
        says=("the Hub's Xet token route", "401 Unauthorized", "nothing was published"),
        arrange=_arrange(_earlier_commit, _xet_token_fails(status=401)),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "xet-token-revoked-mid-upload",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="token was rejected",
        says=("401 Unauthorized", "nothing was published"),
        arrange=_arrange(
            _earlier_commit, _xet_fail("POST", XORB, status=401, times=1000), _xet_token_fails(status=401, skip=1)
        ),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "xet-token-route-403",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="the Hub's Xet token route refused it (403 Forbidden",
        says=("use a token with write access to faults",),
        arrange=_arrange(_earlier_commit, _xet_token_fails(status=403)),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "xet-token-route-answers-a-web-page",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="not what the Hugging Face Hub API sends",
        says=("error decoding response body", "check HF_ENDPOINT and the proxy settings"),
        arrange=_arrange(_earlier_commit, _xet_token_fails(status=200, body=b"<html><body>Sign in</body></html>")),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    *(
        Case(
            f"xet-xorb-upload-{name}",
            (*PUBLISH, "--splits", "test", *SHORT),
            exit=1,
            error="through Xet failed after hf_xet's retries (a xorb upload to the Xet storage service",
            says=("nothing was published", "re-run the same command: what hf_xet uploaded is not sent again"),
            arrange=_arrange(_earlier_commit, _xet_fail("POST", XORB, times=1000, **fault)),
            env={"HF_TOKEN": TOKEN},
            timeout=_ends_within(2),
        )
        for name, fault in [
            ("connection-cut", {"drop": True}),
            ("500-lasting", {"status": 503}),
            ("429-lasting", {"status": 429, "headers": {"Retry-After": "1"}}),
        ]
    ),
    *(
        Case(  # hf_xet waits for a xorb's answer --timeout plus what 64 MiB takes at 256 KiB/s: the watchdog ends it
            f"xet-xorb-upload-{name}",
            (*PUBLISH, "--splits", "test", *SHORT),
            exit=1,
            error="through Xet moved no data for 3 s (hf_xet waited for an answer that did not come: to a xorb upload",
            says=("nothing was published", "re-run the same command: what hf_xet uploaded is not sent again"),
            arrange=_arrange(_earlier_commit, _xet_fail("POST", XORB, times=1000, **fault)),
            env={"HF_TOKEN": TOKEN},
            timeout=_ends_within(1 + 1 + 5),  # the idle limit, the watchdog's poll and grace
        )
        for name, fault in [("hangs", {"hang": True}), ("body-stalls", {"stall_body": True})]
    ),
    *(
        Case(
            f"xet-xorb-{name}-then-success",
            (*PUBLISH, "--timeout", "1", "--retry-timeout", "6"),  # room for one retry (a 2 s wait at most)
            check=_stored_in_xet,
            arrange=_xet_fail("POST", XORB, times=1, **fault),
            env={"HF_TOKEN": TOKEN},
            timeout=_ends_within(6),
        )
        for name, fault in [
            ("500", {"status": 500}),
            ("429-with-retry-after", {"status": 429, "headers": {"Retry-After": "1"}}),
            ("connection-cut", {"drop": True}),
        ]
    ),
    Case(
        "xet-shard-upload-hangs",  # hf_xet has no read timeout there: the watchdog ends it
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="through Xet moved no data for 3 s",
        says=("nothing was published", "or set HF_HUB_DISABLE_XET=1 to publish through LFS"),
        arrange=_arrange(_earlier_commit, _xet_fail("POST", r"^/v1/shards$", hang=True, times=1000)),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1 + 1 + 5 + 5),  # the idle limit, the watchdog's poll and grace, hf_xet's own retry
    ),
    Case(
        "xet-shard-refused-400",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="the shard upload to the Xet storage service refused it (HTTP 400",
        says=("re-running will not help",),
        arrange=_arrange(_earlier_commit, _xet_fail("POST", r"^/v1/shards$", status=400, times=1000)),
        env={"HF_TOKEN": TOKEN},
        timeout=_ends_within(1),
    ),
    Case(
        "lfs-put-body-stalls",
        (*PUBLISH, "--splits", "test", *SHORT),
        exit=1,
        error="uploading to faults/",
        says=("failed after the client's retries", "nothing was published"),
        arrange=_arrange(_earlier_commit, _fail("PUT", "/lfs/datasets/{repo}/", stall_body=True, times=1000)),
        env={"HF_TOKEN": TOKEN, **LFS},
        timeout=_ends_within(_CLIENT_RETRIES),
    ),
]

CASES = [
    *SUCCESSES,
    *USAGE,
    *RAW,
    *LOCAL_DIR,
    *HUB,
    *NETWORK,
    *RAW_AND_STAGING,
    *HUB_SAFETY,
    *HUB_FOLLOW_UPS,
    *BOUNDARY_CASES,
    *XET_CASES,
    *RECORD_CASES,
]
CASES += HEADER_CASES
# The synthetic sample never goes to the real dataset's repo, whatever flag names it (issue 24): push.py knows it
# by the marker in its split folders (refused before the build) or by its shards' footers (before the publication).
CONNER_TOKEN = "hf_faults_conner_write_token"
DEFAULT_REPO_ID = "Conner/openeds-precomputed"


def _the_default_repo_kept(
    then: Callable[[World], None] | None = None,
) -> tuple[Callable[[World], None], Callable[[World, subprocess.CompletedProcess[str]], None]]:
    """`(arrange, check)`: a token that may write to Conner/ (then `then`), and the real dataset's repo as it was."""
    seen: dict[Path, object] = {}

    def state(world: World) -> object:
        repo = world.hub._repos.get(DEFAULT_REPO_ID)
        return None if repo is None else (repo.branches.get("main", ""), dict(repo.tags))

    def arrange(world: World) -> None:
        world.hub.add_token(CONNER_TOKEN, "conner", write={"Conner"})
        seen[world.tmp] = state(world)
        if then:
            then(world)

    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        assert state(world) == seen.pop(world.tmp), f"{DEFAULT_REPO_ID} changed"

    return arrange, check


def _prebuilt_from_the_sample_then_unmarked(world: World) -> None:
    _copy_prebuilt(world)  # built from the sample as written: its footers say so
    for marker in world.raw.rglob(MARKER):
        marker.unlink()


def _no_shards(world: World) -> None:
    assert not list(world.out.rglob("*.parquet")), "the sample was built before the refusal"


_MARKED = _the_default_repo_kept()
_UNMARKED = _the_default_repo_kept(_prebuilt_from_the_sample_then_unmarked)
NEWCOMER_CASES = [
    Case(
        "synthetic-sample-by-data-dir-to-the-default-repo",
        ("--data-dir", "{raw}", "--local-dir", "{out}"),
        exit=1,
        error=f"refusing to publish the synthetic sample to {DEFAULT_REPO_ID}, the real dataset: train, validation, "
        f"test hold the frames of openeds.synthetic ({MARKER} in their folders)",
        arrange=_MARKED[0],
        check=lambda world, result: (_MARKED[1](world, result), _no_shards(world)),
        env={"HF_TOKEN": CONNER_TOKEN},
    ),
    Case(
        "synthetic-shards-of-an-unmarked-copy-to-the-default-repo",
        ("--data-dir", "{raw}", "--local-dir", "{out}"),
        exit=1,
        error=f"refusing to publish the synthetic sample to {DEFAULT_REPO_ID}, the real dataset: pupil/test, "
        "pupil/train, pupil/validation hold the frames of openeds.synthetic (as their shards' footers",
        arrange=_UNMARKED[0],
        check=_UNMARKED[1],
        env={"HF_TOKEN": CONNER_TOKEN},
    ),
]

CASES += NEWCOMER_CASES


def test_the_catalogue_is_large_and_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30


# -- v1 data, recognised by its content wherever it sits: converted, or refused in one line ----------------------


def _published_beside_v1_by_an_older_version(world: World) -> None:
    """What the version of this tool before content detection did to the real v1 layout: it took the v1 shards
    for files it did not write, published v2 beside them in one commit, and tagged it `v2` only."""
    folder = _prebuilt(world)
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".lock")]
    api = HfApi(token=TOKEN)
    api.create_commit(
        world.repo_id,
        [CommitOperationAdd(p.relative_to(folder).as_posix(), p) for p in files],
        commit_message="Publish OpenEDS precomputed v2",
        repo_type="dataset",
    )
    api.create_tag(world.repo_id, tag="v2", repo_type="dataset")


#: v1 in shapes other than the script's: a `datasets` cache folder (Arrow streams, the split in the file name)
#: beside a parquet file whose name and folder name no split
V1_SHAPES = {
    "cache/openeds-precomputed/default/0.0.0/3f2a9c/openeds-precomputed-train.arrow": "train",
    "cache/openeds-precomputed/default/0.0.0/3f2a9c/openeds-precomputed-validation.arrow": "validation",
    "old/shard_00000.parquet": None,
}


def _v1_in_other_shapes(world: World) -> None:
    operations = []
    for path, split in V1_SHAPES.items():
        table, buffer = tiny_v1_table(split or "old"), io.BytesIO()
        if path.endswith(".arrow"):
            with pa.ipc.new_stream(buffer, table.schema) as writer:
                writer.write_table(table)
        else:
            pq.write_table(table, buffer)
        operations.append(CommitOperationAdd(path, buffer.getvalue()))
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(world.repo_id, operations, commit_message="v1 elsewhere", repo_type="dataset")


def _v1_converted(*gone: str) -> Callable[[World, subprocess.CompletedProcess[str]], None]:
    """`v1` names the v1 state, `main` holds v2 only (none of the v1 files, the v2 shards of the raw splits)."""

    def check(world: World, result: subprocess.CompletedProcess[str]) -> None:
        repo = _repo(world)
        v1 = repo.commits[repo.tags["v1"]].files
        main = repo.commits[repo.branches["main"]].files
        v1_files = [path for path in v1 if path.endswith((".parquet", ".arrow"))]
        assert sorted(repo.tags) == ["v1", "v2"] and repo.tags["v2"] == repo.branches["main"], repo.tags
        assert v1_files and not set(v1_files) & set(main), sorted(main)
        splits = sorted(p.name for p in world.split_dir.iterdir())
        assert sorted(p for p in main if p.endswith(".parquet")) == [f"data/{s}-00000-of-00001.parquet" for s in splits]
        for split in gone:  # a v1 split the raw data cannot rebuild: at v1 only
            assert [p for p in v1_files if f"/{split}/" in p] and f"data/{split}-00000-of-00001.parquet" not in main
        assert f"(tags: v1, v2; the {len(v1_files)} v1 files left main and stay at revision 'v1')" in result.stdout

    return check


def _v1_tagged_before_its_files(world: World) -> None:
    """A tag `v1` on a commit before the v1 files were uploaded (a hand-made tag on the wrong commit)."""
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(
        world.repo_id, [CommitOperationAdd("notes.txt", b"v1 to come\n")], commit_message="start", repo_type="dataset"
    )
    api.create_tag(world.repo_id, tag="v1", repo_type="dataset")


def _without_raw_split(split: str) -> Callable[[World], None]:
    return lambda world: shutil.rmtree(world.split_dir / split)


V1_CASES = [
    Case(
        "v1-in-other-shapes-is-converted",
        PUBLISH,
        says=(
            "holds v1 data in 3 files",
            f"v1 train (1 file): {next(iter(V1_SHAPES))}\n",
            "v1 data in no split that load_dataset reads at revision 'v1' (1 file): old/shard_00000.parquet; "
            "removed from main all the same",
        ),
        arrange=_v1_in_other_shapes,
        check=_v1_converted(),
        env=TOKEN_ENV,
    ),
    Case(
        "v1-split-the-raw-data-lacks-leaves-main-and-stays-at-v1",
        PUBLISH,
        says=(
            "v1 split 'validation' is not rebuilt: the raw data of this run has no validation split. It leaves main "
            "with the rest of v1",
        ),
        arrange=_arrange(_v1_published, _without_raw_split("validation")),
        check=_v1_converted("validation"),
        env=TOKEN_ENV,
    ),
    Case(
        "v1-beside-v2-at-an-untagged-head-is-refused-before-the-build",
        PUBLISH,
        exit=1,
        error="holds v1 data (4 files: 'data/train/shard_00000.parquet', ",
        says=(
            "beside v2 files this tool wrote ('data/test-00000-of-00001.parquet', ",
            "and has no tag 'v1': an earlier run published v2 without converting the v1 files",
            "--revision COMMIT --repo-type dataset`, then re-run",
        ),
        arrange=_arrange(_v1_published, _published_beside_v1_by_an_older_version),
        check=_not_built,
        env=TOKEN_ENV,
    ),
    Case(
        "v1-files-its-v1-tag-lacks-are-refused-before-the-build",
        PUBLISH,
        exit=1,
        error="holds v1 data at main that its revision 'v1' (commit ",
        says=(
            "does not hold as it is (4 of 4 files: 'data/train/shard_00000.parquet', ",
            "no named revision would keep these",
        ),
        arrange=_arrange(_v1_tagged_before_its_files, _v1_published),
        check=_not_built,
        env=TOKEN_ENV,
    ),
]

CASES += V1_CASES


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("faults-raw"), COUNTS)


@pytest.fixture
def world(hub: HubServer, small_sample: Path, tmp_path: Path) -> Iterator[World]:
    hub.add_token(TOKEN, "faults", write={"faults"})
    hub.add_token(READ_TOKEN, "reader", write=())
    # Every case's sample has the same bytes: a xorb an earlier case stored would never be uploaded again (the
    # upload grant says it is stored), and a fault on its upload never met.
    hub.xet.forget_storage()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "KAGGLE_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    world = World(
        tmp_path,
        Path(shutil.copytree(small_sample, tmp_path / "raw")),
        tmp_path / "out",
        f"faults/openeds-{uuid.uuid4().hex[:8]}",
        hub,
        env,
    )
    yield world
    for undo in reversed(world.cleanups):
        undo()


_ERROR_LINE = re.compile(r"^(python push\.py: )?error: ")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault(case: Case, world: World):
    if case.arrange:
        case.arrange(world)
    remote_before = world.remote()
    result = world.push(*case.args, env=case.env, timeout=case.timeout, prelude=case.prelude)
    output = result.stdout + result.stderr
    assert result.returncode == case.exit, f"exit {result.returncode}, expected {case.exit}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in output, result.stderr[-3000:]
    for token in (TOKEN, READ_TOKEN, case.env.get("HF_TOKEN")):
        assert not token or token not in output, "the token was printed"
    error_lines = [line for line in result.stderr.splitlines() if _ERROR_LINE.match(line)]
    if case.exit:
        assert len(error_lines) == 1, f"expected one error line, got {error_lines}:\n{result.stderr[-3000:]}"
        assert case.error and case.error in error_lines[0], error_lines[0]
        assert result.stderr.rstrip("\n").splitlines()[-1] == error_lines[0], "the error line is not the last line"
        assert world.remote() == remote_before, "a failed run changed the Hub repo"
    else:
        assert not error_lines, error_lines
    for promised in case.says:
        assert promised in result.stderr, f"{promised!r} not in:\n{result.stderr[-3000:]}"
    leftovers = [
        p
        for p in world.tmp.rglob("*")
        if p.name.endswith((".partial", ".tmp")) and not p.name.endswith(".kaggle-partial")
    ]  # kaggle's resume marker stays on purpose
    assert not leftovers, f"temporary files left behind: {leftovers}"
    if case.check:
        case.check(world, result)
