"""`python push.py ...` for the tests, in processes forked from a zygote that has the heavy libraries imported.

The fault catalogue and the push tests run push.py about 300 times. Each run is a process of
its own, as a user's is: its own arguments, environment, working folder, standard streams and
exit status, and a process that ends. What a fork from the zygote saves is the import of the
libraries (NumPy, OpenCV, SciPy, pyarrow, pandas, the HTTP clients, huggingface_hub, datasets,
and the pure `preprocessing` package): about 1.5 of the 2.3 CPU-seconds of a small run (the
fault catalogue, on 2 cores: 252 CPU-seconds in fresh processes, 135 forked).

What a library reads from the environment when it is imported is then the zygote's: a run is
forked only when its environment differs from the zygote's in variables read when they are
used, not when imported (:data:`RUN_TIME_VARIABLES`: the token, the home and cache folders,
pytest's current test, and ``KAGGLE_*``, the credentials of the kaggle client, which each run
imports); huggingface_hub and datasets take their folders from ``HF_HOME``, which
the test session sets). Any other difference (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``PYTHON*``, ...) runs a plain ``python push.py`` instead, and so does every run when
``OPENEDS_TESTS_FRESH_PUSH=1``. The zygote's own home is an empty folder, as each fault case's
is. The kaggle client (which reads its credentials when imported), the project's `openeds`
package and push.py are imported by each run, in its own environment. The zygote freezes what it
imported (``gc.freeze``), so that a child's garbage collections do not copy those pages.

`tests/test_push.py::test_the_zygote_runs_push_as_a_fresh_process_does` compares the two ways.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PUSH = REPO / "push.py"

#: what the zygote imports
PRELOADED = (
    "numpy",
    "cv2",
    "scipy.ndimage",
    "pyarrow",
    "pyarrow.parquet",
    "yaml",
    "tqdm",
    "pandas",
    "requests",
    "httpx2",
    "jinja2",
    "fsspec",
    "filelock",
    "multiprocess",
    "dill",
    "xxhash",
    "huggingface_hub",
    "huggingface_hub.hf_api",
    "datasets",
    "preprocessing.image",
    "preprocessing.targets",
    "preprocessing.augment",
)
#: variables a run may set differently from the zygote and still be forked: read when used, not when imported
RUN_TIME_VARIABLES = ("HF_TOKEN", "HOME", "XDG_CACHE_HOME", "PYTEST_CURRENT_TEST")

# The zygote: imports PRELOADED, then reads one request per line (argv, environment, working
# folder, the files for stdout and stderr), forks a child for it, answers its pid and, once it
# has ended, its exit status. The child becomes the run: its streams, environment, folder and
# argv, then push.py as __main__, whose SystemExit or uncaught exception ends the process as
# it ends `python push.py` (the traceback goes to the run's stderr).
_ZYGOTE = """
import gc, importlib, json, os, runpy, sys
for name in {preloaded!r}:
    importlib.import_module(name)
gc.collect()
gc.freeze()  # the children's collections leave the preloaded objects alone, so their pages stay shared
requests, answers = sys.stdin.buffer, sys.stdout
def run(request):
    os.setpgid(0, 0)
    streams = ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY), (2, request["err"], os.O_WRONLY))
    for fd, path, flags in streams:
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
    sys.exit(0)
for line in requests:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        run(request)
    answers.write(json.dumps({{"pid": pid}}) + "\\n")
    answers.flush()
    _, status = os.waitpid(pid, 0)
    answers.write(json.dumps({{"status": os.waitstatus_to_exitcode(status)}}) + "\\n")
    answers.flush()
"""


class PushRunner:
    """Runs push.py as :func:`subprocess.run` would, in a child of a zygote (see the module docstring).

    One run at a time per runner (a lock keeps them in turn); each pytest worker has its own.
    """

    def __init__(self) -> None:
        self._env = dict(os.environ)
        self._home: str | None = None
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self._zygote is None or self._zygote.poll() is not None:
            self._home = self._home or tempfile.mkdtemp(prefix="push-zygote-home-")  # empty, as a fault case's
            home = {"HOME": self._home, "XDG_CACHE_HOME": os.path.join(self._home, ".cache")}
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE.format(preloaded=PRELOADED)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**self._env, **home},
                cwd=REPO,
            )
        return self._zygote

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.stdin.close()
            self._zygote.wait(timeout=30)
            self._zygote = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def forks(self, env: Mapping[str, str]) -> bool:
        """Whether a run in ``env`` may be forked from the zygote (else it runs as a fresh `python push.py`)."""
        if os.environ.get("OPENEDS_TESTS_FRESH_PUSH") == "1":
            return False
        changed = {name for name in {*env, *self._env} if env.get(name) != self._env.get(name)}
        return all(name in RUN_TIME_VARIABLES or name.startswith("KAGGLE_") for name in changed)

    def run(
        self, args: list[str], *, env: Mapping[str, str], cwd: str | Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run([python, push.py, *args], capture_output=True, text=True, ...)``, forked."""
        argv = [sys.executable, str(PUSH), *args]
        if not self.forks(env):
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(env), cwd=cwd)
        with self._lock, tempfile.TemporaryDirectory(prefix="push-run-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch()
            err.touch()
            request = {
                "argv": [str(PUSH), *args],
                "env": dict(env),
                "cwd": str(cwd or os.getcwd()),
                "out": str(out),
                "err": str(err),
            }
            zygote = self._start()
            zygote.stdin.write(json.dumps(request) + "\n")
            zygote.stdin.flush()
            pid = json.loads(zygote.stdout.readline())["pid"]
            timed_out = threading.Event()
            timer = threading.Timer(timeout, _kill, (pid, timed_out))
            timer.start()
            try:
                status = json.loads(zygote.stdout.readline())["status"]
            finally:
                timer.cancel()
            stdout, stderr = out.read_text(), err.read_text()
            if timed_out.is_set():
                raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
            return subprocess.CompletedProcess(argv, status, stdout, stderr)


def _kill(pid: int, timed_out: threading.Event) -> None:
    """A run past its timeout: kill it and what it started (its own process group), as subprocess.run kills."""
    timed_out.set()
    for kill in (os.killpg, os.kill):  # the group; the run itself, if it had not made its group yet
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # ended meanwhile
            pass


_RUNNER: PushRunner | None = None


def run_push(
    args: list[str], *, env: Mapping[str, str], cwd: str | Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """push.py with ``args`` in a process of its own (forked from this pytest process's zygote, made at first use)."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = PushRunner()
        atexit.register(_RUNNER.close)
    return _RUNNER.run(args, env=env, cwd=cwd, timeout=timeout)
