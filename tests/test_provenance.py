"""The card's provenance follows the data, not the flag: the synthetic sample is told by its marker and its footers.

`python -m openeds.synthetic RAW` then `push.py --data-dir RAW` must not call the sample OpenEDS, however
the shards came to be: built now, skipped as already complete, built before the marker existed, kept on
the Hub; and a card listing synthetic and real splits side by side names the synthetic ones.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi

from openeds import card
from openeds.parquet import provenance_of
from openeds.synthetic import MARKER, write_sample
from push import push

pytestmark = pytest.mark.datasets_independent("the card's wording and the footers' provenance: our code decides them")

SMALL = {"train": 2, "validation": 1, "test": 1}
SAMPLE_CARD = "pretty_name: OpenEDS precomputed (v2), synthetic sample"
#: what only a card of real OpenEDS data says (unqualified)
OPENEDS_ONLY = ("The images and labels come from OpenEDS", "Source: a local copy of OpenEDS")


@pytest.fixture(scope="module")
def marked(tmp_path_factory) -> Path:
    """The small sample as the generator writes it: a marker in each split folder (not to modify)."""
    return write_sample(tmp_path_factory.mktemp("marked"), SMALL)


def unmarked(tree: Path, to: Path) -> Path:
    """A copy of `tree` without the sample's markers: the same frames, nothing that tells they are synthetic."""
    shutil.copytree(tree, to)
    for marker in to.rglob(MARKER):
        marker.unlink()
    return to


def card_text(folder: Path) -> str:
    return (folder / "README.md").read_text(encoding="utf-8")


def footers(folder: Path) -> dict[str, dict]:
    """Each shard's provenance footer entry, by path."""
    return {p.relative_to(folder).as_posix(): provenance_of(pq.read_metadata(p)) for p in folder.rglob("*.parquet")}


def assert_synthetic(text: str) -> None:
    assert SAMPLE_CARD in text and "**Synthetic sample, not real OpenEDS data.**" in text
    assert "This build holds no OpenEDS images or labels" in text
    for claim in OPENEDS_ONLY:
        assert claim not in text, claim


def assert_openeds(text: str) -> None:
    assert "synthetic" not in text.split("## Configs")[0].lower(), "the title or the introduction says synthetic"
    assert "The images and labels come from OpenEDS" in text


def test_the_sample_is_the_sample_whichever_flag_builds_or_reuses_it(tmp_path, capsys):
    """The issue's run: --sample, then --data-dir on `python -m openeds.synthetic RAW` (nothing rebuilt), then on a
    copy that lost its markers (the shards' footers still tell)."""
    out = tmp_path / "out"
    push(sample=True, local_dir=out, upload=False)
    assert_synthetic(card_text(out))
    assert footers(out) and all(entry == {"synthetic": True} for entry in footers(out).values())
    raw = write_sample(tmp_path / "RAW")  # what `python -m openeds.synthetic RAW` writes
    capsys.readouterr()
    push(data_dir=raw, local_dir=out, upload=False)
    assert capsys.readouterr().out.count("already complete") == 3  # nothing rebuilt
    text = card_text(out)
    assert_synthetic(text)
    assert "- Source: the synthetic sample of `openeds.synthetic` (a folder given with `--data-dir`)" in text
    push(data_dir=unmarked(raw, tmp_path / "copy"), local_dir=out, upload=False)
    assert_synthetic(card_text(out))


def test_shards_without_the_footer_entry_are_told_by_the_raw_split_they_match(marked, tmp_path, capsys):
    """Shards built from frames nothing marked (as before the markers) say OpenEDS: nothing tells otherwise. Checked
    against the marked sample, the same frames by their records, they are the sample, rebuilt or not."""
    out = tmp_path / "out"
    push(data_dir=unmarked(marked, tmp_path / "copy"), local_dir=out, upload=False, config="all")
    assert all(entry == {} for entry in footers(out).values())
    assert_openeds(card_text(out))
    capsys.readouterr()
    push(data_dir=marked, local_dir=out, upload=False, splits=["test"])  # the other splits and `full` checked only
    assert "already complete" not in capsys.readouterr().out  # rebuilt, once, to say it in its footer
    assert footers(out)["data/test-00000-of-00001.parquet"] == {"synthetic": True}
    assert footers(out)["full/test-00000-of-00001.parquet"] == {}  # not rebuilt: the marked raw split tells
    text = card_text(out)
    assert_synthetic(text)
    assert "`full` train" not in text  # "all synthetic" names no split


def test_a_folder_of_sample_and_real_splits_is_partly_synthetic_and_names_the_sample_ones(marked, tmp_path):
    """A split from the sample beside one from data nothing marks: the card is "partly synthetic", names the sample's
    splits, and keeps the OpenEDS terms for the others."""
    raw = Path(shutil.copytree(marked, tmp_path / "raw"))
    other = unmarked(write_sample(tmp_path / "other", SMALL, seed=7), tmp_path / "other-copy")  # other frames
    test = raw / "openEDS" / "openEDS" / "test"
    shutil.rmtree(test)
    shutil.copytree(other / "openEDS" / "openEDS" / "test", test)
    out = tmp_path / "out"
    push(data_dir=raw, local_dir=out, upload=False)
    text = card_text(out)
    assert "pretty_name: OpenEDS precomputed (v2), partly synthetic" in text
    assert "# OpenEDS, precomputed (v2.0.0): partly synthetic" in text
    assert "not real OpenEDS data: `pupil` train, `pupil` validation." in text.replace("\n", " ")
    assert "`pupil` test" not in text
    assert "The images and labels of every split but the synthetic ones named above come from OpenEDS" in text
    assert footers(out) == {
        "data/train-00000-of-00001.parquet": {"synthetic": True},
        "data/validation-00000-of-00001.parquet": {"synthetic": True},
        "data/test-00000-of-00001.parquet": {},
    }


def test_a_hub_repo_keeps_its_splits_provenance(hub, marked, tmp_path):
    """Splits kept on the Hub are told by their footers (read from the repo), or by the marked raw split they were
    checked against; the card of each publication says what the repo then holds."""
    hub.add_token("hf_provenance", "alice", write={"alice"})
    api, repo = HfApi(token="hf_provenance"), f"alice/provenance-{uuid.uuid4().hex[:8]}"
    copy = unmarked(marked, tmp_path / "copy")

    def published(**kwargs) -> str:
        push(repo_id=repo, api=api, **kwargs)
        return api.hf_hub_download(repo, "README.md", repo_type="dataset", local_dir=tmp_path / "card")

    # 1. frames nothing marks: OpenEDS, footers without the entry
    assert_openeds(Path(published(data_dir=copy, local_dir=tmp_path / "a")).read_text())
    # 2. the test split rebuilt from the marked sample: train and validation, kept, match the marked raw splits
    assert_synthetic(Path(published(data_dir=marked, local_dir=tmp_path / "a", splits=["test"])).read_text())
    # 3. validation rebuilt from the unmarked copy into a new folder: test is told by its footer, train by nothing
    text = Path(published(data_dir=copy, local_dir=tmp_path / "b", splits=["validation"])).read_text()
    assert "partly synthetic" in text and "not real OpenEDS data: `pupil` test." in text.replace("\n", " ")
    assert "`pupil` train" not in text and "`pupil` validation" not in text


@pytest.mark.parametrize("source", [card.Source("sample"), card.Source("local"), card.Source("kaggle", "a/b")])
def test_the_card_says_what_the_data_is_whatever_the_source(source):
    sizes = {
        "pupil": {"train": card.SplitSize(2, 10), "test": card.SplitSize(1, 5)},
        "full": {"train": card.SplitSize(2, 9)},
    }
    every = {(c, s) for c, splits in sizes.items() for s in splits}

    def render(synthetic) -> str:
        return str(card.render_card(sizes, repo_id="a/b", source=source, synthetic=synthetic, command="push.py"))

    assert_synthetic(render(every))
    some = render({("full", "train")})
    assert "partly synthetic" in some and "not real OpenEDS data: `full` train." in some.replace("\n", " ")
    assert "`pupil` train" not in some and "The images and labels come from OpenEDS" not in some
    if source.kind != "sample":  # the sample's own source line says synthetic; the others say nothing of it
        assert_openeds(render(()))
