"""Small helpers shared by the benchmark scripts (not a test module)."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import io
import json
import os
import platform
import runpy
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from openeds import cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds): the least disturbed run."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident since exec) of this process, in MB.

    ``VmHWM``, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent through fork and exec.
    """
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def write_results(name: str, results: dict) -> Path:
    """Write ``results/<name>.json`` (into ``$OPENEDS_BENCH_RESULTS`` instead when set: the smoke test), dated
    (``date``: the day of the run, which the figures quoted in README.md and docs/ cite)."""
    folder = Path(os.environ.get("OPENEDS_BENCH_RESULTS") or RESULTS)
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    payload = {
        "benchmark": name,
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        **results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


#: set by the smoke test (tests/test_benchmarks.py): "children" run in the benchmark's own process
IN_PROCESS = "OPENEDS_BENCH_IN_PROCESS"


def in_process() -> bool:
    """Whether the "children" run in this process (``OPENEDS_BENCH_IN_PROCESS=1``: the smoke test)."""
    return os.environ.get(IN_PROCESS) == "1"


def run_in_child(module: str, *args: str) -> dict:
    """Run ``python -m module *args`` in a fresh process; the JSON object its last line prints.

    Each feed runs in a process of its own, so that its peak RSS and its threads are its own.
    With ``OPENEDS_BENCH_IN_PROCESS=1`` (the smoke test, which keeps the scripts running, not their
    figures) the module's ``main(args)`` runs in this process instead: the same code, without a
    start-up of torch and datasets for every feed; its peak RSS is then this process's.
    """
    if in_process():
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            importlib.import_module(module).main(list(args))
        return json.loads(printed.getvalue().strip().splitlines()[-1])
    argv = [sys.executable, "-m", module, *args]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_python_here(args: Sequence[str]) -> str:
    """``python *args`` (``-c CODE ...`` or ``SCRIPT ...``, a path under the repo) in this process; what it printed.

    For the smoke test's in-process mode (:func:`in_process`), as :func:`run_in_child` runs a module's
    ``main``: the code runs as ``__main__`` with the child's ``sys.argv``, a script through ``runpy`` as
    ``python SCRIPT`` runs it; ``sys.argv`` and ``sys.path`` are restored after. An exit status other
    than 0 raises ``CalledProcessError``, as ``subprocess.run(..., check=True)`` does.
    """
    printed, saved = io.StringIO(), (sys.argv[:], sys.path[:])
    try:
        with contextlib.redirect_stdout(printed):
            if args[0] == "-c":
                sys.argv = ["-c", *args[2:]]
                exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
            else:
                sys.argv = [str(REPO / args[0]), *args[1:]]
                runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (None, 0):
            status = exit.code if isinstance(exit.code, int) else 1
            raise subprocess.CalledProcessError(status, [sys.executable, *args], printed.getvalue()) from None
    finally:
        sys.argv, sys.path[:] = saved
    return printed.getvalue()


def main_behind_the_boundary(module: str, main: Callable[[], object]) -> None:
    """``python -m benchmarks.<module>``: ``main()`` behind the project's one error boundary (``openeds/cli.py``), so a
    failure is one last ``error:`` line (``OPENEDS_TRACEBACK=1`` for the traceback) and Ctrl-C exit status 130."""
    command = cli.Command(f"python -m {module}", again="run it again: a benchmark starts afresh", traceback_flag=False)

    def run() -> None:
        main()  # what it returns is for the callers of main(); the process's status is 0

    cli.exit(cli.run(command, run))
