"""Every Python block of README.md and docs/*.md runs as written, so a renamed function fails here
instead of misleading a reader.

The blocks run in a folder laid out as a reader's would be after the quick start: `RAW/` (the
synthetic sample in the Kaggle layout) and `out/` (`push.py --sample --local-dir out --no-upload`),
with `Conner/openeds-precomputed` served by the local test Hub (the sample published there). Each
block runs in a namespace of its own: a block must bring its own imports. The card's "Loading fast"
snippets are run by tests/test_push.py.
"""

from __future__ import annotations

import gc
import re
import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from openeds.synthetic import write_sample
from push import DEFAULT_REPO_ID, push

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
    # RAW is the same sample as out's: staged from a copy of out, push skips its complete shards (byte-identical
    # to a fresh build) and publishes them, rather than building the sample a second time.
    shutil.copytree(folder / "out", folder / "staging")
    push(data_dir=folder / "RAW", local_dir=folder / "staging", repo_id=DEFAULT_REPO_ID, api=HfApi(token=TOKEN))
    yield folder
    hub_server._repos.pop(DEFAULT_REPO_ID, None)


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS])
def test_python_block_runs(page: str, line: int, code: str, reader_folder: Path, monkeypatch):
    monkeypatch.chdir(reader_folder)
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code, f"{page}:{line}", "exec"), namespace)
    namespace.clear()
    gc.collect()  # no stream outlives the block (pyarrow can abort at exit on one left open)
