"""Build OpenEDS v2 from the raw Kaggle data and publish it to the Hugging Face Hub.

Examples (from the repo root, in its virtual environment, activated: `. .venv/bin/activate`; see README.md)::

    # See the whole job on a synthetic sample, no credentials needed:
    python push.py --sample --local-dir out --no-upload

    # Materialise the real data locally, then look at it with load_dataset("out"):
    python push.py --data-dir RAW --local-dir out --no-upload

    # Build and publish (token from HF_TOKEN or `hf auth login`; endpoint from HF_ENDPOINT):
    python push.py --data-dir RAW --repo-id Conner/openeds-precomputed --config all

    # Add or replace only the test split; the other splits are neither rebuilt nor re-uploaded:
    python push.py --data-dir RAW --splits test

    # Publish the synthetic sample to a repo of your own (never to the default repo):
    python push.py --sample --repo-id me/openeds-sample

Credentials, read only from the environment or the clients' own login, never printed:
  Hugging Face (to publish): HF_TOKEN, else the token of `hf auth login`; HF_ENDPOINT picks the Hub.
  Kaggle (to download): `kaggle auth login`, KAGGLE_API_TOKEN, ~/.kaggle/access_token,
  KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json; the dataset's terms accepted on its page.
--no-upload with --data-dir or --sample needs neither.

Without --data-dir or --sample, the raw data is downloaded from Kaggle once and cached.
Re-running any command is safe: finished shards are reused, an interrupted upload sends
only what the Hub does not have yet, and data the Hub already holds is not published again.
Each shard's size and sha256 are recorded as it is written, in the folder's bookkeeping folder
.openeds/ (never uploaded); a reused shard is checked against that record, by a read when the
run does not publish, else by the hash the upload computes: one that changed since is rebuilt,
never published.

The local folder (--local-dir) never describes data built from inputs that have since changed.
Each run checks the splits the folder holds but does not rebuild (another config, other
splits) against the raw data as it is now, by the build records in their shards (input
hashes and versions). A split built from other files or versions, or whose raw split is gone,
is removed and left out of the card, with one line naming it and the command that rebuilds
it. A --local-dir inside the raw data, or raw data inside the --local-dir, is refused.

What a publication changes on the Hub: the shards of the splits it builds, the previews and
the card. Files it did not write (your notes, other data) stay, and the run names them. The
card (README.md) is replaced only if this tool wrote it and nobody edited it since (a checksum
line at its end tells); a card you wrote or edited on the Hub stops the run before anything is
built, so that its text is not lost: copy what you want to keep, then re-run with
--replace-card (the replaced card stays readable at its revision, which the run names).

The Hub's card never describes data built from inputs that have since changed either. The splits
the repo holds that a publication does not rebuild (another config, other splits) are checked
against the raw data as it is now, before anything is built, by the build records in their shards'
footers (read with ranged requests). A split built from other files, frames or versions stops the
run with one line naming it, why, and the one command that rebuilds it with what the run builds
(e.g. --config all); the Hub is left as it was: nothing is published for a config you did not ask
for, and nothing published is deleted unasked. A split that cannot be checked is kept, listed by
the card, and named in a warning line: its shards carry no build record (published by a version
of this tool before the records, or by another tool), or the raw data lacks its split.

Access and tags are checked before anything is fetched or built too: a gated repo you may not
read, a repo you may read but not write, a namespace that is not yours or one of your
organizations, and a --tag the repo already has on another commit. A --tag that names the head
already is taken only by a re-run that publishes nothing new (checked once the raw data is listed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import HfApi

from openeds import card, cli, disk, download, hub, layout, lock, preview, provenance, raw, records, schema, stages
from openeds.download import folder_path  # --data-dir, --local-dir, as download's --cache-dir
from openeds.materialize import (
    DEFAULT_MAX_SHARD_BYTES,
    MaterializeError,
    folder_splits,
    hash_inputs,
    is_complete,
    local_sizes,
    materialize,
    read_shard,
    stale_reason,
)
from openeds.names import shown
from openeds.retry import DEFAULT_RETRY_TIMEOUT, DEFAULT_TIMEOUT, RetryPolicy, add_retry_argument
from openeds.synthetic import MARKER, write_sample

DEFAULT_REPO_ID = "Conner/openeds-precomputed"
#: Why `--sample` without `--repo-id` does not publish (printed when it happens).
SAMPLE_NOT_PUBLISHED = (
    f"not publishing: --sample without --repo-id materialises only, as with --no-upload; synthetic frames are "
    f"never published to {DEFAULT_REPO_ID}; pass --repo-id YOU/NAME to publish the sample to a repo of your own"
)


#: The line that installs torch's CPU build. PyPI's wheel of the same version for Linux x86_64 is the CUDA build,
#: with several GB of CUDA libraries; PyTorch publishes the CPU wheels on an index of its own. README.md and
#: docs/training.md give this line (tests/test_docs.py), which could not be run here: no network but PyPI.
TORCH_CPU_INSTALL = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
_REPO = Path(__file__).resolve().parent
_EXAMPLE = _REPO / "examples" / "train_tiny.py"


@dataclass(frozen=True)
class Summary:
    sizes: dict[str, dict[str, card.SplitSize]]
    local_dir: Path
    published: hub.PublishResult | None
    seconds: float
    #: the command that publishes what the run materialised without publishing (None: it published)
    publish_command: str | None = None

    def lines(self) -> list[str]:
        out = []
        for config, splits in self.sizes.items():
            for split, size in splits.items():
                per_row = size.parquet_bytes / max(size.rows, 1) / 1e6
                out.append(f"  {config:5s} {split:10s} {size.rows:7,d} rows  {per_row:5.2f} MB/row")
        out.append(f"  local folder: {shown(self.local_dir)}")
        if self.published:
            out.append(f"  published: {self.published.line()}")
        out.append(f"  time: {self.seconds:.1f} s")
        out.extend(self.next_steps())
        return out

    def next_steps(self, *, torch: bool | None = None) -> list[str]:
        """What to do next, a line each, every command as it runs from here: load it, train on it, publish it.

        Training needs torch: with ``torch`` False (default: whether this interpreter finds it, without importing
        it) the line says to install its CPU build first. The publish line is :attr:`publish_command`.
        """
        where = self.published.repo_id if self.published else str(self.local_dir)
        lines = [f"next: load it: datasets.load_dataset({where!r})"]
        if _EXAMPLE.is_file():
            train = f"{shlex.quote(_python())} {shlex.quote(_from_here(_EXAMPLE))} {shlex.quote(where)}"
            if torch is None:
                torch = importlib.util.find_spec("torch") is not None
            if not torch:
                python = shlex.quote(_python())
                train = f"install torch first, its CPU build: {python} -m {TORCH_CPU_INSTALL}; then: {train}"
            lines.append(f"next: train on it: {train}")
        if self.publish_command:
            lines.append(f"next: publish it: {self.publish_command} (YOU/NAME: a dataset repo of your own)")
        return lines


def _python() -> str:
    """This interpreter as a command typed here: ``python`` when that finds it (an activated virtual environment),
    else its path (relative to the current folder when inside it)."""
    found = shutil.which("python")
    if found and Path(os.path.abspath(found)).parent == Path(os.path.abspath(sys.executable)).parent:
        return "python"
    return _from_here(Path(sys.executable))


def _from_here(path: Path) -> str:
    """``path`` as typed in the current folder: relative when inside it, else absolute (links not resolved)."""
    path = Path(os.path.abspath(path))
    return path.relative_to(Path.cwd()).as_posix() if path.is_relative_to(Path.cwd()) else str(path)


def _resolve_raw(
    *,
    sample: bool,
    data_dir: Path | None,
    kaggle_dataset: str | None,
    cache_dir: Path | None,
    scratch: Path,
    retry: RetryPolicy,
) -> tuple[Path, card.Source]:
    """The raw data folder and where it came from (for the card)."""
    if sample:
        stages.now(f"writing the synthetic sample into the temporary folder {shown(scratch)}")
        return write_sample(scratch / "sample"), card.Source("sample")
    if data_dir:
        return data_dir, card.Source("local")
    slug = kaggle_dataset or download.DEFAULT_SLUG
    stages.now(f"downloading the raw data {slug} from Kaggle")
    return download.fetch_raw(slug, cache_dir, retry=retry), card.Source("kaggle", slug)


def default_local_dir(repo_id: str) -> Path:
    """The staging folder of `repo_id` under the download cache."""
    return download.default_cache_dir() / "staging" / repo_id.replace("/", "--")


def push(
    *,
    data_dir: Path | None = None,
    sample: bool = False,
    kaggle_dataset: str | None = None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
    upload: bool = True,
    repo_id: str = DEFAULT_REPO_ID,
    tag: str | None = None,
    config: str = schema.DEFAULT_CONFIG,
    splits: Sequence[str] | None = None,
    num_proc: int = 1,
    max_shard_size: int = DEFAULT_MAX_SHARD_BYTES,
    on_missing_label: raw.MissingLabelPolicy = "error",
    command: str = "python push.py",
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    api: HfApi | None = None,
    replace_card: bool = False,
) -> Summary:
    """Materialise the asked configs and splits into `local_dir`, then publish them to `repo_id`.

    Raw data comes from `data_dir`, the synthetic sample (`sample`), or else the Kaggle dataset
    `kaggle_dataset` cached under `cache_dir`. `config` is `pupil`, `full` or `all`; `splits`
    defaults to every split present. `command` is recorded in the card. `retry_timeout` bounds the
    retries of transient server errors, Hub and Kaggle alike, in seconds (an unreachable network:
    the smaller of it and 60 s); `timeout` bounds each wait of each request of both clients (to
    connect, for the next data), so a server that stops answering is such an error too. `api` is
    the seam for the Hub client (default `HfApi()`).
    `replace_card`: replace the Hub's card even if a person wrote or edited it (`hub.check_card`).

    When uploading, the token is looked for first, before any build or request, and the Hub is
    read (`hub.connect`: the token's rights, the repo's files and card) before the raw data is
    fetched or built, so a bad repo id or tag, a bad token, a gated repo, a repo the user may not
    write, a tag the repo has on another commit, a card written by hand or an unreachable Hub costs
    seconds, not a build. Once the raw data is listed, and still before the build, the remote splits
    the run keeps are checked against it (`hub.check_kept`: a stale one stops the run, one that
    cannot be checked is named) and a `tag` naming the head already is refused unless the run can
    only confirm that publication (`hub.check_tag_at_head`). v1 data the repo holds, found by its
    content wherever it sits, is converted (tagged `v1`, removed from `main`; stderr names every
    file, `hub.conversion_notes` and `hub.split_notes`) or refused after `connect`
    (`openeds.hub.conversion`). The sample
    is never published to `DEFAULT_REPO_ID`; data the repo already holds is not published again
    (`summary.published.changed` is False).

    `local_dir` may not be inside the raw data nor hold it (checked before the folder is touched, symbolic
    links resolved; from Kaggle, the raw data is the slug's folder of the download cache). Its complete splits that
    this run does not rebuild are checked against the raw data before anything is written (see
    `materialize.stale_reason`); the stale ones are removed once the new card, which leaves them
    out, is written, with one line each on stderr naming them and the command that rebuilds them.
    """
    start = time.monotonic()
    configs = list(schema.CONFIG_NAMES) if config == "all" else [schema.check_config(config)]
    retry = RetryPolicy(total=retry_timeout, timeout=timeout)
    given_local_dir, asked_config, asked_splits = local_dir, config, list(splits) if splits else None
    local_dir = Path(local_dir or default_local_dir(repo_id)).expanduser()
    if upload:
        if sample and repo_id == DEFAULT_REPO_ID:
            raise hub.PublishError(
                f"refusing to publish the synthetic sample to {DEFAULT_REPO_ID}, the real dataset; "
                "expected a repo of your own for a sample; pass another repo_id, or upload=False"
            )
        hub.check_repo_id(repo_id)
        if tag is not None:
            hub.check_tag(tag)
        api = api or HfApi()
        token = hub.require_token(api, repo_id)  # no network: a missing token is said before anything else
        # The remote is read once, here: its listing sizes the splits this run keeps (every one it
        # holds, listed in its card or not), its card and file hashes tell whether anything
        # changed, and the commit is pinned to its head (a head moved during the build is refused).
        stages.now(f"reading {repo_id} on the Hub {api.endpoint}")
        remote = hub.connect(api, repo_id, token=token, retry=retry)
        hub.check_card(repo_id, remote, replace_card=replace_card)  # a card written by hand: said before the build
        hub.check_tag_free(repo_id, remote, tag)  # a --tag naming another commit: likewise
        if remote.v1_files:  # v1 data, found by its content: converted, or refused here before any build
            hub.check_v1_head(repo_id, remote)
            if splits or schema.DEFAULT_CONFIG not in configs:
                # (without --splits, the splits are those of the raw data: publish checks them)
                hub.refuse_mixing(repo_id, remote, {c: list(splits or ()) for c in configs})
            hub.check_v1_tag(api, repo_id, remote, token=token, retry=retry)
            for note in hub.conversion_notes(repo_id, remote):
                print(note, file=sys.stderr)
    stages.now(f"checking the staging folder {shown(local_dir)}")
    if not sample:  # the sample lives in a temporary folder of its own
        _refuse_overlap(local_dir, _raw_area(data_dir, kaggle_dataset, cache_dir))
    # A folder that is a file, cannot be written or is in use by another run ends the run here,
    # before any download or build work.
    with _staging(local_dir), tempfile.TemporaryDirectory(prefix="openeds-") as scratch:
        raw_dir, source = _resolve_raw(
            sample=sample,
            data_dir=data_dir,
            kaggle_dataset=kaggle_dataset,
            cache_dir=cache_dir,
            scratch=Path(scratch),
            retry=retry,
        )
        stages.now(f"listing the raw data in {shown(raw_dir)}")
        split_dirs = raw.find_split_dirs(raw_dir)
        splits = list(splits or split_dirs)
        missing = [s for s in splits if s not in split_dirs]
        if missing:
            raise raw.RawDataError(
                f"--splits {' '.join(missing)} not found under {shown(raw_dir)}; the data has {', '.join(split_dirs)}"
            )
        for note in raw.check_disjoint(split_dirs):
            print(note, file=sys.stderr)
        marked = provenance.marked_splits(split_dirs)  # the synthetic sample's splits, whatever flag named them
        if upload and repo_id == DEFAULT_REPO_ID and marked & set(splits):  # before anything is built
            _refuse_synthetic(sorted(marked & set(splits), key=schema.SPLITS.index), f"{MARKER} in their folders")
        listings: dict[str, list[raw.Pair]] = {}
        for split in splits:
            listing = raw.list_pairs(split_dirs[split], on_missing_label)
            for note in listing.notes(split):
                print(note, file=sys.stderr)
            listings[split] = listing.pairs
        pairs = {(c, split): listings[split] for c in configs for split in splits}
        # The splits the folder holds that this run does not rebuild: kept only if built from the raw
        # data as it is now (checked before anything is written; a damaged shard stops the run here).
        stages.now(f"checking the splits {shown(local_dir)} holds against the raw data")
        digests: dict[raw.Pair, str] = {}
        # Not publishing, the folder is what a user loads: its kept splits' bytes are read and checked too.
        check = _check_folder(local_dir, split_dirs, listings, set(pairs), on_missing_label, digests, reread=not upload)
        splits_by_config = {c: splits for c in configs}
        rebuild = _rebuild_command(
            sample=sample,
            data_dir=data_dir,
            kaggle_dataset=kaggle_dataset,
            cache_dir=cache_dir,
            local_dir=given_local_dir,
            upload=upload,
            repo_id=repo_id,
            on_missing_label=on_missing_label,
        )
        if upload:
            # Likewise the splits the repo holds that this run keeps, by the build records in their footers:
            # a stale one stops the run here, the Hub unchanged; one that cannot be checked is named.
            stages.now(f"checking the splits {repo_id} keeps against the raw data")
            for _, split in hub.kept_splits(remote, splits_by_config):
                _list_split(split_dirs, listings, split, on_missing_label, holder=repo_id)
            for note in hub.check_kept(
                api,
                repo_id,
                remote,
                rebuilt=splits_by_config,
                raw_splits=list(split_dirs),
                pairs=listings,
                digests=digests,
                rebuild=rebuild,
                token=token,
                retry=retry,
            ):
                print(note, file=sys.stderr)
            hub.check_tag_at_head(
                api,
                repo_id,
                remote,
                tag,
                rebuilt=splits_by_config,
                pairs=listings,
                digests=digests,
                token=token,
                retry=retry,
            )
            # A v1 split the raw data cannot rebuild, a split v1 lacked: said before the build.
            v2_splits = splits if schema.DEFAULT_CONFIG in configs else []
            for note in hub.split_notes(repo_id, remote, built=v2_splits, raw_splits=list(split_dirs)):
                print(note, file=sys.stderr)
        if not upload:
            # The folder is what a user loads: its card lists every current split it holds complete.
            kept = local_sizes(local_dir, skip={*pairs, *check.stale})
        stages.now(f"building the shards of {', '.join(f'{c}/{s}' for c, s in pairs)} in {shown(local_dir)}")
        # The frames to build are hashed here (materialize reuses the hashes): a frame of one split under another
        # name in another split is said before the build, among the splits this run hashes (docs/publishing.md).
        hash_inputs((pair for frames in pairs.values() for pair in frames), digests)
        for note in raw.same_frames(listings, digests):
            print(note, file=sys.stderr)
        # A shard found already complete is checked against the record of its bytes: by a read here when the
        # run does not publish; when it does, by the hash the upload computes anyway (`hub.publish`).
        built = materialize(
            pairs,
            local_dir,
            num_proc=num_proc,
            max_shard_bytes=max_shard_size,
            digests=digests,
            synthetic=marked,
            reread=not upload,
        )

        # Each config built draws its preview from the first of its splits; a config this run does not build
        # draws it again from its first current split when a stale one goes (its preview may show that one).
        for config in [*configs, *(c for c in check.redrawn if c not in configs)]:
            first = min(built[config] if config in built else check.current_splits(config), key=schema.SPLITS.index)
            shard = sorted(local_dir.glob(f"{layout.split_prefix(config, first)}*.parquet"))[0]
            stages.now(f"drawing the preview of {config} from {shown(shard)}")
            relpath = shard.relative_to(local_dir).as_posix()
            rows = read_shard(local_dir, relpath, lambda path, config=config: preview.preview_rows(path, config))
            with _writing(local_dir / layout.PREVIEW_PATHS[config]) as path:
                preview.render(rows, path)

        if upload:
            stages.now(f"reading the sizes of the splits {repo_id} keeps")
            kept = hub.kept_sizes(api, repo_id, remote, rebuilt=splits_by_config, token=token, retry=retry)
        sizes = {c: {**kept.get(c, {}), **built.get(c, {})} for c in schema.CONFIG_NAMES if c in {*kept, *built}}
        # Which of them are the synthetic sample, as the data tells: footers, and the raw splits' markers.
        local = built if upload else sizes
        synthetic = provenance.local_synthetic(local_dir, [(c, s) for c in local for s in local[c]], marked)
        if upload:
            kept_paths = hub.kept_splits(remote, splits_by_config)
            synthetic |= provenance.remote_synthetic(kept_paths, remote.footers, split_dirs, marked)
            if repo_id == DEFAULT_REPO_ID and synthetic:  # frames the footers say are the sample's; nothing published
                named = [f"{c}/{s}" for c, s in sorted(synthetic)]
                _refuse_synthetic(named, "as their shards' footers, or the marked raw splits they match, tell")
        # The card shows the previews the repo (or the folder) holds once this run is done.
        held = set(remote.files) if upload else {p for p in layout.PREVIEW_PATHS.values() if (local_dir / p).is_file()}
        previews = {c: layout.PREVIEW_PATHS[c] for c in sizes if c in configs or layout.PREVIEW_PATHS[c] in held}
        stages.now(f"writing the card {shown(local_dir / layout.CARD_PATH)}")
        text = str(
            card.render_card(
                sizes,
                repo_id=repo_id,
                source=source,
                synthetic=synthetic,
                command=command,
                previews=previews,
                v1_revision=upload and hub.has_v1_revision(remote),  # a folder's card names no revision
            )
        )
        with _writing(local_dir / layout.CARD_PATH) as readme:
            disk.write_atomically(readme, text.encode("utf-8"))
        # Removed after the new card is written, so that no card ever names shards the folder lacks.
        stages.now(f"removing the stale splits from {shown(local_dir)}")
        for note in _tidy(local_dir, check, rebuild, built=configs):
            print(note, file=sys.stderr)
        published = None
        if upload:
            stages.now(f"publishing to {repo_id}")
            published = hub.publish(
                local_dir,
                repo_id,
                splits_by_config=splits_by_config,
                api=api,
                token=token,
                tag=tag,
                retry=retry,
                remote=remote,
                replace_card=replace_card,
                raw_splits=list(split_dirs),
            )
    publish_command = None
    if not upload:  # the same build published: what this run materialised is reused as it is
        publish_command = _rebuild_command(
            sample=sample,
            data_dir=data_dir,
            kaggle_dataset=kaggle_dataset,
            cache_dir=cache_dir,
            local_dir=local_dir,
            upload=True,
            repo_id="YOU/NAME",
            on_missing_label=on_missing_label,
            program=(_python(), _from_here(_REPO / "push.py")),
        )(asked_config, asked_splits)
        if max_shard_size != DEFAULT_MAX_SHARD_BYTES:
            publish_command += f" --max-shard-size {max_shard_size}"
    return Summary(sizes, local_dir, published, time.monotonic() - start, publish_command)


def _refuse_synthetic(splits: Sequence[str], why: str) -> None:
    """The synthetic sample never goes to the real dataset's repo, whatever flag named it (`openeds.provenance`)."""
    raise hub.PublishError(
        f"refusing to publish the synthetic sample to {DEFAULT_REPO_ID}, the real dataset: {', '.join(splits)} "
        f"hold the frames of openeds.synthetic ({why}); expected real OpenEDS data for that repo; nothing was "
        f"published. Fix: pass --repo-id YOU/NAME to publish the sample to a repo of your own, or --no-upload"
    )


def _raw_area(data_dir: Path | None, kaggle_dataset: str | None, cache_dir: Path | None) -> list[tuple[Path, str]]:
    """The folders of the raw data, known before anything is fetched, each with how messages name it.

    From `--data-dir`: the folder holding the split folders and each split folder (one may be a link to
    elsewhere); a `--data-dir` above them (the folder holding `openEDS/`) may hold other things, a
    `--local-dir` among them. From Kaggle: the slug's folder of the download cache as
    `openeds.download.fetch_raw` lays it out (archive, extraction, `data/`), all of it rewritten by a download.
    """
    if data_dir is not None:
        split_dirs = raw.find_split_dirs(data_dir)
        base = next(iter(split_dirs.values())).parent
        return [(base, "the raw data"), *((folder, f"the raw {split} split") for split, folder in split_dirs.items())]
    slug = kaggle_dataset or download.DEFAULT_SLUG
    folder = Path(cache_dir or download.default_cache_dir()).expanduser() / slug.replace("/", "--")
    return [(folder, "the Kaggle download cache (--cache-dir) of the raw data")]


def _refuse_overlap(local_dir: Path, areas: Sequence[tuple[Path, str]]) -> None:
    """Refuse a staging folder inside the raw data, or raw data inside the staging folder (symbolic links resolved).

    Inside the raw data, the run's shards, card and preview would land among the raw files (a preview in
    `test/images/` is read as a frame by the next build); around it, the raw files would sit in the folder
    that is published as it is, and a run's clean-up of stale shards works there.
    """
    local = _resolved(local_dir)
    local_shown = f"--local-dir {shown(local_dir)}{_resolves_to(local_dir, local)}"
    for folder, what in areas:
        data = _resolved(folder)
        raw_shown = f"{what} {shown(folder)}{_resolves_to(folder, data)}"
        if local.is_relative_to(data):
            raise MaterializeError(
                f"{local_shown} is inside {raw_shown}; expected a staging folder apart from the raw data, since "
                f"the run writes its shards, card and preview picture there and the next build would read them as "
                f"raw files. Fix: pass a --local-dir outside {shown(data)}"
            )
        if data.is_relative_to(local):
            raise MaterializeError(
                f"{raw_shown} is inside {local_shown}; expected a staging folder apart from the raw data, since the "
                f"staging folder is published as it is and the run removes stale files from it. "
                f"Fix: pass a --local-dir that does not hold {shown(data)}"
            )


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: compare the paths as written
        return Path(os.path.abspath(path.expanduser()))


def _resolves_to(given: Path, resolved: Path) -> str:
    return "" if Path(os.path.abspath(given.expanduser())) == resolved else f" (which resolves to {shown(resolved)})"


class Stale(NamedTuple):
    """A split of the staging folder that is not what the raw data builds now."""

    why: str
    paths: list[str]
    #: the raw data has no such split any more
    gone: bool


@dataclass(frozen=True)
class FolderCheck:
    """The splits the staging folder holds that this run does not rebuild, as `_check_folder` found them."""

    #: complete splits built from the raw data as it is now: kept, and listed in the folder's card
    current: frozenset[tuple[str, str]]
    #: complete splits that are not: removed, with a line each
    stale: dict[tuple[str, str], Stale]
    #: shards of a split whose set is not complete (an unfinished build): left for the run that finishes it
    unfinished: dict[tuple[str, str], list[str]]

    def current_splits(self, config: str) -> list[str]:
        return [split for c, split in self.current if c == config]

    @property
    def redrawn(self) -> list[str]:
        """Configs whose preview is drawn again: some split went stale, another is current."""
        return sorted({c for c, _ in self.stale if self.current_splits(c)})


def _check_folder(
    local_dir: Path,
    split_dirs: dict[str, Path],
    listings: dict[str, list[raw.Pair]],
    rebuilt: set[tuple[str, str]],
    on_missing_label: raw.MissingLabelPolicy,
    digests: dict[raw.Pair, str],
    *,
    reread: bool,
) -> FolderCheck:
    """Sort the folder's splits that are not in `rebuilt` into current, stale and unfinished.

    A raw split not listed yet is listed here as a rebuild would (into `listings`), with the run's
    `on_missing_label`: its bad input is an error like any other, and nothing is written before it.
    With `reread`, a split current by its build records whose shards' bytes are not those recorded
    when they were written (`openeds.records`) is stale too.
    """
    current, stale, unfinished = set(), {}, {}
    for key, paths in folder_splits(local_dir).items():
        config, split = key
        if key in rebuilt:
            continue
        if not is_complete(config, split, paths):
            unfinished[key] = paths
            continue
        _list_split(split_dirs, listings, split, on_missing_label, holder=shown(local_dir))
        why = stale_reason(local_dir, config, split, listings.get(split), digests, reread=reread)
        if why is None:
            current.add(key)
        else:
            stale[key] = Stale(why, paths, gone=split not in split_dirs)
    return FolderCheck(frozenset(current), stale, unfinished)


def _list_split(
    split_dirs: dict[str, Path],
    listings: dict[str, list[raw.Pair]],
    split: str,
    on_missing_label: raw.MissingLabelPolicy,
    *,
    holder: str,
) -> None:
    """List the raw `split` into `listings` as a rebuild would, unless listed already or absent from the raw data.

    It is read because `holder` (the folder, the repo) holds a split built from it; its bad input is an error like
    any other, said with why a split the run was not asked to build is read at all.
    """
    if split in split_dirs and split not in listings:
        try:
            listings[split] = raw.list_pairs(split_dirs[split], on_missing_label).pairs
        except raw.RawDataError as e:
            raise raw.RawDataError(
                f"checking the {split} split that {holder} holds against its raw data: {e}"
            ) from None


def _rebuild_command(
    *,
    sample: bool,
    data_dir: Path | None,
    kaggle_dataset: str | None,
    cache_dir: Path | None,
    local_dir: Path | None,
    upload: bool,
    repo_id: str,
    on_missing_label: raw.MissingLabelPolicy,
    program: Sequence[str] = ("python", "push.py"),
) -> Callable[[str, Sequence[str] | None], str]:
    """`rebuild(config, splits)`: the command line that builds those splits of `config` (or `all`) from this run's
    raw data; `splits` None: every split it holds. `program`: the words that run push.py."""
    words = list(program)
    if sample:
        words.append("--sample")
    elif data_dir is not None:
        words += ["--data-dir", str(data_dir)]
    else:
        words += [
            *(["--kaggle-dataset", kaggle_dataset] if kaggle_dataset else []),
            *(["--cache-dir", str(cache_dir)] if cache_dir else []),
        ]
    words += ["--local-dir", str(local_dir)] if local_dir is not None else []
    words += ["--repo-id", repo_id] if upload else ["--no-upload"]
    words += ["--skip-unlabeled"] if on_missing_label == "skip" else []

    def rebuild(config: str, splits: Sequence[str] | None) -> str:
        argv = [*words, "--config", config, *(["--splits", *splits] if splits else [])]
        return " ".join(shlex.quote(word) if word.isprintable() else shown(word) for word in argv)

    return rebuild


def _tidy(
    local_dir: Path, check: FolderCheck, rebuild: Callable[[str, Sequence[str] | None], str], *, built: Sequence[str]
) -> list[str]:
    """Remove the stale splits (and the preview of a config left with none); one line each, and one per unfinished."""
    notes = []
    for (config, split), stale in sorted(check.stale.items()):
        for path in stale.paths:
            records.forget(local_dir, path)
            (local_dir / path).unlink(missing_ok=True)
        where = f", from raw data that holds {split}," if stale.gone else ""
        again = sorted((s for c, s in check.stale if c == config), key=schema.SPLITS.index)
        notes.append(
            f"{config}/{split}: removed its {len(stale.paths)} shard(s) from {shown(local_dir)}, since {stale.why}; "
            f"the folder's card no longer lists it. Rebuild it{where} with: {rebuild(config, again)}"
        )
    for config in sorted({c for c, _ in check.stale} - set(built)):
        if not check.current_splits(config):
            (local_dir / layout.PREVIEW_PATHS[config]).unlink(missing_ok=True)  # it showed rows of a removed split
    for (config, split), paths in sorted(check.unfinished.items()):
        notes.append(
            f"{config}/{split}: {shown(local_dir)} holds {len(paths)} of its shards, not the whole set (an unfinished "
            f"build), so the folder's card does not list it. Finish it with: {rebuild(config, [split])}"
        )
    return notes


#: where push.py writes temporary files in the staging folder (see openeds.layout)
_TEMPORARY_GLOBS = (
    ".*.partial",
    *(f"{folder}/.*.partial" for folder in layout.CONFIG_DIRS.values()),
    f"{Path(layout.PREVIEW_PATH).parent}/.*.partial",
    f"{layout.RECORDS_DIR}/**/.*.partial",
)


@contextmanager
def _staging(local_dir: Path) -> Iterator[None]:
    """Hold the staging folder's lock; the temporary files in it are then this run's or a dead run's.

    They are swept when the run starts (a killed run's) and when it ends, however it ends.
    """
    with lock.hold(local_dir, what="the staging folder", option="--local-dir", error=MaterializeError):
        _sweep_temporaries(local_dir)
        try:
            yield
        finally:
            _sweep_temporaries(local_dir)


def _sweep_temporaries(local_dir: Path) -> None:
    for pattern in _TEMPORARY_GLOBS:
        for path in local_dir.glob(pattern):
            path.unlink(missing_ok=True)


@contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """Turn a failed write of ``path`` (the preview, the card) into one line naming it."""
    try:
        yield path
    except OSError as e:
        if disk.is_disk_full(e):
            raise MaterializeError(
                f"the disk holding {shown(path)} is full ({e.strerror}) while writing it; the finished shards are kept "
                f"and the earlier {shown(path.name)}, if any, is unchanged. Fix: free some space or pass --local-dir "
                f"on a larger disk, then run the same command again"
            ) from None
        where = f" ({shown(e.filename)})" if e.filename and e.filename != str(path) else ""
        raise MaterializeError(
            f"cannot write {shown(path)}: {e.strerror or e}{where}; expected a writable --local-dir. "
            f"Fix: check the folder's permissions or pass another --local-dir"
        ) from None


#: `--max-shard-size`: a number (decimals allowed), optionally a unit; KB, MB, GB, TB are powers of 1000 as in
#: `push_to_hub(max_shard_size=...)`, KiB, MiB, GiB, TiB powers of 1024, B or no unit bytes
_SIZE_RE = re.compile(r"(?P<number>-?(?:\d+(?:\.\d+)?|\.\d+))\s*(?P<unit>[KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    **{f"{p}B": 1000 ** (i + 1) for i, p in enumerate("KMGT")},
    **{f"{p}IB": 1024 ** (i + 1) for i, p in enumerate("KMGT")},
}
_SIZE_FORM = "a size of 1 byte or more: a number with an optional unit, e.g. 500MB (the default), 1.5GB, 2GiB or 750000"


def byte_size(text: str) -> int:
    """`500MB`, `1.5GB`, `750KB`, `2GiB` or a plain number of bytes, for argparse: at least 1 byte.

    Written out rather than `datasets.utils.py_utils.convert_file_size_to_int`, which reads `500Mb`
    as megabits, takes negative sizes and refuses decimals. Anything else, `inf`, `nan`, `-5MB`, `0`
    or junk included, is an `argparse.ArgumentTypeError`: one usage line naming the value.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    # Fraction, not float: exact, and a number of 400 digits does not overflow to inf
    size = int(Fraction(match["number"]) * _SIZE_UNITS[(match["unit"] or "B").upper()]) if match else 0
    if size < 1:
        why = "is below 1 byte" if match else "is not a size"
        raise argparse.ArgumentTypeError(f"{text!r} {why}; expected {_SIZE_FORM}")
    return size


def tag_name(text: str) -> str:
    """`--tag`: a name the Hub takes as a git tag and this tool does not reserve (`hub.check_tag`)."""
    try:
        return hub.check_tag(text)
    except hub.PublishError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python push.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("raw data (one of; default: download from Kaggle)")
    source.add_argument("--data-dir", type=folder_path, metavar="RAW", help="the raw Kaggle OpenEDS folder")
    source.add_argument("--sample", action="store_true", help="use a small synthetic sample instead of real data")
    download.add_download_arguments(parser)
    parser.add_argument(
        "--local-dir",
        type=folder_path,
        metavar="OUT",
        help="folder to materialise into; it then holds exactly what goes to the Hub, and one bookkeeping "
        "folder, .openeds/, that is never uploaded (default: a staging folder under the cache)",
    )
    parser.add_argument(
        "--no-upload", dest="upload", action="store_false", help="materialise only; no credentials needed"
    )
    parser.add_argument(
        "--repo-id",
        default=None,
        metavar="ID",
        help=f"Hub dataset repo (default: {DEFAULT_REPO_ID}; with --sample it is needed to publish, "
        "and may not be the default)",
    )
    parser.add_argument(
        "--tag",
        type=tag_name,
        help="tag for this publication (default: `v2` the first time, then `v2.1`, `v2.2`, ...); "
        "`v1` is reserved for the v1 data of a converted repo; a tag the repo already has is "
        "refused before the build, unless it names the head and the run publishes nothing new",
    )
    parser.add_argument(
        "--replace-card",
        action="store_true",
        help="replace the Hub's README.md even if a person wrote or edited it (default: such a card "
        "stops the run before the build, so that its text is not lost)",
    )
    parser.add_argument(
        "--config",
        choices=[*schema.CONFIG_NAMES, "all"],
        default=schema.DEFAULT_CONFIG,
        help="which config to build (default: pupil, the config load_dataset(repo) loads)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=schema.SPLITS,
        metavar="SPLIT",
        help="splits to build and push, of train validation test (default: all present); "
        "the others stay as they are on the Hub",
    )
    parser.add_argument("--num-proc", type=int, default=1, metavar="N", help="processes building shards (default 1)")
    parser.add_argument(
        "--max-shard-size",
        type=byte_size,
        default=DEFAULT_MAX_SHARD_BYTES,
        metavar="SIZE",
        help="upper bound of a shard, e.g. 500MB (default)",
    )
    parser.add_argument(
        "--skip-unlabeled",
        dest="on_missing_label",
        action="store_const",
        const="skip",
        default="error",
        help="leave out images without a label (default: error)",
    )
    add_retry_argument(parser)
    cli.add_traceback_argument(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    # An empty value (an unset shell variable) would silently mean the default: the default repo or slug.
    # (An empty --tag is refused by its type, `tag_name`.)
    download.refuse_empty(parser, {"--repo-id": args.repo_id, "--kaggle-dataset": args.kaggle_dataset})
    conflicts = [
        (args.sample and args.data_dir, "--sample", "--data-dir"),
        ((args.sample or args.data_dir) and args.kaggle_dataset, "--kaggle-dataset", "--sample/--data-dir"),
        ((args.sample or args.data_dir) and args.cache_dir, "--cache-dir", "--sample/--data-dir"),
        (not args.upload and args.repo_id, "--repo-id", "--no-upload"),
        (not args.upload and args.tag, "--tag", "--no-upload"),
        (not args.upload and args.replace_card, "--replace-card", "--no-upload"),
    ]
    for clash, first, second in conflicts:
        if clash:
            parser.error(f"{first} conflicts with {second}; pass only one of them")
    if args.num_proc < 1:
        parser.error(f"--num-proc {args.num_proc}: expected 1 or more")
    for config in schema.CONFIG_NAMES if args.config == "all" else [args.config]:
        row = schema.raw_row_bytes(config)
        if args.max_shard_size < row:
            parser.error(
                f"--max-shard-size {args.max_shard_size:,} bytes is smaller than one {config} row ({row:,} bytes); "
                f"expected at least {disk.human_bytes(row)}, since a shard holds whole rows (--max-shard-size "
                f"{-(-row // 1000**2)}MB or more)"
            )
    args.sample_not_published = False
    if args.sample and args.upload:
        if args.repo_id == DEFAULT_REPO_ID:
            parser.error(
                f"--sample conflicts with --repo-id {DEFAULT_REPO_ID}: synthetic frames must never replace the real "
                "dataset; pass --repo-id YOU/NAME to publish the sample elsewhere, or --no-upload"
            )
        if args.repo_id is None:
            if args.tag:
                parser.error(
                    "--tag conflicts with --sample without --repo-id, which does not publish; "
                    "pass --repo-id YOU/NAME to publish the sample, or drop --tag"
                )
            args.upload, args.sample_not_published = False, True
    args.repo_id = args.repo_id or DEFAULT_REPO_ID
    return args


#: push.py behind the one error boundary (`openeds.cli`): its classified errors are its one lines as they are
COMMAND = cli.Command(
    "python push.py",
    again="run the same command again: the finished shards are kept, and a publication sends only what the Hub lacks",
    known=(raw.RawDataError, download.DownloadError, hub.PublishError, MaterializeError),
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return cli.run(COMMAND, lambda: _main(argv))


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.sample_not_published:
        print(SAMPLE_NOT_PUBLISHED, file=sys.stderr)
    summary = push(
        data_dir=args.data_dir,
        sample=args.sample,
        kaggle_dataset=args.kaggle_dataset,
        cache_dir=args.cache_dir,
        local_dir=args.local_dir,
        upload=args.upload,
        repo_id=args.repo_id,
        tag=args.tag,
        config=args.config,
        splits=args.splits,
        num_proc=args.num_proc,
        max_shard_size=args.max_shard_size,
        on_missing_label=args.on_missing_label,
        command="python push.py " + shlex.join(argv),
        retry_timeout=args.retry_timeout,
        timeout=args.timeout,
        replace_card=args.replace_card,
    )
    print("Done:")
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    cli.exit(main())
