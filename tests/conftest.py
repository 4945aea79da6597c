"""Shared fixtures (the local Hub server, the synthetic OpenEDS sample) and which tests run on which `datasets` line.

huggingface_hub and datasets read HF_ENDPOINT when they are imported, so the Hub
environment is set up here, before anything imports them.

Two `datasets` lines, one decision per test. `.ci/run` runs every test on datasets 5.x, then on
datasets 3.6 only the tests marked ``datasets_line`` (``pytest --datasets-line-only``). A test
is ``datasets_line`` when its outcome can change with the installed `datasets` release, that is
when it runs any of:

* the builder (`OpenEDSPrecomputed`) or `datasets-cli test` (loading scripts: 3.6 only);
* `load_dataset`, `Dataset`, `DatasetDict` or `IterableDataset`: map-style Arrow reading,
  formats, streaming, `split_dataset_by_node`;
* the training feeds over them (IrisDataset, IrisLoader, IrisIterableDataset; the `v1` and
  `v2` fixtures below are `datasets` objects);
* what `datasets` defines in our files and reads back: the Features' Arrow schema in the
  parquet, the card's `dataset_info` and `configs` (DatasetInfosDict, MetadataConfigs).

It is ``datasets_independent`` when our own code or another library decides its assertions,
even if `datasets` runs on the way: the pure arrays, the raw reader, retries, disk, the lock,
the Kaggle download, packaging, the benchmarks' smoke runs (measured on the default line; the
feeds they time are tested on both), push.py's flags and failures, and what push.py's own
bookkeeping decides (shard records, resuming, byte-identical reruns, parallel builds). In
doubt, mark it ``datasets_line``: a test run twice costs seconds, a test missing on 3.6 hides
a break.

Every test module says which at module level, on one line:

    pytestmark = pytest.mark.datasets_line                                   # both lines
    pytestmark = pytest.mark.datasets_independent("why none depends on it")  # the default line only

and a test that is the exception in its module carries the other mark; the closest mark wins.
In the fault catalogue a `Case` decides with its ``datasets_line`` field; None decides from its
code: both lines when its ``arrange`` or ``check`` (or a function of the catalogue they call)
names a `datasets` API, else the default line only: push.py's exit, its lines and what it leaves
are decided by our code, and the end-to-end runs marked True (``publish``, ``sample-local``) show
on 3.6 that the build, the card and the publication work there. Collection fails on a
module without a decision, and on an independent test whose own code names a `datasets` API or
takes the `v1`/`v2` fixtures (:func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import os

from tests.hub_server import configure_hub_environment, hub, hub_server  # noqa: F401 (fixtures)

configure_hub_environment()  # before anything imports huggingface_hub or datasets
# torch's OpenMP threads, once an operation is done, spin for the next one before they sleep (libgomp's
# default, read when torch is imported: here, before any test module imports it). Small operations, as the
# tests' comparisons are, then cost their threads' spinning too, and on 2 cores that CPU is the other xdist
# worker's: 15-25% of the streaming and resume tests' CPU time. PASSIVE threads sleep at once; the operations
# and their results are the same. The test processes' children (push.py, train_tiny.py) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ast  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

from openeds import raw, schema  # noqa: E402
from openeds.synthetic import write_sample  # noqa: E402
from openeds_precomputed import OpenEDSPrecomputed  # noqa: E402
from tests.v1data import v1_split  # noqa: E402


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A folder this run's pytest-xdist workers share (the parent of their base folders); without
    xdist, the base folder. What is built there once is read by every worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def sample_dir(shared_dir) -> Path:
    """The default synthetic sample (train 8, validation 3, test 3) in the Kaggle layout, written once
    for all workers (the first to take the lock writes it; no test writes into it)."""
    root, complete = shared_dir / "raw", shared_dir / "raw.complete"
    with FileLock(shared_dir / "raw.lock"):
        if not complete.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died writing it
            write_sample(root)
            complete.touch()
    return root


@pytest.fixture(scope="session")
def v2(sample_dir, shared_dir) -> dict[str, datasets.DatasetDict]:
    """The sample built by the v2 builder, per config (memory-mapped Arrow files). The workers share
    the cache folders: datasets' own lock on a cache lets one worker build it and the others load it."""
    built = {}
    for config in schema.CONFIG_NAMES:
        builder = OpenEDSPrecomputed(
            config_name=config, data_dir=str(sample_dir), cache_dir=str(shared_dir / f"v2-{config}")
        )
        builder.download_and_prepare()
        built[config] = builder.as_dataset()
    return built


@pytest.fixture(scope="session")
def v1(sample_dir) -> dict[str, datasets.DatasetDict]:
    """The same sample in the v1 layout, per config (in-memory Arrow tables)."""
    return {
        config: datasets.DatasetDict(
            {
                split: v1_split(raw.list_pairs(folder).pairs, config)
                for split, folder in raw.find_split_dirs(sample_dir).items()
            }
        )
        for config in schema.CONFIG_NAMES
    }


#: In a test's own code: a `datasets` API, directly or through the builder and the training feeds.
DATASETS_API = re.compile(
    r"\bdatasets\.|\bload_dataset\b|\bOpenEDSPrecomputed\b|datasets-cli|\bIris(Dataset|Loader|IterableDataset)\b"
    r"|\bStreamRows\b"
)
#: fixtures that are `datasets` objects
DATASETS_FIXTURES = {"v1", "v2"}
LINE, INDEPENDENT = "datasets_line", "datasets_independent"


@functools.cache
def _code_of(function: object) -> str:
    """A test function's code without its comments and docstring (which may name an API in passing)."""
    node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    if ast.get_docstring(node) is not None:
        node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(node)


def _reads_with_datasets(case: object) -> bool:
    """Whether a fault case's ``arrange`` or ``check`` names a `datasets` API, in its own code or in the
    catalogue's functions it calls (by name, followed through closures such as ``_arrange(...)``)."""
    seen: set[object] = set()
    todo = [getattr(case, "arrange", None), getattr(case, "check", None)]
    while todo:
        function = todo.pop()
        if not inspect.isfunction(function) or function in seen:
            continue
        seen.add(function)
        try:
            code = _code_of(function)
        except (OSError, SyntaxError, TypeError):  # a lambda inside a larger expression: its whole line
            code = inspect.getsource(function)
        if DATASETS_API.search(code):
            return True
        scope = {**function.__globals__, **dict(zip(function.__code__.co_freevars, _cells(function), strict=True))}
        todo.extend(value for name, value in scope.items() if re.search(rf"\b{re.escape(name)}\b", code))
    return False


def _cells(function: object) -> list[object]:
    """The values a closure holds (a cell not filled yet gives None)."""
    values = []
    for cell in function.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:
            values.append(None)
    return values


def _module_decision(module: pytest.Module) -> set[str]:
    marks = getattr(module.obj, "pytestmark", [])
    return {mark.name for mark in (marks if isinstance(marks, list) else [marks])} & {LINE, INDEPENDENT}


def _decision(item: pytest.Item) -> str | None:
    """The item's closest datasets-line mark: its own (or its case's) before its module's."""
    return next((mark.name for mark in item.iter_markers() if mark.name in (LINE, INDEPENDENT)), None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--datasets-line-only",
        action="store_true",
        help=f"run only the tests whose closest mark is {LINE}: the datasets 3.6 pass of .ci/run (tests/conftest.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the fault catalogue's cases, refuses a test whose `datasets` line is not decided (see the
    docstring), and with ``--datasets-line-only`` deselects the tests that need one line only."""
    problems: dict[str, str] = {}
    for item in items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        if case is not None and hasattr(case, "datasets_line"):  # tests/test_faults.py
            both = case.datasets_line if case.datasets_line is not None else _reads_with_datasets(case)
            item.add_marker(LINE if both else INDEPENDENT)
        module = item.getparent(pytest.Module)
        if module is None:
            continue
        name = item.nodeid.split("[")[0]
        if len(_module_decision(module)) != 1:
            problems[module.nodeid] = (
                f"{module.nodeid}: say at module level which datasets line its tests need: "
                f'`pytestmark = pytest.mark.{LINE}` or `pytestmark = pytest.mark.{INDEPENDENT}("why")` '
                "(tests/conftest.py says which)"
            )
        elif _decision(item) == INDEPENDENT:
            uses = sorted(DATASETS_FIXTURES & set(getattr(item, "fixturenames", ())))
            function = getattr(item, "function", None)
            found = DATASETS_API.search(_code_of(function)) if function else None
            if uses or found:
                what = f"fixture {uses[0]}" if uses else repr(found.group(0))
                fix = f"mark it @pytest.mark.{LINE} (tests/conftest.py says when)"
                problems[name] = f"{name} uses {what} but is {INDEPENDENT}: {fix}"
    if problems:
        raise pytest.UsageError("undecided datasets line:\n  " + "\n  ".join(problems.values()))
    if config.getoption("datasets_line_only"):
        keep = [item for item in items if _decision(item) == LINE]
        config.hook.pytest_deselected(items=[item for item in items if _decision(item) != LINE])
        items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    """Leaves what collection imported out of every later garbage collection (``gc.freeze``).

    The training feed runs ``gc.collect()`` each time a stream is left mid-way (a loop ended early,
    a part read to a limit: preprocessing/training/source.py), and Python runs full collections of
    its own as the heap grows. Each walks every object of the process: in a test process, with
    pytest, torch, datasets and the test modules imported, some 260,000 objects, 0.1-0.2 CPU-s a
    walk, about 50 walks in one pass of the streaming, loader, resume and docs tests. Frozen, those
    objects are never walked again; what the tests make is still collected as before. Nothing frozen
    is garbage: a collection first frees the cycles collection left.
    """
    gc.collect()
    gc.freeze()
