"""A real preemption: examples/train_tiny.py killed with SIGKILL between two checkpoints, then resumed.

Each run logs every step's batch (``--log-batches``: filenames and a SHA-256 of every
tensor). The run is frozen (SIGSTOP) as soon as it has logged a step past a checkpoint
that is not itself a checkpoint step, so the kill always lands between two checkpoints and
the test knows which checkpoint is the last, then killed (SIGKILL) and resumed
(``--resume``) in a fresh process. The batches after the checkpoint must be the
uninterrupted run's, and so must the weights at the end (CPU, one thread: deterministic).
DDP on 2 gloo processes (``torch.distributed.run``) resumes on 1 (elastic): the rows
trained in the interrupted epoch, before the checkpoint on both ranks and after the
resume, are that epoch's rows, each once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from huggingface_hub import HfApi

torch = pytest.importorskip("torch")

from openeds import schema  # noqa: E402
from preprocessing.augment import order_rng  # noqa: E402
from push import push  # noqa: E402
from tests import zygote  # noqa: E402
from tests.test_streaming import RESUMABLE  # noqa: E402  (datasets 3.6 refuses a stream's mid-epoch state)
from tests.test_training import EXAMPLE, EXAMPLE_ENV, load_example  # noqa: E402

pytestmark = pytest.mark.datasets_line  # the script loads map-style and streamed splits through datasets

TOKEN = "hf_preemption_test_write_token"
#: one thread everywhere (torch and the gather): the same float sums in every run
ENV = EXAMPLE_ENV
EVERY = 3  #: --checkpoint-every
#: The run to kill runs niced, so that the test's polling, woken every 5 ms, sees each of its steps
#: even on busy cores (nice changes who runs first, not the work done).
NICE = 19


def steps(log: Path) -> list[dict]:
    """The complete lines of a batch log."""
    if not log.exists():
        return []
    text = log.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def launch(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``python examples/train_tiny.py ...`` to its end, forked from the torch zygote."""
    return zygote.run(args, env=ENV, preload=zygote.TORCH, timeout=timeout)


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    done = launch(args, timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def start(args: list[str], stderr: Path) -> zygote.Child | subprocess.Popen:
    """The run to kill, niced, forked from the torch zygote, its output to a file (a pipe nobody reads could
    fill and stall it)."""
    return zygote.start(args, env=ENV, preload=zygote.TORCH, stderr=stderr, nice=NICE)


def kill_between_checkpoints(
    process: zygote.Child | subprocess.Popen, workers: list[int], log: Path, after: int, err: Path
) -> int:
    """SIGKILL ``process`` (and its ``workers``) once ``log`` shows a step past ``after`` that is not a
    checkpoint step; the last step it logged.

    The workers are frozen first (SIGSTOP) and the log read again: a step logged in between that is
    a checkpoint step lets them run on to the next step. Frozen after logging a step that is not a
    checkpoint step, no checkpoint is being written, and the last one is that of the step
    ``EVERY * (last // EVERY)``.
    """
    deadline, size = time.monotonic() + 240, -1
    while time.monotonic() < deadline:
        time.sleep(0.005)
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before the kill: {err.read_text()[-3000:]}")
        if not log.exists() or log.stat().st_size == size:
            continue
        size = log.stat().st_size
        logged = steps(log)
        if logged and logged[-1]["step"] > after and logged[-1]["step"] % EVERY:
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            last = steps(log)[-1]["step"]
            if last % EVERY:
                for pid in [*workers, process.pid]:
                    os.kill(pid, signal.SIGKILL)
                process.wait(timeout=60)
                return last
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
    process.kill()
    pytest.fail(f"no step past {after} in {log} within 240 s")


def compare_runs(source: str, extra: list[str], tmp_path: Path) -> None:
    """Uninterrupted, killed between checkpoints, resumed: the same batches after the checkpoint, the same weights.

    8 rows in batches of 2, 2 epochs: 8 steps, checkpoints after steps 3 and 6, killed after step 4
    (or 5), resumed from step 3 (mid-epoch), across the epoch boundary.
    """
    args = [sys.executable, EXAMPLE, source, *extra, "--batch-size", "2", "--epochs", "2", "--num-threads", "1"]
    args += ["--checkpoint-every", str(EVERY), "--cache-dir", str(tmp_path / "cache")]
    whole, cut, rest = (tmp_path / f"{name}.jsonl" for name in ("whole", "cut", "rest"))
    run([*args, "--checkpoint", str(tmp_path / "whole.pt"), "--log-batches", str(whole)])
    uninterrupted = steps(whole)
    assert len(uninterrupted) == 8, "8 rows, batches of 2, 2 epochs"
    killed = start([*args, "--checkpoint", str(tmp_path / "cut.pt"), "--resume", "--log-batches", str(cut)],
                   tmp_path / "cut.err")  # fmt: skip
    last = kill_between_checkpoints(killed, [killed.pid], cut, EVERY, tmp_path / "cut.err")
    checkpoint = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert checkpoint["step"] == EVERY * (last // EVERY) < last, "killed between two checkpoints"
    assert checkpoint["loader"]["consumed"] > 0, "the checkpoint is mid-epoch"
    assert steps(cut) == uninterrupted[:last], "before the kill: the uninterrupted batches"
    if "--streaming" in extra and not RESUMABLE:  # refused in one line, nothing trained
        resume = [*args, "--checkpoint", str(tmp_path / "cut.pt"), "--resume", "--log-batches", str(rest)]
        refused = launch(resume)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: "), refused.stderr[-3000:]
        assert f"datasets {datasets.__version__} reads a streamed parquet file from its start" in refused.stderr
        assert not steps(rest)
        return
    done = run([*args, "--checkpoint", str(tmp_path / "cut.pt"), "--resume", "--log-batches", str(rest)])
    assert f"resumed from {tmp_path / 'cut.pt'} at step {checkpoint['step']}: epoch " in done.stdout
    resumed = steps(rest)
    assert resumed == uninterrupted[checkpoint["step"] :], "after the checkpoint: the uninterrupted batches"
    assert len({line["epoch"] for line in resumed}) > 1, "the resumed run crosses an epoch boundary"
    weights = [torch.load(tmp_path / f"{name}.pt", weights_only=True)["model"] for name in ("whole", "cut")]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"{name} differs after the resume"


def test_a_map_style_run_killed_between_checkpoints_resumes_exactly(v2, tmp_path):
    folder = tmp_path / "data"
    v2["pupil"]["train"].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    compare_runs(str(folder), [], tmp_path)


def test_a_streamed_run_from_the_hub_killed_between_checkpoints_resumes_exactly(hub, sample_dir, tmp_path):
    hub.add_token(TOKEN, "preempted", write={"preempted"})
    repo_id = "preempted/openeds"
    push(data_dir=sample_dir, local_dir=tmp_path / "staging", repo_id=repo_id, config="pupil", splits=["train"],
         max_shard_size=3 * schema.raw_row_bytes("pupil"), api=HfApi(token=TOKEN))  # fmt: skip
    compare_runs(repo_id, ["--streaming"], tmp_path)  # shuffled: the shard order and the buffer


def test_ddp_on_two_processes_killed_and_resumed_on_one_trains_each_row_of_the_epoch_once(v2, tmp_path):
    # 8 rows, 4 a rank, in batches of 2: 2 steps an epoch on 2 ranks (checkpoint after step 3: epoch 1,
    # 4 rows of its order consumed), then 4 steps an epoch on 1
    data = v2["pupil"]["train"]
    names = data["filename"]
    data.to_parquet(str(tmp_path / "data" / "data" / "train-00000-of-00001.parquet"))
    args = [EXAMPLE, str(tmp_path / "data"), "--batch-size", "2", "--epochs", "3", "--num-threads", "1"]
    args += ["--checkpoint-every", str(EVERY), "--cache-dir", str(tmp_path / "cache")]
    args += ["--checkpoint", str(tmp_path / "ddp.pt"), "--resume"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    with (tmp_path / "ddp.err").open("w") as err:  # a fresh process, as the workers it starts are
        launcher = subprocess.Popen(["nice", "-n", str(NICE), *ddp, "--log-batches", str(tmp_path / "ddp.jsonl")],
                                    env=ENV, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    workers = []
    while len(workers) < 2 and launcher.poll() is None:  # torch.distributed.run starts them in sessions of their own
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        time.sleep(0.05)
    assert all(b"train_tiny.py" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in workers), workers
    last = kill_between_checkpoints(launcher, workers, tmp_path / "ddp-rank0.jsonl", EVERY, tmp_path / "ddp.err")
    checkpoint = torch.load(tmp_path / "ddp.pt", weights_only=True)
    state = checkpoint["loader"]
    assert checkpoint["step"] == EVERY * (last // EVERY) and state["world_size"] == 2
    epoch, consumed = state["epoch"], state["consumed"]
    assert 0 < consumed < 8, "the checkpoint is mid-epoch"
    before = [
        name
        for rank in (0, 1)
        for line in steps(tmp_path / f"ddp-rank{rank}.jsonl")
        if line["step"] <= checkpoint["step"] and line["epoch"] == epoch
        for name in line["filenames"]
    ]
    done = run([sys.executable, *args, "--log-batches", str(tmp_path / "one.jsonl")])  # one process: elastic
    assert "world_size 2)" in done.stdout
    after = [name for line in steps(tmp_path / "one.jsonl") if line["epoch"] == epoch for name in line["filenames"]]
    order = [names[int(i)] for i in order_rng(0, epoch).permutation(8)]  # the epoch's order (train_tiny's seed 0)
    assert sorted(before) == sorted(order[:consumed]), "before the checkpoint: the consumed prefix, on both ranks"
    assert after == order[consumed:], "after the resume: the rest of the epoch's order"
    assert sorted(before + after) == sorted(names), "every row of the epoch trained once"
    assert {line["epoch"] for line in steps(tmp_path / "one.jsonl")} == set(range(epoch, 3)), "then the next epochs"


def test_the_example_refuses_a_checkpoint_that_does_not_fit_in_one_line(trained, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt.pt"
    main = load_example().main
    args = [*trained[0], "--max-steps", "1", "--checkpoint", str(checkpoint)]  # batches of 2
    assert main(args) == 0 and checkpoint.exists()
    assert not list(tmp_path.glob(".ckpt.pt.*")), "no temporary file left"
    capsys.readouterr()
    assert main([*args, "--resume", "--batch-size", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume from {checkpoint}: field 'batch_size' is 2 in the state; expected 3")
    assert err.count("\n") == 1
    checkpoint.write_bytes(b"not a checkpoint")
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: cannot resume from {checkpoint}: not a checkpoint torch.load reads")
        and err.count("\n") == 1
    )
    for flags, message in [
        (["--resume"], "--resume needs --checkpoint PATH"),
        (["--dataloader", "--checkpoint", str(checkpoint)], "--checkpoint and --resume need IrisLoader's state_dict()"),
    ]:
        with pytest.raises(SystemExit):
            main([str(tmp_path / "data"), *flags])
        assert message in capsys.readouterr().err


# --- checkpoints that cannot be used or written: one line each; a save killed midway leaves nothing behind -------


@pytest.fixture(scope="module")
def trained(v2, tmp_path_factory) -> tuple[list[str], bytes]:
    """The example's arguments on a small folder, and the checkpoint a one-step run of it saved."""
    folder = tmp_path_factory.mktemp("checkpoints")
    v2["pupil"]["train"].to_parquet(str(folder / "data" / "data" / "train-00000-of-00001.parquet"))
    args = [str(folder / "data"), "--cache-dir", str(folder / "cache"), "--batch-size", "2", "--num-threads", "1"]
    assert load_example().main([*args, "--max-steps", "1", "--checkpoint", str(folder / "good.pt")]) == 0
    return args, (folder / "good.pt").read_bytes()


def _cut(size: int):
    def cut(path: Path, good: bytes) -> None:
        path.write_bytes(good[:size] if size >= 0 else good[: len(good) // 2])

    return cut


def _of_another_model(path: Path, good: bytes) -> None:
    checkpoint = torch.load(io.BytesIO(good), weights_only=True)
    checkpoint["model"] = load_example().tiny_net(4).state_dict()  # the `full` config's head on a `pupil` run
    torch.save(checkpoint, path)


def _under_a_file(path: Path, good: bytes) -> Path:
    path.write_text("my notes")
    return path / "ckpt.pt"


def _tmpfs(folder: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a small disk needs root (mount)")
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode:
        pytest.skip("cannot mount a tmpfs here")


def _on_a_full_disk(path: Path, good: bytes) -> Path:
    folder = path.parent / "small"
    _tmpfs(folder, "64k")
    (folder / "ckpt.pt").write_bytes(good)
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(bytes(free - 4096))  # one page left: the new checkpoint does not fit
    return folder / "ckpt.pt"


def _in_an_immutable_folder(path: Path, good: bytes) -> Path:
    folder = path.parent / "frozen"
    folder.mkdir()
    (folder / "ckpt.pt").write_bytes(good)
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("`chattr +i` does not work on this file system")
    return folder / "ckpt.pt"


#: (name, how the checkpoint is made (returns its path if not the one given), the exit status, a piece of the line)
CHECKPOINT_FAULTS = [
    ("empty", _cut(0), 2, "not a checkpoint torch.load reads (EOFError"),
    ("cut-in-its-zip-header", _cut(200), 2, "not a checkpoint torch.load reads (RuntimeError: PytorchStreamReader"),
    ("cut-in-half", _cut(-1), 2, "one cut short, by a copy or a full disk, is not"),
    ("of-another-model", _of_another_model, 2, "it holds another model or optimiser than this run's (RuntimeError: "),
    ("a-list", lambda path, good: torch.save([1, 2], path), 2, "expected a checkpoint of this script: a dict"),
    ("a-folder", lambda path, good: path.mkdir(), 2, "ckpt.pt is a folder; expected the path of a file"),
    ("under-a-file", _under_a_file, 2, "notes.pt is a file, not a folder; expected a folder to save the checkpoint"),
    ("disk-full-at-the-save", _on_a_full_disk, 1, "No space left on device (writing "),
    ("immutable-folder-at-the-save", _in_an_immutable_folder, 1, "after step 2: Operation not permitted (writing "),
]


@pytest.mark.parametrize(("name", "make", "status", "said"), CHECKPOINT_FAULTS, ids=[c[0] for c in CHECKPOINT_FAULTS])
def test_a_checkpoint_that_cannot_be_used_or_saved_is_one_line(name, make, status, said, trained, tmp_path, capsys):
    args, good = trained
    checkpoint = tmp_path / ("notes.pt" if name == "under-a-file" else "ckpt.pt")
    checkpoint = make(checkpoint, good) or checkpoint
    before = checkpoint.read_bytes() if checkpoint.is_file() else None
    try:
        code = load_example().main([*args, "--max-steps", "2", "--checkpoint", str(checkpoint), "--resume"])
        folder = checkpoint.parent if checkpoint.parent.is_dir() else checkpoint.parent.parent
        left = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "filler"}
    finally:
        subprocess.run(["chattr", "-i", str(checkpoint.parent)], capture_output=True)
        if checkpoint.parent.name == "small":
            subprocess.run(["umount", "-l", str(checkpoint.parent)], check=True)
    err = capsys.readouterr().err
    lines = err.rstrip("\n").splitlines()
    assert code == status, err[-3000:]
    assert "Traceback" not in err and [line for line in lines if line.startswith("error: ")] == lines[-1:], err
    assert said in lines[-1], lines[-1]
    if before is not None:
        assert left == {checkpoint.name: before}, "the checkpoint changed, or a temporary file was left"
    else:
        assert not [name for name in left if name.endswith(".tmp")], left
    if status == 1:  # a save that failed
        assert lines[-1].startswith(f"error: cannot save the checkpoint {checkpoint} after step 2: ")
        assert "the previous checkpoint is unchanged" in lines[-1]


#: the example with its second torch.save killed midway: the process writes part of it, then gets SIGKILL
KILLED_MIDWAY = """\
import os, runpy, signal, sys, torch
saves, save = 0, torch.save
def killed_at_the_second(obj, file, *args, **kwargs):
    global saves
    saves += 1
    if saves == 2:
        file.write(b"the first bytes of a checkpoint")
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, file, *args, **kwargs)
torch.save = killed_at_the_second
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_save_killed_midway_leaves_a_temporary_file_that_the_next_run_removes(trained, tmp_path):
    args, _ = trained
    checkpoint = tmp_path / "ckpt.pt"
    flags = [*args, "--checkpoint", str(checkpoint), "--checkpoint-every", "1", "--max-steps", "3"]
    killed = launch([sys.executable, "-c", KILLED_MIDWAY, EXAMPLE, *flags])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    [leftover] = tmp_path.glob(".ckpt.pt.*.tmp")
    assert leftover.read_bytes() == b"the first bytes of a checkpoint"
    assert torch.load(checkpoint, weights_only=True)["step"] == 1, "the first save is whole"
    run([sys.executable, EXAMPLE, *flags, "--resume"])
    assert not list(tmp_path.glob(".ckpt.pt.*.tmp")), "the killed save's temporary file is still there"
    assert torch.load(checkpoint, weights_only=True)["step"] == 3


def test_only_the_temporary_files_of_saves_that_are_gone_are_removed(tmp_path):
    example = load_example()
    checkpoint = tmp_path / "ckpt.pt"
    dead, mine, live = (tmp_path / f".ckpt.pt.{pid}.0123abcd.tmp" for pid in (999_999_999, os.getpid(), os.getppid()))
    others = [tmp_path / ".ckpt.pt.notes.tmp", tmp_path / ".other.pt.999999999.0123abcd.tmp"]
    for path in (dead, mine, live, *others):
        path.write_bytes(b"part of a save")
    assert sorted(example.remove_leftovers(checkpoint)) == sorted([dead, mine])  # a pid > pid_max is no process
    assert live.exists() and all(path.exists() for path in others), "a live save's file, or another file, was removed"
