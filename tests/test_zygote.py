"""tests/zygote.py: a run forked from a zygote is the run a fresh ``python`` gives.

The preemption tests compare forked train_tiny.py runs with each other (tests/test_preemption.py);
the first test here compares one with a fresh interpreter: the same exit code, the same output,
the same files (the checkpoint: weights, optimiser and loader state; the batch log), byte for
byte. `tests/test_push.py::test_the_zygote_runs_push_as_a_fresh_process_does` does the same for
push.py. The rest test the runner with a zygote that preloads nothing: a script, a module and
code start as ``python`` starts them and fail as it fails; a started run is stopped and killed by
its pid while another runs; a timeout kills what the run started; what cannot be forked runs
fresh; a preload that starts a thread stops the zygote.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from push import push  # noqa: E402
from tests import zygote  # noqa: E402
from tests.test_training import EXAMPLE, EXAMPLE_ENV  # noqa: E402

pytestmark = pytest.mark.datasets_independent("the runner's processes; train_tiny's runs are tested on both lines")


@pytest.fixture(autouse=True)
def forking(monkeypatch):
    """These tests compare forked runs with fresh ones: not with every run fresh (``OPENEDS_TESTS_FRESH=1``)."""
    monkeypatch.delenv(zygote.FRESH, raising=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_forked_train_tiny_run_is_the_fresh_one(sample_dir, tmp_path):
    push(data_dir=sample_dir, local_dir=tmp_path / "data", upload=False, config="pupil", splits=["train"])
    runs = {}
    for way in ("fresh", "forked"):
        folder = tmp_path / way
        folder.mkdir()
        argv = [sys.executable, EXAMPLE, str(tmp_path / "data"), "--max-steps", "2", "--batch-size", "2"]
        argv += ["--num-threads", "1", "--cache-dir", str(tmp_path / f"cache-{way}")]
        argv += ["--checkpoint", str(folder / "ckpt.pt"), "--checkpoint-every", "1", "--log-batches", "log.jsonl"]
        if way == "fresh":
            done = subprocess.run(argv, env=EXAMPLE_ENV, cwd=folder, capture_output=True, text=True, timeout=300)
        else:
            assert zygote.zygote(zygote.TORCH, EXAMPLE_ENV).forks(argv, EXAMPLE_ENV)
            done = zygote.run(argv, env=EXAMPLE_ENV, preload=zygote.TORCH, cwd=folder, timeout=300)
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
        runs[way] = (done.returncode, done.stdout.splitlines(), errors, digests(folder))
    assert runs["forked"] == runs["fresh"]
    assert runs["fresh"][0] == 0 and "step 2: loss" in runs["fresh"][1][-1], runs["fresh"]
    assert set(runs["fresh"][3]) == {"ckpt.pt", "log.jsonl"}, "nothing to compare"


# --- the runner itself, with a zygote that preloads nothing (cheap) ----------------------------

#: what a run sees of itself: its argv, import path, folder, a variable, its niceness, __main__'s globals
SELF = (
    "import json, os, sys\n"
    "print(json.dumps([sys.argv, sys.path[0], os.getcwd(), os.environ.get('ZYGOTE_TEST'), os.nice(0),"
    " __name__, sorted(k for k in globals() if not k.startswith('__'))]))\n"
)


def fresh_and_forked(argv: list[str], env: dict[str, str], cwd: Path) -> tuple:
    runner = zygote.Zygote((), env)
    try:
        assert runner.forks(argv, env)
        forked = runner.run(argv, env=env, cwd=cwd, nice=3)
        fresh = subprocess.run(["nice", "-n", "3", *argv], env=env, cwd=cwd, capture_output=True, text=True)
    finally:
        runner.close()
    return ((fresh.returncode, fresh.stdout, fresh.stderr), (forked.returncode, forked.stdout, forked.stderr))


@pytest.mark.parametrize("kind", ["script", "module", "code"])
def test_a_forked_run_starts_as_python_starts_it(kind, tmp_path):
    (tmp_path / "selfie.py").write_text(SELF + "raise SystemExit(3)\n")
    (tmp_path / "cwd").mkdir()
    command = {"script": [str(tmp_path / "selfie.py")], "module": ["-m", "selfie"], "code": ["-c", SELF]}[kind]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # -m finds the module there
    fresh, forked = fresh_and_forked([sys.executable, *command, "an", "argument"], {**env}, tmp_path / "cwd")
    forked_env = fresh_and_forked([sys.executable, *command], {**env, "HOME": str(tmp_path), "ZYGOTE_TEST": "x"},
                                  tmp_path / "cwd")  # fmt: skip
    assert forked == fresh and forked_env[0] == forked_env[1]
    assert fresh[0] == (3 if kind != "code" else 0) and fresh[1], fresh


def test_a_forked_run_fails_as_python_fails(tmp_path):
    (tmp_path / "fails.py").write_text("def f():\n    raise ValueError('no')\n\n\nf()\n")
    fresh, forked = fresh_and_forked([sys.executable, str(tmp_path / "fails.py")], dict(os.environ), tmp_path)
    assert forked == fresh and fresh[0] == 1 and fresh[2].startswith("Traceback"), fresh  # no frame of the zygote's


#: what a process does as it ends: a thread that is not a daemon runs on after the code, an atexit handler,
#: files left open with their data in Python's buffers (text and binary), an exit code that is not an int
#: (printed before the thread is joined)
ENDS = (
    "import atexit, sys, threading, time\n"
    "text, raw = open('text.txt', 'w'), open('raw.bin', 'wb')\n"
    "text.write('buffered text')\n"
    "raw.write(b'buffered bytes')\n"
    "def late():\n"
    "    time.sleep(0.2)\n"
    "    open('thread.txt', 'w').write('the thread ran to its end')\n"
    "    print('thread', end='')\n"
    "    sys.stderr.write(' after the message')\n"
    "threading.Thread(target=late).start()\n"
    "atexit.register(lambda: print('atexit', flush=False))\n"
    "print('unflushed', end='')\n"
    "sys.stderr.write('stderr unflushed')\n"
    "sys.exit('a message')\n"
)


def test_a_forked_run_ends_as_python_ends(tmp_path):
    (tmp_path / "ends.py").write_text(ENDS)
    argv = [sys.executable, str(tmp_path / "ends.py")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered streams, as by default
    runner = zygote.Zygote((), env)
    outcomes = {}
    try:
        assert runner.forks(argv, env)
        for way in ("fresh", "forked"):
            (tmp_path / way).mkdir()
            if way == "fresh":
                done = subprocess.run(argv, env=env, cwd=tmp_path / way, capture_output=True, text=True, timeout=60)
            else:
                done = runner.run(argv, env=env, cwd=tmp_path / way, timeout=60)
            outcomes[way] = (done.returncode, done.stdout, done.stderr, digests(tmp_path / way))
    finally:
        runner.close()
    assert outcomes["forked"] == outcomes["fresh"]
    code, out, err, files = outcomes["fresh"]
    assert (code, out) == (1, "unflushedthreadatexit\n"), outcomes
    assert err == "stderr unflusheda message\n after the message", outcomes
    sizes = [(tmp_path / "forked" / name).stat().st_size for name in ("raw.bin", "text.txt", "thread.txt")]
    assert sizes == [14, 13, 25], "every file written to its end"


def test_a_started_run_is_stopped_and_killed_by_pid_while_another_runs(tmp_path):
    runner = zygote.Zygote((), dict(os.environ))
    try:
        child = runner.start([sys.executable, "-c", "import time; time.sleep(60)"], env=runner.env, nice=19)
        assert isinstance(child, zygote.Child) and child.poll() is None
        assert int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 19
        os.kill(child.pid, signal.SIGSTOP)
        done = runner.run([sys.executable, "-c", "print('meanwhile')"], env=runner.env)
        assert (done.returncode, done.stdout) == (0, "meanwhile\n")
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.1)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL and child.returncode == -9
    finally:
        runner.close()


def test_a_run_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    runner = zygote.Zygote((), dict(os.environ))
    code = f"import subprocess, time\nopen({str(tmp_path / 'pid')!r}, 'w').write(str(subprocess.Popen(['sleep', '60']).pid))\nprint('started', flush=True)\ntime.sleep(60)\n"  # noqa: E501
    try:
        with pytest.raises(subprocess.TimeoutExpired) as timed_out:
            runner.run([sys.executable, "-c", code], env=runner.env, timeout=2)
        assert timed_out.value.output == "started\n"
    finally:
        runner.close()
    grandchild = Path(f"/proc/{(tmp_path / 'pid').read_text()}/stat")
    assert not grandchild.exists() or grandchild.read_text().rsplit(")", 1)[1].split()[0] == "Z", "sleep killed too"


def test_runs_the_zygote_cannot_give_are_fresh(monkeypatch):
    runner = zygote.Zygote((), dict(os.environ))
    code = [sys.executable, "-c", "pass"]
    assert runner.forks(code, {**runner.env, "HF_TOKEN": "x", "HOME": "/elsewhere", "KAGGLE_KEY": "k"})
    for variable in ("OMP_NUM_THREADS", "PYTHONPATH", "HF_ENDPOINT", "HF_HOME"):
        assert not runner.forks(code, {**runner.env, variable: "1"}), variable
    for argv in (["python3", "-c", "pass"], [sys.executable, "-u", "-c", "pass"], [sys.executable]):
        assert not runner.forks(argv, runner.env), argv
    with monkeypatch.context() as patch:
        patch.setenv(zygote.FRESH, "1")
        assert not runner.forks(code, runner.env), zygote.FRESH
        done = runner.run([sys.executable, "-c", "import os; print(os.getppid())"], env=runner.env)
        assert done.stdout == f"{os.getpid()}\n" and runner.pid is None, "a child of this process"


def test_a_preload_that_starts_a_thread_stops_the_zygote(tmp_path):
    (tmp_path / "threaded.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )  # noqa: E501
    runner = zygote.Zygote(("threaded",), {**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        with pytest.raises(RuntimeError, match=r"error: importing threaded started a Python thread"):
            runner.run([sys.executable, "-c", "pass"], env=runner.env)
    finally:
        runner.close()
