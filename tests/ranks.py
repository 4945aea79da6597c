"""torch.distributed ranks for the DDP tests, forked from one server that has imported torch, datasets and the tests.

A DDP test needs a process per rank, each talking gloo to the others. Started with ``spawn``,
every rank is a fresh interpreter that imports torch, datasets and the test module again: about
4 CPU-seconds a rank here, most of what a DDP test costs. The stdlib's ``forkserver`` start method
(:func:`multiprocessing.set_forkserver_preload`) pays those imports once per pytest process (per
xdist worker) in a server process and forks each rank from it. A rank is still a process of its
own, forked from an interpreter that has only imported modules: no thread (the test Hub's,
xdist's, a loader's) and no test state of the pytest process, which a plain ``fork`` would copy.

The server is started by the first DDP test and keeps the environment of that moment, the
session's (tests/conftest.py sets it before any test runs); the ranks get it. When a test's
environment differs from it (other than pytest's current-test variable), its ranks are spawned
instead, in the test's own environment. Python 3.11's server imports from its working folder,
as ``python -c`` does, not from the caller's ``sys.path``: run from elsewhere, a rank imports
the test module itself, slower but the same.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable

import torch.multiprocessing

#: what the server imports; tests.test_streaming imports tests.test_loader, so both DDP tests' rank functions
PRELOADED = ("torch", "torch.distributed", "datasets", "preprocessing.training", "tests.test_streaming")
#: set per test by pytest, not read by a rank
_PER_TEST = ("PYTEST_CURRENT_TEST",)

_server_environment: dict[str, str] | None = None


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in _PER_TEST}


def run_ranks(function: Callable[..., None], args: tuple, nprocs: int) -> None:
    """``function(rank, *args)`` in ``nprocs`` processes at once, until all end; a rank's exception is raised
    here (as ``torch.multiprocessing.ProcessRaisedException``, with the rank's traceback)."""
    global _server_environment
    if _server_environment is None:
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOADED))
        _server_environment = _environment()
    method = "forkserver" if _environment() == _server_environment else "spawn"
    torch.multiprocessing.start_processes(function, args=args, nprocs=nprocs, join=True, start_method=method)
