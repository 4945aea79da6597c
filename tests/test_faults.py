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
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi

from openeds.synthetic import write_sample
from tests.hub_server import HubServer
from tests.test_hub import push_v1

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

    @property
    def split_dir(self) -> Path:
        return self.raw / "openEDS" / "openEDS"

    def files(self, split: str, kind: str) -> list[Path]:
        return sorted((self.split_dir / split / kind).iterdir())

    def push(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "push.py"), *(self.fill(a) for a in args)],
            capture_output=True, text=True, timeout=600, env={**self.env, **(env or {})}, cwd=self.tmp,
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
            for p in sorted(self.out.rglob("*")) if p.is_file()
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
    #: runs on datasets 3.6 too (tests/conftest.py says when); None: if it succeeds (it builds, writes the card)
    datasets_line: bool | None = None


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


def _arrange(*steps: Callable[[World], None]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        for step in steps:
            step(world)

    return arrange


def _earlier_commit(world: World) -> None:
    """An earlier state of the case's repo, made with the real client: a card and a tag."""
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(world.repo_id, [CommitOperationAdd("README.md", b"# earlier\n")], commit_message="earlier",
                      repo_type="dataset")
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
    """The repo as the v1 script left it: flat list columns, no `preprocessed` column."""
    push_v1(HfApi(token=TOKEN), world.repo_id, with_card=True)


def _v1_untouched_and_not_built(world: World, result: subprocess.CompletedProcess[str]) -> None:
    repo = _repo(world)
    assert [c.title for c in repo.history(repo.commits[repo.branches["main"]])][0] == "v1" and repo.tags == {}
    assert not world.out.exists(), "the data was built before the refusal"


def _published_under_old_names(world: World) -> None:
    """The sample published as earlier versions named it: the card calls `pupil` `default`."""
    folder = _prebuilt(world)
    text = (folder / "README.md").read_text().replace("config_name: pupil", "config_name: default")
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".lock") and p.name != "README.md"]
    api = HfApi(token=TOKEN)
    api.create_repo(world.repo_id, repo_type="dataset")
    api.create_commit(world.repo_id, [CommitOperationAdd("README.md", text.encode()),
                                      *(CommitOperationAdd(p.relative_to(folder).as_posix(), p) for p in files)],
                      commit_message="v2 with the old config names", repo_type="dataset")


def _renamed_in_one_commit(world: World, result: subprocess.CompletedProcess[str]) -> None:
    repo = _repo(world)
    head = repo.commits[repo.branches["main"]]
    assert f"published: {world.hub.url}/datasets/{world.repo_id}/commit/" in result.stdout, result.stdout
    assert [c.title for c in repo.history(head)][:2] == ["Publish OpenEDS precomputed v2", "v2 with the old config names"]
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
    Case("sample-local", ("--sample", "--local-dir", "{out}", "--no-upload")),
    Case("data-dir-local", LOCAL),
    Case("rerun-skips-finished-shards", LOCAL, arrange=_built_first, check=_skips_every_shard),
    Case("skip-unlabeled-warns-with-a-count", (*LOCAL, "--skip-unlabeled"),
         says=("train: skipped 1 images without a label",),
         arrange=_edit(_first("train", "labels"), Path.unlink)),
    Case("publish", PUBLISH, env={"HF_TOKEN": TOKEN}),
    Case("sample-without-repo-id-does-not-publish", ("--sample", "--local-dir", "{out}"),
         says=("not publishing: --sample without --repo-id materialises only",),
         check=_no_hub_request, env={"HF_TOKEN": TOKEN}),
    Case("unchanged-data-is-not-republished", PUBLISH, arrange=_published_first, check=_not_republished,
         env={"HF_TOKEN": TOKEN}),
    Case("card-naming-default-is-renamed-in-one-commit", PUBLISH, arrange=_published_under_old_names,
         check=_renamed_in_one_commit, env={"HF_TOKEN": TOKEN}),
    Case("tag-on-unchanged-data-is-not-created", (*PUBLISH, "--tag", "v2-final"), arrange=_published_first,
         check=_tag_not_created, env={"HF_TOKEN": TOKEN}),
]

# -- flags a user can get wrong (argparse's usage errors, exit 2) --------------------------------

USAGE = [
    Case("sample-and-data-dir", ("--sample", "--data-dir", "{raw}"), exit=2, error="--sample conflicts with --data-dir"),
    Case("repo-id-without-upload", ("--sample", "--no-upload", "--repo-id", "a/b"), exit=2,
         error="--repo-id conflicts with --no-upload"),
    Case("num-proc-0", ("--sample", "--no-upload", "--num-proc", "0"), exit=2, error="--num-proc 0: expected 1 or more"),
    Case("unknown-config", ("--sample", "--no-upload", "--config", "iris"), exit=2, error="invalid choice: 'iris'"),
    Case("unknown-split", ("--sample", "--no-upload", "--splits", "dev"), exit=2, error="invalid choice: 'dev'"),
    Case("sample-to-the-default-repo", ("--sample", "--repo-id", "Conner/openeds-precomputed"), exit=2,
         error="--sample conflicts with --repo-id Conner/openeds-precomputed", env={"HF_TOKEN": TOKEN}),
    Case("negative-retry-timeout", ("--sample", "--no-upload", "--retry-timeout", "-5"), exit=2,
         error="argument --retry-timeout: '-5' is not a number of seconds; expected 0 or more"),
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
    Case("data-dir-missing", ("--data-dir", "{tmp}/nowhere", "--local-dir", "{out}", "--no-upload"), exit=1,
         error="nowhere does not exist or is not a folder"),
    Case("data-dir-without-splits", ("--data-dir", "{tmp}", "--local-dir", "{out}", "--no-upload"), exit=1,
         error="no split folders with images/ found"),
    Case("split-asked-but-absent", (*LOCAL, "--splits", "validation"), exit=1,
         error="--splits validation not found",
         arrange=lambda w: shutil.rmtree(w.split_dir / "validation")),
    Case("image-without-label", LOCAL, exit=1, error="has no label",
         arrange=_edit(_first("test", "labels"), Path.unlink)),
    Case("png-that-is-not-a-png", LOCAL, exit=1, error="is not a decodable PNG",
         arrange=_edit(_first("test", "images"), lambda p: p.write_bytes(b"broken"))),
    Case("rgb-image", LOCAL, exit=1, error="has 3 channel(s) of uint8",
         arrange=_edit(_first("test", "images"), _write_image(np.zeros((400, 640, 3), np.uint8)))),
    Case("16-bit-image", LOCAL, exit=1, error="channel(s) of uint16",
         arrange=_edit(_first("test", "images"), _write_image(np.zeros((400, 640), np.uint16)))),
    Case("portrait-2019-release", LOCAL, exit=1, error="2019 portrait release",
         arrange=_edit(_first("test", "images"), _write_image(np.zeros((640, 400), np.uint8)))),
    Case("label-of-another-shape", LOCAL, exit=1, error="has shape (640, 400); expected (400, 640)",
         arrange=_edit(_first("test", "labels"), _save_label(np.zeros((640, 400), np.uint8)))),
    Case("label-values-out-of-range", LOCAL, exit=1, error="..7; expected class ids 0..3",
         arrange=_edit(_first("test", "labels"), lambda p: np.save(p, np.where(np.load(p) == 3, 7, np.load(p))))),
    Case("label-of-floats", LOCAL, exit=1, error="has dtype float64; expected integer class ids",
         arrange=_edit(_first("test", "labels"), _save_label(np.zeros((400, 640))))),
    Case("shard-size-below-one-row", (*LOCAL, "--max-shard-size", "1MB"), exit=1, error="is smaller than one pupil row"),
    Case("npz-saved-under-a-npy-name", LOCAL, exit=1,
         error="is an .npz archive (zip data, from numpy.savez) under a .npy name",
         arrange=_edit(_first("test", "labels"), lambda p: _savez(p, np.load(p)))),
    Case("text-file-named-npy", LOCAL, exit=1,
         error="is a text file (it starts with 'class ids: 0 1 2 3\\n'), not a .npy array",
         arrange=_edit(_first("test", "labels"), lambda p: p.write_text("class ids: 0 1 2 3\n"))),
    Case("labels-without-an-image-warn-with-a-count", LOCAL,
         says=("train: ignored 1 labels without an image (e.g. labels/",),
         arrange=_edit(_first("train", "images"), Path.unlink)),
    Case("image-that-is-a-folder", LOCAL, exit=1, error=".png is a folder; expected an 8-bit grayscale PNG file",
         arrange=_edit(_first("test", "images"), lambda p: (p.unlink(), p.mkdir()))),
    Case("image-that-is-a-broken-symlink", LOCAL, exit=1, error="is a broken symbolic link (to ",
         arrange=_edit(_first("test", "images"), lambda p: (p.unlink(), p.symlink_to(p.with_name("gone.png"))))),
    Case("same-frame-in-two-splits", LOCAL, exit=1,
         error="is in both train and test with the same content (1 identical frames in the two splits)",
         arrange=_same_stem_in_train_and_test),
    Case("same-name-for-different-frames-warns", LOCAL,
         says=("train and test: 1 image names appear in both, with different images",),
         arrange=_same_name_in_train_and_test),
    Case("jpeg-data-in-a-png", LOCAL, exit=1, error="holds JPEG data, not PNG",
         arrange=_edit(_first("test", "images"),
                       lambda p: p.write_bytes(cv2.imencode(".jpg", cv2.imread(str(p), cv2.IMREAD_UNCHANGED))[1]))),
    Case("truncated-png-prints-nothing-but-the-error", LOCAL, exit=1, error="is not a decodable PNG (",
         arrange=_edit(_first("test", "images"), lambda p: p.write_bytes(p.read_bytes()[:-2000])),
         check=_no_decoder_noise),
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
    """Every file but the lock's, by path: the lock file stays, its owner record goes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".lock")
    }


def _copy_prebuilt(world: World) -> None:
    shutil.copytree(_prebuilt(world), world.out, ignore=shutil.ignore_patterns(".lock*"), dirs_exist_ok=True)


def _earlier_state_intact(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert _digests(world.out) == _digests(_prebuilt(world)), "the earlier build changed"


def _root_or_skip(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount)")


def _mount_tmpfs(world: World, size: str) -> None:
    """A small tmpfs at the local folder, unmounted after the case."""
    _root_or_skip("a small disk")
    world.out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(world.out)],
                             capture_output=True, text=True)
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
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], cwd=REPO, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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
    expected = {**_digests(_prebuilt(world)), "data/train-00000-of-00001.parquet":
                hashlib.sha256(b"not parquet").hexdigest()}
    assert _digests(world.out) == expected


def _corrupt_shard_rebuilt(world: World, result: subprocess.CompletedProcess[str]) -> None:
    assert result.stdout.count("already complete") == 2, result.stdout
    built = _digests(world.out)
    assert built["data/test-00000-of-00001.parquet"] == _digests(_prebuilt(world))["data/test-00000-of-00001.parquet"]


def _killed_run_leftovers(world: World) -> None:
    _copy_prebuilt(world)
    for leftover in ("data/.train-00000-of-00001.parquet.partial", "images/.preview.png.partial",
                     ".README.md.partial", "full/.test-00000-of-00001.parquet.partial"):
        (world.out / leftover).parent.mkdir(exist_ok=True)
        (world.out / leftover).write_bytes(b"half written")
    (world.out / ".lock.owner").write_text('{"pid": 999999999, "host": "gone", "started": 0}')


def _swept_and_skipped(world: World, result: subprocess.CompletedProcess[str]) -> None:
    _skips_every_shard(world, result)
    unchanged = {path: digest for path, digest in _digests(world.out).items() if path != "README.md"}
    assert unchanged == {p: d for p, d in _digests(_prebuilt(world)).items() if p != "README.md"}
    assert sorted(p.name for p in world.out.iterdir() if p.name.startswith(".")) == [".lock"]


def _sizes_differ(world: World, result: subprocess.CompletedProcess[str]) -> None:
    sizes = re.search(r": (\S+ \S+) free, about (\S+ \S+) needed for 5 rows", result.stderr)
    assert sizes and sizes[1] != sizes[2] and sizes[2] == "5.00 MB", result.stderr[-2000:]


LOCAL_DIR = [
    Case("local-dir-is-a-file", LOCAL, exit=1, error="out is a file, not a folder; expected a folder",
         arrange=lambda w: w.out.write_text("my notes"),
         check=lambda w, r: w.out.read_text() == "my notes" or pytest.fail("the file changed")),
    Case("local-dir-read-only", LOCAL, exit=1, error="cannot be written: Read-only file system",
         arrange=_read_only, check=_earlier_state_intact),
    Case("local-dir-without-permission", LOCAL, exit=1, error="cannot be written: ",
         arrange=_without_permission, check=_earlier_state_intact),
    Case("staging-folder-in-use", LOCAL, exit=1,
         error="is using the staging folder", arrange=_held_by_another_process(lambda w: w.out),
         check=_names_the_holder),
    Case("kaggle-cache-in-use", ("--local-dir", "{out}", "--no-upload", "--cache-dir", "{tmp}/kaggle"), exit=1,
         error="is using the Kaggle cache",
         arrange=_held_by_another_process(lambda w: w.tmp / "kaggle" / "soumicksarker--openeds-dataset"),
         check=_names_the_holder),
    Case("disk-too-small-for-the-shards", LOCAL, exit=1, error="not enough free disk space in",
         arrange=lambda w: _mount_tmpfs(w, "2m"), check=_sizes_differ),
    Case("disk-full-while-writing-the-preview", LOCAL, exit=1, error="preview.png is full (No space left",
         arrange=_disk_full_at("preview"), check=_full_disk_kept_the_rest),
    Case("disk-full-while-writing-the-card", LOCAL, exit=1, error="README.md is full (No space left",
         arrange=_disk_full_at("card"), check=_full_disk_kept_the_rest),
    Case("a-file-where-images-should-be", LOCAL, exit=1, error="preview.png: File exists (",
         arrange=_file_where_images_should_be, check=_only_the_preview_is_missing),
    Case("corrupt-shard-of-a-split-not-rebuilt", (*LOCAL, "--splits", "test"), exit=1,
         error="train-00000-of-00001.parquet cannot be read (",
         arrange=_corrupt("data/train-00000-of-00001.parquet"), check=_corrupt_shard_kept_and_nothing_else_changed),
    Case("corrupt-shard-of-a-rebuilt-split-is-rebuilt", LOCAL,
         arrange=_corrupt("data/test-00000-of-00001.parquet"), check=_corrupt_shard_rebuilt),
    Case("killed-run-leftovers-are-swept", LOCAL, arrange=_killed_run_leftovers, check=_swept_and_skipped),
]

# -- the Hub ---------------------------------------------------------------------------------------

HUB = [
    Case("unknown-token", PUBLISH, exit=1, error="token was rejected", env={"HF_TOKEN": "hf_not_a_token"}),
    Case("read-only-token", PUBLISH, exit=1, error="is read-only", env={"HF_TOKEN": READ_TOKEN}),
    Case("namespace-of-someone-else", ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", "someone/else"),
         exit=1, error="may not write to someone/else", env={"HF_TOKEN": TOKEN}),
    Case("repo-id-without-namespace", ("--data-dir", "{raw}", "--local-dir", "{out}", "--repo-id", "openeds"), exit=1,
         error="is not of the form namespace/name", env={"HF_TOKEN": TOKEN}),
    Case("no-token", PUBLISH, exit=1, error="no Hugging Face token found", check=_nothing_built_or_sent),
    Case("offline-mode", PUBLISH, exit=1, error="HF_HUB_OFFLINE is set, so nothing can be published",
         check=_nothing_built_or_sent, env={"HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}),
    Case("card-download-500-with-splits-test", (*PUBLISH, "--splits", "test", *FAST), exit=1,
         error="could not download the card README.md of",
         arrange=_arrange(_published_first, _fail("GET", "/datasets/{repo}/resolve/.*/README.md", times=1000)),
         check=_lists_every_split, env={"HF_TOKEN": TOKEN}),
    *(
        Case(f"commit-refused-{status}", (*PUBLISH, "--splits", "test"), exit=1,
             error=f"the Hub answered HTTP {status}: injected fault",
             says=("nothing was published (the commit is atomic; the files already uploaded are not sent again); "
                   "re-running will not help",),
             arrange=_arrange(_earlier_commit, _fail("POST", "/api/datasets/{repo}/commit/main", status=status)),
             env={"HF_TOKEN": TOKEN})
        for status in (400, 413, 422)
    ),
    Case("commit-500-after-retries", (*PUBLISH, "--splits", "test", *FAST), exit=1,
         error="could not commit to faults/", says=("HTTP 500", "nothing was published (the commit is atomic;"),
         arrange=_arrange(_earlier_commit, _fail("POST", "/api/datasets/{repo}/commit/main", times=1000)),
         env={"HF_TOKEN": TOKEN}),
    Case("lfs-upload-refused-413", (*PUBLISH, "--splits", "test"), exit=1,
         error="could not upload the files to faults/", says=("HTTP 413", "nothing was published"),
         arrange=_arrange(_earlier_commit, _fail("POST", r"/datasets/{repo}\.git/info/lfs/objects/batch", status=413)),
         env={"HF_TOKEN": TOKEN}),
    Case("endpoint-refuses-connections", (*PUBLISH, *FAST), exit=1,
         error=f"the network or the Hub endpoint {CLOSED_ENDPOINT} is unreachable",
         says=("Connection refused", "the network budget is 2 s"), check=_not_built,
         env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": CLOSED_ENDPOINT}),
    Case("endpoint-does-not-resolve", (*PUBLISH, *FAST), exit=1,
         error="the network or the Hub endpoint http://hub.openeds.invalid is unreachable",
         says=("Name or service not known",), check=_not_built,
         env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": "http://hub.openeds.invalid"}),
    Case("splits-test-on-a-v1-repo", (*PUBLISH, "--splits", "test"), exit=1,
         error="holds v1 data (no 'preprocessed' column) in splits ['test', 'train', 'validation']",
         says=("which would leave ['train', 'validation'] as v1 beside v2 splits",),
         arrange=_v1_published, check=_v1_untouched_and_not_built, env={"HF_TOKEN": TOKEN}),
    Case("rate-limited-with-retry-after-0", (*PUBLISH, *FAST), exit=1,
         error="could not check the Hugging Face token: HTTP 429",
         arrange=_fail("GET", "/api/whoami-v2", status=429, times=1000, headers={"Retry-After": "0"}),
         check=_at_most_five_whoami, env={"HF_TOKEN": TOKEN}),
]

CASES = [*SUCCESSES, *USAGE, *RAW, *LOCAL_DIR, *HUB]


def test_the_catalogue_is_large_and_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("faults-raw"), COUNTS)


@pytest.fixture
def world(hub: HubServer, small_sample: Path, tmp_path: Path) -> Iterator[World]:
    hub.add_token(TOKEN, "faults", write={"faults"})
    hub.add_token(READ_TOKEN, "reader", write=())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "KAGGLE_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    world = World(tmp_path, Path(shutil.copytree(small_sample, tmp_path / "raw")), tmp_path / "out",
                  f"faults/openeds-{uuid.uuid4().hex[:8]}", hub, env)
    yield world
    for undo in reversed(world.cleanups):
        undo()


_ERROR_LINE = re.compile(r"^(python push\.py: )?error: ")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault(case: Case, world: World):
    if case.arrange:
        case.arrange(world)
    remote_before = world.remote()
    result = world.push(*case.args, env=case.env)
    output = result.stdout + result.stderr
    assert result.returncode == case.exit, f"exit {result.returncode}, expected {case.exit}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in output, result.stderr[-3000:]
    for token in (TOKEN, READ_TOKEN, case.env.get("HF_TOKEN")):
        assert not token or token not in output, "the token was printed"
    error_lines = [line for line in result.stderr.splitlines() if _ERROR_LINE.match(line)]
    if case.exit:
        assert len(error_lines) == 1, f"expected one error line, got {error_lines}:\n{result.stderr[-3000:]}"
        assert case.error and case.error in error_lines[0], error_lines[0]
        assert world.remote() == remote_before, "a failed run changed the Hub repo"
    else:
        assert not error_lines, error_lines
    for promised in case.says:
        assert promised in result.stderr, f"{promised!r} not in:\n{result.stderr[-3000:]}"
    leftovers = [p for p in world.tmp.rglob("*") if p.name.endswith((".partial", ".tmp"))]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    if case.check:
        case.check(world, result)
