"""`python push.py ...` for the tests, in processes forked from a zygote that has the heavy libraries imported.

The fault catalogue and the push tests run push.py about 300 times. Each run is a process of
its own, as a user's is: its own arguments, environment, working folder, standard streams and
exit status, and a process that ends. What a fork from the zygote (tests/zygote.py, which says
how and when a run is forked) saves is the import of the libraries (:data:`PRELOADED`: NumPy,
OpenCV, SciPy, pyarrow, pandas, the HTTP clients, huggingface_hub, datasets, and the pure
`preprocessing` package): about 1.5 of the 2.3 CPU-seconds of a small run (the fault catalogue,
on 2 cores: 252 CPU-seconds in fresh processes, 135 forked).

What a library reads from the environment when it is imported is then the zygote's: a run is
forked only when its environment differs from the zygote's in variables read when they are
used, not when imported (:data:`RUN_TIME_VARIABLES`: the token, the home, cache and config folders,
pytest's current test, the HTTP proxy, and ``KAGGLE_*``, the credentials of the kaggle client,
which each run imports); huggingface_hub and datasets take their folders from ``HF_HOME``, which
the test session sets). Any other difference (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``PYTHON*``, ...) runs a plain ``python push.py`` instead, and so does every run when
``OPENEDS_TESTS_FRESH=1``. The zygote's own home is an empty
folder, as each fault case's is. The kaggle client (which reads its credentials when imported),
the project's `openeds` package and push.py are imported by each run, in its own environment.

`tests/test_push.py::test_the_zygote_runs_push_as_a_fresh_process_does` compares the two ways.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests import zygote

REPO = Path(__file__).resolve().parents[1]
PUSH = REPO / "push.py"

#: what the zygote imports
PRELOADED = zygote.DATA
#: variables a run may set differently from the zygote and still be forked: read when used, not when imported
RUN_TIME_VARIABLES = zygote.RUN_TIME_VARIABLES


class PushRunner:
    """Runs push.py as :func:`subprocess.run` would, in a child of a zygote (see the module docstring).

    Each pytest worker has its own; the zygote starts at the first forked run.
    """

    def __init__(self) -> None:
        self._env = dict(os.environ)
        self._home: str | None = None
        self._runner: zygote.Zygote | None = None

    @property
    def _zygote(self) -> zygote.Zygote | None:
        """The zygote, once started (its ``pid``)."""
        return self._runner if self._runner is not None and self._runner.pid is not None else None

    def _get(self) -> zygote.Zygote:
        if self._runner is None:
            self._home = tempfile.mkdtemp(prefix="push-zygote-home-")  # empty, as a fault case's
            home = {"HOME": self._home, "XDG_CACHE_HOME": os.path.join(self._home, ".cache")}
            self._runner = zygote.Zygote(PRELOADED, {**self._env, **home})
        return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def forks(self, env: Mapping[str, str]) -> bool:
        """Whether a run in ``env`` may be forked from the zygote (else it runs as a fresh `python push.py`)."""
        return zygote.Zygote(PRELOADED, self._env).forks([sys.executable, str(PUSH)], env)

    def run(
        self,
        args: list[str],
        *,
        env: Mapping[str, str],
        cwd: str | Path | None = None,
        timeout: float = 600,
        prelude: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run([python, push.py, *args], capture_output=True, text=True, ...)``, forked.

        ``prelude``: Python code the process runs first, before push.py (``python -c``), for what only the
        process itself can set: a resource limit (``ulimit``), its standard streams, ``tempfile.tempdir``.
        """
        first = [] if prelude is None else ["-c", PRELUDE, prelude]
        return self._get().run([sys.executable, *first, str(PUSH), *args], env=env, cwd=cwd, timeout=timeout)


#: ``python -c PRELUDE CODE push.py ARGS...``: runs CODE, then push.py as ``python push.py ARGS...`` runs it
PRELUDE = """\
import runpy, sys
exec(sys.argv[1])
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


_RUNNER: PushRunner | None = None


def run_push(
    args: list[str],
    *,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
    timeout: float = 600,
    prelude: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """push.py with ``args`` in a process of its own (forked from this pytest process's zygote, made at first use);
    ``prelude``: code run first in that process (:meth:`PushRunner.run`)."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = PushRunner()
        atexit.register(_RUNNER.close)
    return _RUNNER.run(args, env=env, cwd=cwd, timeout=timeout, prelude=prelude)
