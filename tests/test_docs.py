"""Every Python block of README.md and docs/*.md runs as written, so a renamed function fails here
instead of misleading a reader.

The blocks run in a folder laid out as a reader's would be after the quick start: `RAW/` (the
synthetic sample in the Kaggle layout) and `out/` (`push.py --sample --local-dir out --no-upload`),
with `Conner/openeds-precomputed` served by the local test Hub (the sample, without its markers, published
there). Each block runs in a namespace of its own: a block must bring its own imports. The card's "Loading
fast" snippets are run by tests/test_push.py.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from openeds.synthetic import MARKER, write_sample
from push import DEFAULT_REPO_ID, TORCH_CPU_INSTALL, push

pytestmark = pytest.mark.datasets_line  # the blocks call load_dataset, streaming and the training feeds

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOKEN = "hf_docs_write_token"
_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((page.relative_to(REPO).as_posix(), line, match[1]))
    return found


BLOCKS = _blocks()


def test_the_pages_have_python_blocks_to_run():
    pages = {page for page, _, _ in BLOCKS}
    assert {"README.md", "docs/data.md", "docs/training.md"} <= pages, pages
    assert not [page for page in PAGES if "```py\n" in page.read_text(encoding="utf-8")], "use ```python"


@pytest.fixture(scope="module")
def reader_folder(hub_server, tmp_path_factory) -> Path:
    """The folder a reader runs the blocks in, and the sample published as the real repo's name."""
    folder = tmp_path_factory.mktemp("reader")
    write_sample(folder / "RAW")
    push(sample=True, local_dir=folder / "out", upload=False)
    hub_server.add_token(TOKEN, "docs", write={DEFAULT_REPO_ID.split("/")[0]})
    hub_server._repos.pop(DEFAULT_REPO_ID, None)  # another test of this process may have published there
    # The sample stands for the real data there: a copy without its markers, built on its own (push.py refuses
    # to publish what it knows is the sample to that repo, and out's shards say they are).
    real = shutil.copytree(folder / "RAW", folder / "real", ignore=shutil.ignore_patterns(MARKER))
    push(data_dir=real, local_dir=folder / "staging", repo_id=DEFAULT_REPO_ID, api=HfApi(token=TOKEN))
    yield folder
    hub_server._repos.pop(DEFAULT_REPO_ID, None)


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS])
def test_python_block_runs(page: str, line: int, code: str, reader_folder: Path, monkeypatch):
    monkeypatch.chdir(reader_folder)
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code, f"{page}:{line}", "exec"), namespace)
    namespace.clear()
    gc.collect()  # no stream outlives the block (pyarrow can abort at exit on one left open)


# --- the shell lines, the torch line and the figures: what a newcomer copies or quotes -----------------------

#: The one convention of the pages' commands: the quick start's virtual environment, activated (README.md).
ACTIVATE = ". .venv/bin/activate"
#: Put before a code block whose commands run on another machine (its own interpreter, no virtual environment).
ANOTHER_MACHINE = "<!-- shell: another machine -->"
_INLINE = re.compile(r"`((?:python3?|pip3?|\.venv[\w-]*/bin/\S+|bash) [^`]*)`")
_RUNS_PYTHON = re.compile(r"^(?:python3?|pip3?|\S*/bin/\S+)\b")


def _shell_lines(text: str) -> list[tuple[int, str, bool]]:
    """`(line number, command, on another machine)` of a page's shell lines: those of ```bash blocks and of
    indented code blocks outside fences (a line ending in a backslash joined with the next), and inline code
    spans that start with an interpreter, pip or bash."""
    found: list[tuple[int, str, bool]] = []
    lines = text.splitlines()
    fence, elsewhere, pending = None, False, ""
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is not None:
            if fence == "bash" and line.strip():
                found.append((number, line.strip(), False))
            continue
        before = lines[number - 2] if number > 1 else ""
        if line.startswith("    ") and line.strip() and (not before.strip() or before.startswith("    ")):
            if not before.strip():  # a block starts: is it marked for another machine?
                previous = [x for x in lines[: number - 1] if x.strip()]
                elsewhere = bool(previous) and previous[-1].strip() == ANOTHER_MACHINE
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip() + " "
            else:
                found.append((number, pending, elsewhere))
                pending = ""
            continue
        found += [(number, span, False) for span in _INLINE.findall(line)]
    return found


def _commands(line: str) -> list[str]:
    """The commands of a shell line (split at `&&`, `||`, `;` and `|`), each stripped of a trailing comment."""
    return [part.strip() for part in re.split(r"&&|\|\||;|\|", line.split("  #")[0]) if part.strip()]


def _convention_problems(name: str, text: str) -> tuple[list[str], int]:
    """What breaks the pages' one convention in a page's shell lines, and how many commands run python or pip.

    The convention: the quick start's virtual environment, activated, where `python` and `pip` are its own. A
    page that runs them says so (`. .venv/bin/activate`) before its first such line; no line reaches into
    `.venv/bin/` (the other convention), and `python3` only creates an environment (or runs on another machine,
    in a block marked so).
    """
    problems, checked = [], 0
    first_activation = text.find(ACTIVATE)
    for number, line, elsewhere in _shell_lines(text):
        for command in _commands(line):
            if elsewhere or not _RUNS_PYTHON.match(command):
                continue
            checked += 1
            where = f"{name}:{number}: {command!r}"
            if command.startswith(".venv/bin/"):
                problems.append(f"{where} reaches into .venv/bin/; activate it ({ACTIVATE}) and call python/pip")
            elif command.startswith("python3") and not command.startswith("python3 -m venv "):
                problems.append(f"{where} runs python3 outside a virtual environment; use the activated python")
            elif command.split()[0] in ("python", "pip") and not (
                0 <= first_activation < len("\n".join(text.splitlines()[:number]))
            ):
                problems.append(f"{where} comes before the page says to activate the environment ({ACTIVATE})")
    return problems, checked


@pytest.mark.datasets_independent("the pages' text")
def test_every_shell_line_runs_in_the_activated_environment():
    problems, checked = [], 0
    for page in PAGES:
        found, count = _convention_problems(page.relative_to(REPO).as_posix(), page.read_text(encoding="utf-8"))
        problems, checked = problems + found, checked + count
    assert not problems, "\n".join(problems)
    assert checked > 20, checked  # the pages' commands were found


@pytest.mark.datasets_independent("the check's own cases")
def test_lines_out_of_convention_are_caught():
    """The check above on a page that breaks the convention every way (so that it can fail), and on a block marked
    for another machine, whose lines it leaves alone."""
    page = (
        "Run:\n\n```bash\n.venv/bin/python push.py --sample\n```\n\nthen `python3 push.py` and\n\n    pip install x\n"
    )
    lines = [(n, c) for n, line, _ in _shell_lines(page) for c in _commands(line)]
    assert lines == [(4, ".venv/bin/python push.py --sample"), (7, "python3 push.py"), (9, "pip install x")]
    problems, checked = _convention_problems("page", page)
    assert checked == 3 and [p.split(": ", 2)[0] for p in problems] == ["page:4", "page:7", "page:9"], problems
    assert _convention_problems("page", f"{ACTIVATE}\n\n    pip install x\n") == ([], 1)
    marked = f"x\n\n{ANOTHER_MACHINE}\n\n    python3 -c 1 &&\n    python3 -m a \\\n      --b\n"
    assert _shell_lines(marked) == [(5, "python3 -c 1 &&", True), (7, "python3 -m a --b", True)]
    assert _convention_problems("page", marked) == ([], 0)


@pytest.mark.datasets_independent("the pages' text and pyproject.toml")
def test_the_torch_line_gets_the_cpu_build():
    """PyPI's torch wheel for Linux x86_64 is the CUDA build; the pages give the CPU index's line, the one push.py's
    hint prints, say what the plain line installs, and that only the line's text is checked here (that index
    cannot be reached from this machine). Every torch install line of the pages names that index."""
    version = re.search(r"torch==([\w.]+)", TORCH_CPU_INSTALL)[1]
    assert TORCH_CPU_INSTALL.endswith("--index-url https://download.pytorch.org/whl/cpu")
    for page in (REPO / "README.md", REPO / "docs" / "training.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert TORCH_CPU_INSTALL in text, page.name
        assert (
            f"A plain `pip install torch=={version}` takes PyPI's wheel, which on Linux x86_64 is the CUDA build"
            in text
        )
        assert "only the line's text is checked" in text, page.name
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, line, _ in _shell_lines(text):
            for command in _commands(line):
                plain = f"A plain `{command}`" in " ".join(text.split())  # named to say what it installs
                if re.match(r"pip3? install .*\btorch\b(?!data)", command) and "-e " not in command and not plain:
                    assert command == TORCH_CPU_INSTALL, f"{page.name}:{number}: {command}"
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["torch"]
    assert Version(version) in SpecifierSet(extra[0].removeprefix("torch")), (version, extra)
    assert TORCH_CPU_INSTALL in " ".join(
        line.lstrip("# ") for line in (REPO / "pyproject.toml").read_text().splitlines() if line.startswith("#")
    )


#: The tables of docs/benchmarks.md that quote a results file: {file: (its section, {a row's start: its key})}
TABLES = {
    "training": (
        "## The training feeds",
        {
            "(d) ": "d_dataloader_2_workers",
            "(d') ": "d_aug_dataloader_2_workers_augmented",
            "(f) ": "f_iris_loader_2_threads",
            "(g) ": "g_iris_loader_augmented",
            "(f, wire) ": "f_wire_iris_loader_wire_format",
            "(h) ": "h_copy_limit_1_thread",
        },
    ),
    "streaming": (
        "## Streaming",
        {
            "(s) ": "s_streaming_1_thread",
            "(s') ": "s_shuffled_streaming_1_thread",
            "(s2) ": "s2_shuffled_streaming_2_threads",
            "(m) ": "m_map_style_1_thread",
            "(l) ": "l_decode_limit",
            "(r) ": "r_stream_read_only",
        },
    ),
    "dataset": (
        "## IrisDataset on shared cores",
        {
            "`torch.set_num_threads(1)`": "one_thread",
            "torch's default threads (2)": "default",
            "torch's default threads beside": "default_busy",
            "the former torch ops": "torch_ops_busy",
        },
    ),
}


def _run(name: str) -> dict:
    return json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text())


def _load_range(run: dict) -> str:
    """The 1-minute load averages of a run (before and after each feed and round), as the pages quote them."""
    loads: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "load_average":
                    loads.extend(value[0::3])
                elif key == "rounds_load_average":
                    loads.extend(x for each in value for x in each[0::3])
                else:
                    walk(value)

    walk(run["results"])
    return f"{min(loads):.1f}-{max(loads):.1f}"


@pytest.mark.datasets_independent("the pages' text and the results files")
@pytest.mark.parametrize("name", list(TABLES))
def test_the_benchmark_tables_quote_their_dated_run(name):
    """Each table of docs/benchmarks.md quotes the run its results file holds: every rate, and the run's date and
    load range in the text above it."""
    heading, table = TABLES[name]
    run, text = _run(name), (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ")]
    for start, key in table.items():
        found = [rate.strip() for label, rate in rows if label.strip().startswith(start)]
        result = run["results"][key]
        rate = result.get("samples_per_s", result.get("items_per_s"))
        assert found == [f"{round(rate):,}"], (name, start, found, rate)
    section = " ".join(section.split())
    assert f"the run of {run['date']}" in section, heading
    if name != "dataset":  # its load is `uptime`'s, quoted as such
        assert f"load average {_load_range(run)} during the run" in section, _load_range(run)


@pytest.mark.datasets_independent("the pages' text and the results files")
def test_the_pages_quote_one_ratio_of_irisloader_over_a_dataloader():
    """README.md, docs/training.md and docs/benchmarks.md quote IrisLoader's speed over a DataLoader from one run:
    benchmarks/results/training.json's, with its date and load; no other ratio stands beside it."""
    run = _run("training")
    ratio = f"{run['goals']['f_over_d']['measured']:.1f}x"
    for page in ("README.md", "docs/training.md", "docs/benchmarks.md"):
        text = " ".join((REPO / page).read_text(encoding="utf-8").split())
        quoted = re.findall(r"(\d+(?:\.\d+)?x) as fast", text) + re.findall(r"about (\d+x)", text)
        quoted += re.findall(r"(\d+(?:\.\d+)?x) the 2-worker DataLoader", text)
        assert quoted and set(quoted) == {ratio}, (page, quoted, ratio)
        assert f"{run['date']}" in text and f"load {_load_range(run)}" in text, page
