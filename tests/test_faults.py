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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi

from openeds.synthetic import write_sample
from tests.hub_server import HubServer

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
    Case("rate-limited-with-retry-after-0", (*PUBLISH, *FAST), exit=1,
         error="could not check the Hugging Face token: HTTP 429",
         arrange=_fail("GET", "/api/whoami-v2", status=429, times=1000, headers={"Retry-After": "0"}),
         check=_at_most_five_whoami, env={"HF_TOKEN": TOKEN}),
]

CASES = [*SUCCESSES, *USAGE, *RAW, *HUB]


def test_the_catalogue_is_large_and_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("faults-raw"), COUNTS)


@pytest.fixture
def world(hub: HubServer, small_sample: Path, tmp_path: Path) -> World:
    hub.add_token(TOKEN, "faults", write={"faults"})
    hub.add_token(READ_TOKEN, "reader", write=())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "KAGGLE_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return World(tmp_path, Path(shutil.copytree(small_sample, tmp_path / "raw")), tmp_path / "out",
                 f"faults/openeds-{uuid.uuid4().hex[:8]}", hub, env)


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
