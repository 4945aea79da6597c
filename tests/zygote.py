"""`python SCRIPT`, `python -m MODULE` and `python -c CODE` for the tests, in processes forked from a zygote.

The tests run push.py about 300 times and examples/train_tiny.py about 10 times, each run a
process of its own, as a user's is: its own arguments, environment, working folder, standard
streams, exit status and pid (to stop or kill), and a process that ends. Most of such a run's
CPU time is the import of its libraries: a small push.py run spends about 1.5 of its 2.3
CPU-seconds importing NumPy, OpenCV, pyarrow, datasets and the Hub client; a train_tiny.py run
about 6 of its 7.5, importing torch and datasets (3.1) and, at the first optimiser it builds,
``torch._dynamo`` (2.8, torch's lazy import in ``torch._compile._disable_dynamo``). A zygote
imports a list of modules once (:data:`DATA`, :data:`TORCH`), and each run is a child forked
from it: a new process, with a pid, an environment and streams of its own, in which nothing has
run but those imports. The child then becomes the run (:func:`_become`): its streams, its
environment (``os.environ`` replaced), its folder, its niceness, ``sys.argv`` and ``sys.path[0]``
as Python sets them for the same command line, then the script, module or code as ``__main__``,
whose ``SystemExit`` or uncaught exception ends the process as it ends ``python ...`` (the
traceback, without the zygote's frames, goes to the run's stderr; threads joined, atexit handlers
run, open files and the streams flushed, then ``os._exit``, without freeing the preloaded modules,
which would copy their pages: :func:`_end`). The zygote freezes what it
imported (``gc.freeze``), so that a child's garbage collections do not copy those pages; a child
reseeds NumPy's global generator, which a fresh process seeds anew (Python's ``random`` reseeds
itself after a fork).

What a library reads from the environment when it is imported is then the zygote's. A run is forked
only when its environment differs from its zygote's in variables read when they are used, not when
imported (:data:`RUN_TIME_VARIABLES`: the token, the home, cache and config folders, pytest's
current test, ``HTTP_PROXY`` (requests and httpx2 read it per request or client),
``OPENEDS_TRACEBACK`` (read when a command starts), and ``KAGGLE_*``, the settings and credentials
of the kaggle client: ``kaggle`` reads them when imported, and no zygote imports it (kagglesdk,
which tests/test_download.py preloads, reads them when called); of what the runs import, ``kaggle``
alone reads ``XDG_CONFIG_HOME``; huggingface_hub and datasets take their folders from ``HF_HOME``,
which the test session sets).
:func:`run` and :func:`start` keep one zygote per preload list and environment without those
variables, started at the first run that needs it (in each pytest process: each xdist worker
has its own), so every run with the same import-time environment is forked, for torch runs
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``PYTHONPATH`` included, for the Kaggle client's
runs (tests/test_download.py) whatever port its stub listens on. A
:class:`Zygote` made with an environment of its own (tests/push_runner.py: an empty home) forks
only the runs that differ from it in those variables. Anything else runs a plain fresh
``python ...`` instead: another interpreter, an option before the script (``-X``, ``-u``, ...),
and every run when ``OPENEDS_TESTS_FRESH=1``.

A fork copies only the thread that calls it; a lock another thread held stays held in the child.
The zygote therefore checks, after each import, that no Python thread runs and that a module that
started a native thread is one whose library makes the fork safe itself (:data:`FORK_SAFE_THREADS`:
OpenBLAS stops its pool before a fork and restarts it when next needed: NumPy's, OpenCV's and
SciPy's pools are gone from the zygote after its first fork; jemalloc takes its locks across the
fork and turns its background thread off in the child); any other thread stops the zygote with a
one-line error. torch, ``torch._dynamo`` and ``torch.distributed`` start none (in the torch
runs' environment, ``OMP_NUM_THREADS=1``, no pool starts at all: the only other thread is jemalloc's).

One run or many at a time: the zygote forks a child per request and reports each child's exit
when it ends (a SIGCHLD wakes its loop), so a test may run another while one it started is
stopped. `tests/test_push.py::test_the_zygote_runs_push_as_a_fresh_process_does` and
`tests/test_zygote.py` compare fresh and forked runs.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]

#: what push.py imports: NumPy, OpenCV, SciPy, pyarrow, pandas, the HTTP clients, huggingface_hub, datasets, and the
#: pure `preprocessing` package (not the kaggle client, which reads its credentials when imported, nor `openeds`)
DATA = (
    "numpy",
    "cv2",
    "scipy.ndimage",
    "scipy.io",  # datasets imports it for every builder (to patch its loadmat for streaming)
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
    "multiprocessing.synchronize",  # tqdm's lock, made at the first progress bar
    "dill",
    "xxhash",
    "huggingface_hub",
    "huggingface_hub.hf_api",
    "datasets",
    "preprocessing.image",
    "preprocessing.targets",
    "preprocessing.augment",
)
#: ... and what examples/train_tiny.py imports beyond it (``torch._dynamo``: torch imports it at the first optimiser)
TORCH = (
    *DATA,
    "torch",
    "torch._dynamo",
    "torch.nn.functional",
    "torch.distributed",
    "torch.utils.data",
    "torch.profiler._cupti_monitor",  # at the first optimiser.zero_grad()
    "preprocessing.training",
)
#: variables a run may set differently from its zygote and still be forked: read when used, not when imported
RUN_TIME_VARIABLES = (
    "HF_TOKEN",
    "HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "HTTP_PROXY",
    "PYTEST_CURRENT_TEST",
    "HF_XET_CACHE",  # hf_xet reads it when its session is made, at the first upload or download (not imported here)
    "OPENEDS_TRACEBACK",  # read by openeds.cli when a command starts
)
RUN_TIME_PREFIXES = ("KAGGLE_",)
#: modules whose import starts native threads that their library makes safe across a fork, and how
FORK_SAFE_THREADS = {
    "numpy": "OpenBLAS's pool (its pthread_atfork handler stops it before a fork)",
    "cv2": "OpenCV's OpenBLAS pool (the same)",
    "scipy.ndimage": "SciPy's OpenBLAS pool (the same)",
    "pyarrow": "jemalloc's background thread (jemalloc's fork handlers lock it and turn it off in the child)",
}
#: set to 1: every run in a fresh interpreter
FRESH = "OPENEDS_TESTS_FRESH"


def _command(argv: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """``(kind, target, args)`` of a command line a zygote can run (script, module or code), else None."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return None
    if argv[1] in ("-m", "-c"):
        return ("module" if argv[1] == "-m" else "code", argv[2], list(argv[3:])) if len(argv) > 2 else None
    return None if argv[1].startswith("-") else ("script", argv[1], list(argv[2:]))


def _import_time(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables read at run time."""
    return {k: v for k, v in env.items() if k not in RUN_TIME_VARIABLES and not k.startswith(RUN_TIME_PREFIXES)}


class Child:
    """A forked run, with as much of :class:`subprocess.Popen` as the tests use: ``pid``, ``poll``, ``wait``,
    ``send_signal``, ``kill``, ``returncode``. Its pid is its process group's (a timeout kills the group)."""

    def __init__(self, args: list[str], pid: int, ended: _Exit) -> None:
        self.args, self.pid, self.returncode = args, pid, None
        self._ended = ended

    def poll(self) -> int | None:
        if self.returncode is None and self._ended.event.is_set():
            self.returncode = self._ended.status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.event.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.poll()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def kill_group(self) -> None:
        """Kill the run and what it started (its own process group), as :func:`subprocess.run` kills at a timeout."""
        for kill in (os.killpg, os.kill):  # the group; the run itself, if it had not made its group yet
            try:
                kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # ended meanwhile (a zombie group answers EPERM)
                pass


class _Exit:
    """A child's exit status, reported by the zygote (None: the zygote ended first)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.code: int | None = None
        self.lost = ""

    def status(self) -> int:
        if self.code is None:
            raise RuntimeError(f"the zygote ended before its child: {self.lost}")
        return self.code


class Zygote:
    """Runs Python command lines as :mod:`subprocess` would, in children of a zygote (see the module docstring).

    ``env`` is the zygote's own environment; runs whose environment differs from it in more than
    :data:`RUN_TIME_VARIABLES` run fresh. The zygote starts at the first forked run.
    """

    def __init__(self, preload: Sequence[str], env: Mapping[str, str]) -> None:
        self.preload, self.env = tuple(preload), dict(env)
        self._lock = threading.Lock()  # one request (a fork and its pid) at a time
        self._process: subprocess.Popen[str] | None = None
        self._folder: str | None = None
        self._reader: threading.Thread | None = None
        self._started: queue.Queue[int | None] = queue.Queue()
        self._exits: dict[int, _Exit] = {}
        self._exits_lock = threading.Lock()
        _ALL.add(self)

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs (its CPU time counts its children's once they have ended)."""
        return None if self._process is None else self._process.pid

    def forks(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        """Whether ``argv`` in ``env`` is forked (else it runs as a fresh process)."""
        if os.environ.get(FRESH) == "1" or _command(argv) is None:
            return False
        return _import_time(env) == _import_time(self.env)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | Path | None = None,
        timeout: float = 600,
        nice: int = 0,
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run(argv, capture_output=True, text=True, ...)``, forked when it may be; run at ``nice``."""
        argv = list(argv)
        if not self.forks(argv, env):
            fresh = [*(["nice", "-n", str(nice)] if nice else []), *argv]
            done = subprocess.run(fresh, capture_output=True, text=True, timeout=timeout, env=dict(env), cwd=cwd)
            return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)
        with tempfile.TemporaryDirectory(prefix="zygote-run-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            child = self._fork(argv, env, cwd, out, err, nice)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill_group()
                child.wait()
                raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(argv, child.returncode, out.read_text(), err.read_text())

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | Path | None = None,
        stdout: Path | None = None,
        stderr: Path | None = None,
        nice: int = 0,
    ) -> Child | subprocess.Popen[bytes]:
        """``subprocess.Popen(argv, ...)``, forked when it may be; its output to the files named (else nowhere)."""
        argv = list(argv)
        if self.forks(argv, env):
            return self._fork(argv, env, cwd, stdout, stderr, nice)
        with open(stdout or os.devnull, "wb") as out, open(stderr or os.devnull, "wb") as err:
            fresh = [*(["nice", "-n", str(nice)] if nice else []), *argv]
            return subprocess.Popen(fresh, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def _fork(
        self, argv: list[str], env: Mapping[str, str], cwd: str | Path | None, out: Path | None, err: Path | None,
        nice: int,
    ) -> Child:  # fmt: skip
        for path in (out, err):
            if path is not None:
                path.write_bytes(b"")  # made here, so the run's streams are there whatever it does
        kind, target, args = _command(argv)
        request = {
            "kind": kind,
            "target": target,
            "args": args,
            "env": dict(env),
            "cwd": str(cwd or os.getcwd()),
            "out": str(out or os.devnull),
            "err": str(err or os.devnull),
            "nice": nice,
        }
        with self._lock:
            process = self._start()
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
            except BrokenPipeError:
                pass  # it ended: the reader says so
            pid = self._started.get()
            if pid is None:
                raise RuntimeError(f"the zygote ended: {self._log()}")
        return Child(argv, pid, self._exits[pid])

    def _start(self) -> subprocess.Popen[str]:
        if self._process is None:
            self._folder = tempfile.mkdtemp(prefix="zygote-")
            with open(Path(self._folder, "log"), "wb") as log:
                self._process = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), *self.preload],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=self.env,
                    cwd=REPO,
                )
            self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True)
            self._reader.start()
        return self._process

    def _read(self, answers: IO[str]) -> None:
        """The zygote's answers: a pid per request, in order, then each child's exit status when it ends."""
        for line in answers:
            answer = json.loads(line)
            with self._exits_lock:
                if "started" in answer:
                    self._exits[answer["started"]] = _Exit()
                    self._started.put(answer["started"])
                else:
                    ended = self._exits[answer["ended"]]
                    ended.code = answer["status"]
                    ended.event.set()
        with self._exits_lock:  # the zygote ended: no run waits forever
            lost = self._log()
            for ended in self._exits.values():
                if not ended.event.is_set():
                    ended.lost = lost
                    ended.event.set()
            self._started.put(None)

    def _log(self) -> str:
        """The tail of what the zygote wrote to its stderr (why it stopped, if it did)."""
        try:
            text = Path(self._folder, "log").read_text(errors="replace") if self._folder else ""
        except FileNotFoundError:  # closed meanwhile
            text = ""
        return " / ".join(text.strip().splitlines()[-5:]) or "(nothing on its stderr)"

    def close(self) -> None:
        """Kill the runs still going, end the zygote, remove its folder."""
        if self._process is not None:
            with self._exits_lock:
                running = [pid for pid, ended in self._exits.items() if not ended.event.is_set()]
            for pid in running:
                Child([], pid, _Exit()).kill_group()
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._reader is not None:
                self._reader.join(timeout=30)  # it reads the log at the zygote's end: before the folder goes
            self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


_ALL: weakref.WeakSet[Zygote] = weakref.WeakSet()  # every zygote of this process (for zygote_pids)
_ZYGOTES: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], Zygote] = {}


def zygote(preload: Sequence[str], env: Mapping[str, str]) -> Zygote:
    """This process's zygote for ``preload`` and the import-time part of ``env`` (made at first use, ended at exit)."""
    key = (tuple(preload), tuple(sorted(_import_time(env).items())))
    if key not in _ZYGOTES:
        if not _ZYGOTES:
            atexit.register(close_all)
        _ZYGOTES[key] = Zygote(preload, env)
    return _ZYGOTES[key]


def zygote_pids() -> list[int]:
    """The pids of this process's running zygotes, tests/push_runner.py's too (for a CPU-time profile)."""
    return [z.pid for z in list(_ALL) if z.pid is not None]


def close_all() -> None:
    for z in _ZYGOTES.values():
        z.close()


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    preload: Sequence[str],
    cwd: str | Path | None = None,
    timeout: float = 600,
    nice: int = 0,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)``, forked from the
    zygote of ``preload`` in ``env``'s import-time environment."""
    return zygote(preload, env).run(argv, env=env, cwd=cwd, timeout=timeout, nice=nice)


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    preload: Sequence[str],
    cwd: str | Path | None = None,
    stdout: Path | None = None,
    stderr: Path | None = None,
    nice: int = 0,
) -> Child | subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, env=env, cwd=cwd, ...)`` writing to ``stdout`` and ``stderr`` (files), forked
    as :func:`run` is; stop or kill it by its ``pid``."""
    return zygote(preload, env).start(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr, nice=nice)


# The zygote's side: `python tests/zygote.py MODULE...`.


def _preload(modules: Sequence[str]) -> None:
    """Import ``modules``, checking that none starts a thread a fork would leave in a bad state."""
    import importlib

    threads = set(os.listdir("/proc/self/task"))
    for name in modules:
        importlib.import_module(name)
        started = set(os.listdir("/proc/self/task")) - threads
        if threading.active_count() != 1:
            names = [t.name for t in threading.enumerate()]
            raise SystemExit(f"error: importing {name} started a Python thread ({names}); a fork would lose it")
        if started and name not in FORK_SAFE_THREADS:
            comms = [Path(f"/proc/self/task/{tid}/comm").read_text().strip() for tid in sorted(started)]
            raise SystemExit(
                f"error: importing {name} started {len(started)} native thread(s) {comms}, not known to be safe "
                f"across a fork; preload it after the modules that start them, or add it to FORK_SAFE_THREADS"
            )
        threads |= started


def _become(request: dict[str, Any], answers: IO[str], wake: Sequence[int], set_up: int) -> None:
    """In the child: become the run of ``request``, as ``python`` would start it, and run it to its end.

    Closing ``set_up`` tells the zygote the child is set up: its group, niceness, streams, environment and folder.
    """
    import runpy
    import types

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    answers.close()  # the zygote's; the child holds no end of its pipes
    for fd in wake:
        os.close(fd)
    os.setpgid(0, 0)
    if request["nice"]:
        os.nice(request["nice"])
    streams = ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY), (2, request["err"], os.O_WRONLY))
    for fd, path, flags in streams:
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh process seeds it from the OS; a fork would repeat the zygote's
    os.close(set_up)
    kind, target = request["kind"], request["target"]
    skip = {__file__}  # the zygote's frames, left out of a traceback as python's own are
    try:
        if kind == "script":
            sys.argv = [target, *request["args"]]
            sys.path.insert(0, os.path.dirname(os.path.realpath(target)))
            skip.add(runpy.run_path.__code__.co_filename)  # "<frozen runpy>": `python SCRIPT` shows none
            runpy.run_path(target, run_name="__main__")
        else:
            sys.modules["__main__"] = main = types.ModuleType("__main__")
            if kind == "module":
                sys.argv = ["-m", *request["args"]]  # runpy puts the module's file first
                sys.path.insert(0, os.getcwd())
                runpy._run_module_as_main(target)  # what `python -m` calls
            else:
                sys.argv = ["-c", *request["args"]]
                sys.path.insert(0, "")
                exec(compile(target, "<string>", "exec"), main.__dict__)
    except SystemExit as done:
        _end(done.code)
    except Exception as error:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename in skip:
            tb = tb.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        _end(1)
    _end(0)


def _end(code: object) -> None:
    """End the child as ``python`` ends with ``SystemExit(code)``, without freeing the zygote's modules.

    What an ending process shows of itself comes first, in CPython's order (``Py_Exit``, then
    ``Py_FinalizeEx``): a code that is not an int is printed to stderr (the status 1); the threads that
    are not daemons are joined, the atexit handlers run, the files the run left open are flushed and
    closed (CPython closes them as it frees them), the standard streams are flushed (the status 120 if
    one cannot be). Then ``os._exit``: CPython would go on to free every module, which in a child
    writes to each preloaded object's page (a reference count) and copies it: 0.11 CPU-seconds a run
    with the data libraries preloaded, against 0.01 for the rest of an empty run.
    """
    import gc
    import io

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()  # what Py_FinalizeEx calls first: joins the threads that are not daemons
    atexit._run_exitfuncs()
    streams = {id(sys.stdout), id(sys.stderr), id(sys.stdin)}
    opened = [o for g in range(3) for o in gc.get_objects(g) if isinstance(o, io.IOBase) and id(o) not in streams]
    # text files before their buffers, buffers before their raw files; the zygote's own are frozen, not listed
    for kind in (io.TextIOBase, io.BufferedIOBase, io.IOBase):
        for file in opened:
            if isinstance(file, kind) and not file.closed:
                try:
                    file.close()
                except Exception:  # CPython ignores it too (after printing it); the data is what could be written
                    pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as error:
            status = 120  # what Python returns, whatever the code, when it cannot flush a standard stream
            try:
                print(f"Exception ignored in: {stream!r}\n{type(error).__name__}: {error}", file=sys.__stderr__)
            except Exception:
                pass
    os._exit(status & 0xFF)


def _serve(modules: Sequence[str]) -> None:
    """Preload, then fork a child per request line on stdin; answer each pid, then each exit status when it ends."""
    sys.path.pop(0)  # this file's folder: the preloads resolve as in the runs, through PYTHONPATH and site
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what an import prints goes to the log, not into the answers
    _preload(modules)
    import gc

    gc.collect()
    gc.freeze()  # the children's collections leave the preloaded objects alone, so their pages stay shared
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select() through wake_w
    pending = b""

    def answer(message: dict[str, int]) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    while True:
        ready = select.select([0, wake_r], [], [])[0]
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 4096):
                        break
                except BlockingIOError:
                    break
        while True:  # every child that has ended, whatever woke the loop
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            answer({"ended": pid, "status": os.waitstatus_to_exitcode(status)})
        if 0 in ready:
            data = os.read(0, 1 << 20)
            if not data:
                return  # the test process closed its end: done
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                waiting, set_up = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(waiting)
                    _become(json.loads(line), answers, (wake_r, wake_w), set_up)
                os.close(set_up)
                os.read(waiting, 1)  # until the child has closed its end: set up (or failed to be)
                os.close(waiting)
                answer({"started": pid})


if __name__ == "__main__":
    _serve(sys.argv[1:])
