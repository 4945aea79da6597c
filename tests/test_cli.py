"""The one error boundary of every command (openeds/cli.py): its contract, driven through each entry point.

Each command the README and the docs name (push.py, ``python -m openeds.download``, ``python -m
openeds.synthetic``, examples/train_tiny.py) runs as a user runs it, in a process of its own forked
from the torch zygote (tests/zygote.py), with one function of what it calls replaced by one that
raises an exception nobody classified: a full temporary folder, a file-size limit, a read-only file
system, a refused permission, the network (as hf_xet raises it), memory, a bug whose message holds
a token and control characters, Ctrl-C. Whatever it is, the run ends with one last line that names
the stage it was in, the cause and what to do, exit status 1 (130 on Ctrl-C), no traceback unless
asked for (``--traceback``, ``OPENEDS_TRACEBACK=1``), no secret. The streams' own cases (a reader
gone, an ASCII terminal) and the progress bars of other threads are driven the same way; the
redaction and the secrets it looks for are checked in this process.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openeds import cli, stages
from openeds.synthetic import write_sample
from tests import zygote

pytestmark = pytest.mark.datasets_independent(
    "the boundary is the project's own; the runs fail before any datasets work"
)

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_boundary_secret_token_0123"
KAGGLE_USER, KAGGLE_KEY = "boundary-user", "kaggle-boundary-key-0123"
BASIC = base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode()).decode()
#: every run forks from the torch zygote of the example's tests (one zygote for all the entry points)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

#: `python -c INJECT WHERE RAISED SETUP KIND TARGET ARGS...`: run SETUP, make WHERE (`module:function`, or -) raise
#: RAISED (an expression), then run TARGET as `python TARGET ARGS` (KIND script) or `python -m TARGET ARGS` would
INJECT = """\
import errno, importlib, os, runpy, sys, threading, time
where, raised, setup, kind, target, *args = sys.argv[1:]
exec(setup)
if where != "-":
    module, function = where.split(":")
    def fail(*_args, **_kwargs):
        raise eval(raised)
    setattr(importlib.import_module(module), function, fail)
sys.argv = [target, *args]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.path.insert(0, os.path.dirname(target))
    runpy.run_path(target, run_name="__main__")
"""

#: the entry points: how each is started, and the function of its first stage that work-free injection replaces
LOCAL = ("--data-dir", "{raw}", "--local-dir", "{out}")
ENTRIES = {
    "push": ("script", str(REPO / "push.py"), (*LOCAL, "--no-upload")),
    "publish": ("script", str(REPO / "push.py"), (*LOCAL, "--repo-id", "{repo}")),
    "download": ("module", "openeds.download", ("--cache-dir", "{tmp}/cache")),
    "synthetic": ("module", "openeds.synthetic", ("{out}",)),
    "train": ("script", str(REPO / "examples" / "train_tiny.py"), ("{tmp}/no-such-dataset", "--max-steps", "1")),
}


@dataclass(frozen=True)
class Injected:
    """One failure of one entry point, and what its last line must say."""

    name: str
    entry: str
    where: str
    raised: str
    #: pieces of the last line: the stage, the family of the error, what to do
    says: tuple[str, ...]
    exit: int = 1
    flags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    #: the full traceback is printed before the line (--traceback or OPENEDS_TRACEBACK=1)
    traceback: bool = False


SHARDS = "openeds.materialize:materialize"
CASES = [
    Injected(
        "push-temporary-folder-full",
        "push",
        SHARDS,
        "OSError(errno.ENOSPC, 'No space left on device', os.path.join(__import__('tempfile').gettempdir(), 'x.npy'))",
        (
            "error: while building the shards of pupil/train, pupil/validation, pupil/test in ",
            "OSError: [Errno 28]",
            "the temporary folder (",
            "is full. Fix: free some space, or set TMPDIR",
            "run the same command again",
        ),
    ),  # fmt: skip
    Injected(
        "push-permission-refused-names-the-file",
        "push",
        SHARDS,
        "PermissionError(errno.EACCES, 'Permission denied', '/srv/data/.train.parquet.partial')",
        ("error: while building the shards", "access to /srv/data/.train.parquet.partial was refused", "lsattr"),
    ),
    Injected(
        "push-a-bug-whose-message-holds-the-token-and-control-characters",
        "push",
        SHARDS,
        "RuntimeError('the server said: bad token ' + os.environ['HF_TOKEN'] + '\\n\\x1b[31mred\\ttab')",
        (
            "RuntimeError: the server said: bad token [hidden: Hugging Face token] \\x1b[31mred tab;",
            "a bug, or a case no one has handled yet",
            "--traceback or OPENEDS_TRACEBACK=1 shows the full traceback",
        ),
        env={"HF_TOKEN": TOKEN},
    ),  # fmt: skip
    Injected(
        "push-out-of-memory-with-traceback",
        "push",
        SHARDS,
        "MemoryError()",
        (
            "error: while building the shards",
            "MemoryError; the machine ran out of memory",
            "the full traceback is above",
        ),
        flags=("--traceback",),
        traceback=True,
    ),
    Injected(
        "push-ctrl-c",
        "push",
        SHARDS,
        "KeyboardInterrupt()",
        ("interrupted while building the shards of pupil/train", "run the same command again: the finished shards"),
        exit=130,
    ),
    Injected(
        "download-read-only-cache",
        "download",
        "openeds.lock:hold",
        "OSError(errno.EROFS, 'Read-only file system', '/mnt/cache/soumicksarker--openeds-dataset/.lock')",
        (
            "error: while checking the download cache ",
            "is on a read-only file system",
            "run it again: the part of the archive already downloaded is kept",
        ),
    ),  # fmt: skip
    Injected(
        "download-a-message-holding-the-kaggle-key-and-its-basic-auth-form",
        "download",
        "openeds.lock:hold",
        f"ValueError('Authorization: Basic {BASIC} for ' + os.environ['KAGGLE_KEY'])",
        ("ValueError: Authorization: Basic [hidden: Kaggle key] for [hidden: Kaggle key]",),
        env={"KAGGLE_USERNAME": KAGGLE_USER, "KAGGLE_KEY": KAGGLE_KEY},
    ),
    Injected(
        "synthetic-file-size-limit-with-the-variable",
        "synthetic",
        "cv2:imencode",
        "OSError(errno.EFBIG, 'File too large')",
        (
            "error: while writing the synthetic sample into ",
            "reached the largest size this process may write",
            "ulimit -f unlimited",
            "the full traceback is above",
        ),
        env={"OPENEDS_TRACEBACK": "1"},
        traceback=True,
    ),  # fmt: skip
    Injected(
        "synthetic-ctrl-c",
        "synthetic",
        "cv2:imencode",
        "KeyboardInterrupt()",
        ("interrupted while writing the synthetic sample into ", "run it again"),
        exit=130,
    ),
    Injected(
        "train-a-timeout",
        "train",
        "datasets:get_dataset_config_names",
        "TimeoutError('The read operation timed out')",
        (
            "error: while reading the configs and splits of ",
            "a network connection failed or timed out",
            "with --checkpoint PATH --resume, a re-run goes on",
        ),
    ),  # fmt: skip
    Injected(
        "publish-network-as-hf-xet-raises-it",
        "publish",
        "openeds.hub.publishing:_upload",
        "ConnectionError('Network error: Request error: HTTP status client error (401 Unauthorized), "
        "domain: http://127.0.0.1:9/api/datasets/x/xet-write-token/main?sig=0123')",
        (
            "error: while publishing to boundary/",
            "a network connection failed or timed out",
            "xet-write-token/main?...",
            "a publication sends only what the Hub lacks",
        ),
        env={"HF_TOKEN": TOKEN},
    ),  # fmt: skip
    Injected(
        "train-a-bug-with-traceback",
        "train",
        "datasets:get_dataset_config_names",
        "RecursionError('maximum recursion depth exceeded')",
        ("error: while reading the configs and splits of ", "RecursionError", "a bug", "the full traceback is above"),
        flags=("--traceback",),
        traceback=True,
    ),
    Injected(
        "train-ctrl-c",
        "train",
        "datasets:get_dataset_config_names",
        "KeyboardInterrupt()",
        ("interrupted while reading the configs and splits of ",),
        exit=130,
    ),
]


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("boundary-raw"), {"train": 2, "validation": 1, "test": 1})


def run(
    entry: str,
    tmp: Path,
    raw: Path,
    *,
    where: str = "-",
    raised: str = "None",
    setup: str = "",
    flags: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
):
    """The entry point as a user runs it, with `where` raising `raised` and `setup` run first."""
    kind, target, args = ENTRIES[entry]
    args = [a.format(raw=raw, out=tmp / "out", tmp=tmp, repo=f"boundary/{tmp.name[-30:]}") for a in args]
    home = {"HOME": str(tmp / "home"), "XDG_CACHE_HOME": str(tmp / "home" / ".cache")}
    clean = {k: v for k, v in ENV.items() if not k.startswith(("HF_TOKEN", "KAGGLE_"))}
    argv = [sys.executable, "-c", INJECT, where, raised, setup, kind, target, *args, *flags]
    return zygote.run(argv, env={**clean, **home, **(env or {})}, preload=zygote.TORCH, cwd=tmp, timeout=300)


def secrets_absent(output: str) -> None:
    for secret in (TOKEN, KAGGLE_KEY, BASIC, BASIC.rstrip("=")):
        assert secret not in output, f"a secret was printed: {output[-2000:]}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_whatever_reaches_the_boundary_ends_in_one_last_line(case: Injected, tmp_path: Path, small_raw: Path, hub):
    hub.add_token(TOKEN, "boundary")
    done = run(case.entry, tmp_path, small_raw, where=case.where, raised=case.raised, flags=case.flags, env=case.env)
    output = done.stdout + done.stderr
    assert done.returncode == case.exit, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    secrets_absent(output)
    lines = done.stderr.rstrip("\n").splitlines()
    last = lines[-1]
    assert last.isprintable(), last
    first_word = "interrupted while " if case.exit == cli.INTERRUPTED else "error: "
    assert last.startswith(first_word), done.stderr[-3000:]
    assert sum(line.startswith(("error: ", "interrupted while ")) for line in lines) == 1, done.stderr[-3000:]
    for piece in case.says:
        assert piece in last, f"{piece!r} not in {last!r}"
    assert ("Traceback (most recent call last)" in output) == case.traceback, done.stderr[-3000:]


def test_progress_bars_of_every_thread_are_closed_before_the_line_and_nothing_follows_it(tmp_path, small_raw):
    # a bar in the run's thread and one a thread keeps updating (as huggingface_hub's upload threads do),
    # then the failure; the thread writes on after the line, and a bar it opens after it too
    setup = """
import tqdm, openeds.materialize
def bars(*_args, **_kwargs):
    main = tqdm.tqdm(total=100, desc="main bar")
    main.update(3)
    def worker():
        bar = tqdm.tqdm(total=10**6, desc="thread bar", mininterval=0)
        for _ in range(200):
            bar.update(1)
            time.sleep(0.005)
        tqdm.tqdm(total=5, desc="late bar").update(1)
        sys.stderr.write("a late line\\n")
    threading.Thread(target=worker).start()
    time.sleep(0.1)
    raise OSError(errno.EIO, "Input/output error", "/dev/sdz")
openeds.materialize.materialize = bars
"""
    done = run("push", tmp_path, small_raw, setup=setup)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: while building the shards") and "reported an input/output error" in last, last
    assert "thread bar" in done.stderr and "late bar" not in done.stderr and "a late line" not in done.stderr


def test_a_reader_that_went_away_is_no_error_and_the_work_is_done(tmp_path, small_raw):
    # `push.py ... | head -1`: the standard output is a pipe whose reader is gone
    closed = "r, w = os.pipe(); os.dup2(w, 1); os.close(w); os.close(r)"
    done = run("push", tmp_path, small_raw, setup=closed)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "error" not in done.stderr.lower(), done.stderr[-3000:]
    assert (tmp_path / "out" / "README.md").is_file(), "the card was not written"
    done = run("synthetic", tmp_path, small_raw, setup=closed)
    assert done.returncode == 0 and not done.stderr, done.stderr[-3000:]
    assert (tmp_path / "out" / "openEDS" / "openEDS" / "test" / "images").is_dir()


def test_a_terminal_that_cannot_encode_a_name_still_gets_every_line(tmp_path, small_raw):
    # PYTHONIOENCODING=ascii's strict standard output; the forked run's standard streams re-made as Python makes them
    ascii_streams = "\n".join(f"sys.std{name}.reconfigure(encoding='ascii'{more})" for name, more in
                              [("out", ", errors='strict'"), ("err", "")])  # fmt: skip
    done = run("push", tmp_path, small_raw, setup=ascii_streams, flags=("--local-dir", str(tmp_path / "dé-ü")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "local folder: " in done.stdout and "d\\xe9-\\xfc" in done.stdout, done.stdout


def test_secrets_are_found_where_the_clients_keep_them(tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text("hf_from_the_login_file_0001\n")
    (home / ".cache" / "huggingface" / "stored_tokens").write_text(
        "[work]\nhf_token = hf_stored_token_0002\nrefresh_token = hf_refresh_0003\n"
    )
    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "alice", "key": "kaggle_json_key_0004"}))
    (home / ".kaggle" / "access_token").write_text("KGAT_access_token_0005")
    token_file = tmp_path / "kaggle-token"
    token_file.write_text("KGAT_from_a_file_0006")
    env = {"HOME": str(home), "HF_TOKEN": "hf_env_token_0007", "KAGGLE_API_TOKEN": str(token_file),
           "KAGGLE_USERNAME": "bob", "KAGGLE_KEY": "env_kaggle_key_0008"}  # fmt: skip
    found = cli.secrets_in_play(env)
    expected = {
        "hf_from_the_login_file_0001", "hf_stored_token_0002", "hf_refresh_0003", "kaggle_json_key_0004",
        "KGAT_access_token_0005", "KGAT_from_a_file_0006", "hf_env_token_0007", "env_kaggle_key_0008",
        base64.b64encode(b"alice:kaggle_json_key_0004").decode(), base64.b64encode(b"bob:env_kaggle_key_0008").decode(),
    }  # fmt: skip
    assert expected <= set(found), expected - set(found)
    assert not cli.secrets_in_play({"HOME": str(tmp_path / "empty"), "HF_TOKEN": "short"}), "a 5-letter 'secret'"


def test_one_redaction_covers_prints_logging_warnings_and_the_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    handler = logging.StreamHandler(sys.stderr)  # made before the run, as a library's handler is at its import
    logger = logging.getLogger("tests.boundary")
    logger.addHandler(handler)
    command = cli.Command("python boundary-test", again="run it again")

    def work() -> None:
        print(f"stdout {TOKEN}")
        logger.warning("a server answered: invalid token %s", TOKEN)
        stages.now("talking to a server")
        raise RuntimeError(f"echo {TOKEN[:10]}" + TOKEN[10:])

    try:
        assert cli.run(command, work) == 1
    finally:
        logger.removeHandler(handler)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert "stdout [hidden: Hugging Face token]" in captured.out
    assert "invalid token [hidden: Hugging Face token]" in captured.err
    last = captured.err.splitlines()[-1]
    assert last.startswith("error: while talking to a server: RuntimeError: echo [hidden: Hugging Face token];"), last
    assert not isinstance(sys.stdout, cli._Sink) and handler.stream is sys.stderr, "the caller's streams given back"
    assert cli.run(command, lambda: print("a next run in the same process")) == 0
    assert capsys.readouterr().out == "a next run in the same process\n"


def test_the_stage_travels_with_the_exception_and_each_thread_has_its_own():
    stages.reset("starting")
    stages.now("listing")
    with pytest.raises(OSError) as caught:
        with stages.stage("uploading to a/b"):
            stages.now("uploading to a/b: file 2 of 3")
            raise OSError(errno.EIO, "I/O error")
    assert stages.of(caught.value) == "uploading to a/b: file 2 of 3" and stages.current() == "listing"

    @stages.during("tagging {repo}@{revision:.4} as {tag!r}")
    def tag(repo: str, revision: str, tag: str = "v2") -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError) as caught:
        tag("a/b", "0123456789")
    assert stages.of(caught.value) == "tagging a/b@0123 as 'v2'"
    seen = []
    thread = threading.Thread(target=lambda: (stages.now("a worker's step"), seen.append(stages.current())))
    thread.start()
    thread.join()
    assert seen == ["a worker's step"] and stages.current() == "listing"


def test_a_broken_pipe_in_this_process_points_the_stream_at_devnull():
    read, write = os.pipe()
    os.close(read)
    stream = io.TextIOWrapper(io.FileIO(write, "w"), encoding="ascii")
    sink = cli._Sink(stream)
    sink.write("x" * 100_000 + "é\n")  # more than the buffer: the write itself meets the closed pipe
    sink.flush()
    assert sink.gone
    stream.write("more\n")
    stream.flush()  # the descriptor now writes to /dev/null: the flush at exit succeeds
    assert os.readlink(f"/proc/self/fd/{write}") == os.devnull
    stream.close()
