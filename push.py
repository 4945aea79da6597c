"""Build OpenEDS v2 from the raw Kaggle data and publish it to the Hugging Face Hub.

Examples::

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

Without --data-dir or --sample, the raw data is downloaded from Kaggle once and cached.
Re-running any command is safe: finished shards are reused, an interrupted upload sends
only what the Hub does not have yet, and data the Hub already holds is not published again.

What a publication changes on the Hub: the shards of the splits it builds, the previews and
the card. Files it did not write (your notes, other data) stay, and the run names them. The
card (README.md) is replaced only if this tool wrote it and nobody edited it since (a checksum
line at its end tells); a card you wrote or edited on the Hub stops the run before anything is
built, so that its text is not lost: copy what you want to keep, then re-run with
--replace-card (the replaced card stays readable at its revision, which the run names).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from openeds import card, disk, download, hub, layout, lock, raw, schema
from openeds.materialize import DEFAULT_MAX_SHARD_BYTES, MaterializeError, local_sizes, materialize
from openeds.parquet import read_rows
from openeds.retry import DEFAULT_RETRY_TIMEOUT, RetryPolicy, add_retry_argument
from openeds.synthetic import write_sample

DEFAULT_REPO_ID = "Conner/openeds-precomputed"
PREVIEW_ROWS = 4
#: Why `--sample` without `--repo-id` does not publish (printed when it happens).
SAMPLE_NOT_PUBLISHED = (
    f"not publishing: --sample without --repo-id materialises only, as with --no-upload; synthetic frames are "
    f"never published to {DEFAULT_REPO_ID}; pass --repo-id YOU/NAME to publish the sample to a repo of your own"
)


@dataclass(frozen=True)
class Summary:
    sizes: dict[str, dict[str, card.SplitSize]]
    local_dir: Path
    published: hub.PublishResult | None
    seconds: float

    def lines(self) -> list[str]:
        out = []
        for config, splits in self.sizes.items():
            for split, size in splits.items():
                per_row = size.parquet_bytes / max(size.rows, 1) / 1e6
                out.append(f"  {config:5s} {split:10s} {size.rows:7,d} rows  {per_row:5.2f} MB/row")
        out.append(f"  local folder: {self.local_dir}")
        if self.published:
            out.append(f"  published: {self.published.line()}")
        out.append(f"  time: {self.seconds:.1f} s")
        return out


def _resolve_raw(*, sample: bool, data_dir: Path | None, kaggle_dataset: str | None, cache_dir: Path | None,
                 scratch: Path, retry: RetryPolicy) -> tuple[Path, card.Source]:
    """The raw data folder and where it came from (for the card)."""
    if sample:
        return write_sample(scratch / "sample"), card.Source("sample")
    if data_dir:
        return data_dir, card.Source("local")
    slug = kaggle_dataset or download.DEFAULT_SLUG
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
    api: HfApi | None = None,
    replace_card: bool = False,
) -> Summary:
    """Materialise the asked configs and splits into `local_dir`, then publish them to `repo_id`.

    Raw data comes from `data_dir`, the synthetic sample (`sample`), or else the Kaggle dataset
    `kaggle_dataset` cached under `cache_dir`. `config` is `pupil`, `full` or `all`; `splits`
    defaults to every split present. `command` is recorded in the card. `retry_timeout` bounds the
    retries of transient server errors, Hub and Kaggle alike, in seconds (an unreachable network:
    the smaller of it and 60 s). `api` is the seam for the Hub client (default `HfApi()`).
    `replace_card`: replace the Hub's card even if a person wrote or edited it (`hub.check_card`).

    When uploading, the token is looked for first, before any build or request, and the Hub is
    read (`hub.connect`: the token's rights, the repo's files and card) before the raw data is
    fetched or built, so a bad repo id or tag, a bad token, a gated repo, a card written by hand or an
    unreachable Hub costs seconds, not a build. The sample
    is never published to `DEFAULT_REPO_ID`; data the repo already holds is not published again
    (`summary.published.changed` is False).
    """
    start = time.monotonic()
    configs = list(schema.CONFIG_NAMES) if config == "all" else [schema.check_config(config)]
    retry = RetryPolicy(total=retry_timeout)
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
        remote = hub.connect(api, repo_id, token=token, retry=retry)
        hub.check_card(repo_id, remote, replace_card=replace_card)  # a card written by hand: said before the build
        if remote.v1_files and (splits or schema.DEFAULT_CONFIG not in configs):
            # A push that would leave v1 splits beside v2 ones ends here, before any download or build
            # (without --splits, the splits are those of the raw data: publish checks them).
            hub.refuse_mixing(repo_id, remote, {c: list(splits or ()) for c in configs})
    local_dir = Path(local_dir or default_local_dir(repo_id)).expanduser()
    # A folder that is a file, cannot be written or is in use by another run ends the run here,
    # before any download or build work.
    with _staging(local_dir), tempfile.TemporaryDirectory(prefix="openeds-") as scratch:
        raw_dir, source = _resolve_raw(
            sample=sample, data_dir=data_dir, kaggle_dataset=kaggle_dataset, cache_dir=cache_dir, scratch=Path(scratch),
            retry=retry,
        )
        split_dirs = raw.find_split_dirs(raw_dir)
        splits = list(splits or split_dirs)
        missing = [s for s in splits if s not in split_dirs]
        if missing:
            raise raw.RawDataError(
                f"--splits {' '.join(missing)} not found under {raw_dir}; the data has {', '.join(split_dirs)}"
            )
        for note in raw.check_disjoint(split_dirs):
            print(note, file=sys.stderr)
        pairs = {}
        for split in splits:
            listing = raw.list_pairs(split_dirs[split], on_missing_label)
            for note in listing.notes(split):
                print(note, file=sys.stderr)
            pairs.update({(c, split): listing.pairs for c in configs})
        if not upload:
            # The folder is what a user loads: its card lists every split it holds complete. They
            # are read now, so that a damaged shard stops the run before it changes anything.
            kept = local_sizes(local_dir, skip=set(pairs))
        built = materialize(pairs, local_dir, num_proc=num_proc, max_shard_bytes=max_shard_size)

        for config in configs:  # each config built draws its preview from the first of its splits
            first = min(built[config], key=schema.SPLITS.index)
            shard = sorted(local_dir.glob(f"{layout.split_prefix(config, first)}*.parquet"))[0]
            rows = read_rows(shard, PREVIEW_ROWS)
            with _writing(local_dir / layout.PREVIEW_PATHS[config]) as preview:
                card.render_preview(rows, preview)

        splits_by_config = {c: splits for c in configs}
        if upload:
            kept = hub.kept_sizes(api, repo_id, remote, rebuilt=splits_by_config, token=token, retry=retry)
        sizes = {c: {**kept.get(c, {}), **built.get(c, {})} for c in schema.CONFIG_NAMES if c in {*kept, *built}}
        # The card shows the previews the repo (or the folder) holds once this run is done.
        held = set(remote.files) if upload else {p for p in layout.PREVIEW_PATHS.values() if (local_dir / p).is_file()}
        previews = {c: layout.PREVIEW_PATHS[c] for c in sizes if c in configs or layout.PREVIEW_PATHS[c] in held}
        text = str(card.render_card(
            sizes, repo_id=repo_id, source=source, command=command, previews=previews,
            v1_revision=upload and hub.has_v1_revision(remote),  # a folder's card names no revision
        ))
        with _writing(local_dir / layout.CARD_PATH) as readme:
            disk.write_atomically(readme, text.encode("utf-8"))
        published = None
        if upload:
            published = hub.publish(
                local_dir, repo_id, splits_by_config=splits_by_config, api=api, token=token, tag=tag, retry=retry,
                remote=remote, replace_card=replace_card,
            )
    return Summary(sizes, local_dir, published, time.monotonic() - start)


#: where push.py writes temporary files in the staging folder (see openeds.layout)
_TEMPORARY_GLOBS = (".*.partial", *(f"{folder}/.*.partial" for folder in layout.CONFIG_DIRS.values()),
                    f"{Path(layout.PREVIEW_PATH).parent}/.*.partial")


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
                f"the disk holding {path} is full ({e.strerror}) while writing it; the finished shards are kept and "
                f"the earlier {path.name}, if any, is unchanged. Fix: free some space or pass --local-dir on a "
                f"larger disk, then run the same command again"
            ) from None
        where = f" ({e.filename})" if e.filename and e.filename != str(path) else ""
        raise MaterializeError(
            f"cannot write {path}: {e.strerror or e}{where}; expected a writable --local-dir. "
            f"Fix: check the folder's permissions or pass another --local-dir"
        ) from None


def byte_size(text: str) -> int:
    """`500MB`, `2GB`, `750KB` or a plain number of bytes."""
    units = {"KB": 1000, "MB": 1000**2, "GB": 1000**3}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


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
    source.add_argument("--data-dir", type=Path, metavar="RAW", help="the raw Kaggle OpenEDS folder")
    source.add_argument("--sample", action="store_true", help="use a small synthetic sample instead of real data")
    download.add_download_arguments(parser)
    parser.add_argument("--local-dir", type=Path, metavar="OUT",
                        help="folder to materialise into; it then holds exactly what goes to the Hub "
                             "(default: a staging folder under the cache)")
    parser.add_argument("--no-upload", dest="upload", action="store_false",
                        help="materialise only; no credentials needed")
    parser.add_argument("--repo-id", default=None, metavar="ID",
                        help=f"Hub dataset repo (default: {DEFAULT_REPO_ID}; with --sample it is needed to publish, "
                             "and may not be the default)")
    parser.add_argument("--tag", type=tag_name,
                        help="tag for this publication (default: `v2` the first time, then `v2.1`, `v2.2`, ...); "
                             "`v1` is reserved for the v1 data of a converted repo")
    parser.add_argument("--replace-card", action="store_true",
                        help="replace the Hub's README.md even if a person wrote or edited it (default: such a card "
                             "stops the run before the build, so that its text is not lost)")
    parser.add_argument("--config", choices=[*schema.CONFIG_NAMES, "all"], default=schema.DEFAULT_CONFIG,
                        help="which config to build (default: pupil, the config load_dataset(repo) loads)")
    parser.add_argument("--splits", nargs="+", choices=schema.SPLITS, metavar="SPLIT",
                        help="splits to build and push, of train validation test (default: all present); "
                             "the others stay as they are on the Hub")
    parser.add_argument("--num-proc", type=int, default=1, metavar="N", help="processes building shards (default 1)")
    parser.add_argument("--max-shard-size", type=byte_size, default=DEFAULT_MAX_SHARD_BYTES, metavar="SIZE",
                        help="upper bound of a shard, e.g. 500MB (default)")
    parser.add_argument("--skip-unlabeled", dest="on_missing_label", action="store_const", const="skip",
                        default="error", help="leave out images without a label (default: error)")
    add_retry_argument(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    args.sample_not_published = False
    if args.sample and args.upload:
        if args.repo_id == DEFAULT_REPO_ID:
            parser.error(
                f"--sample conflicts with --repo-id {DEFAULT_REPO_ID}: synthetic frames must never replace the real "
                "dataset; pass --repo-id YOU/NAME to publish the sample elsewhere, or --no-upload"
            )
        if args.repo_id is None:
            if args.tag:
                parser.error("--tag conflicts with --sample without --repo-id, which does not publish; "
                             "pass --repo-id YOU/NAME to publish the sample, or drop --tag")
            args.upload, args.sample_not_published = False, True
    args.repo_id = args.repo_id or DEFAULT_REPO_ID
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.sample_not_published:
        print(SAMPLE_NOT_PUBLISHED, file=sys.stderr)
    try:
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
            replace_card=args.replace_card,
        )
    except (raw.RawDataError, download.DownloadError, hub.PublishError, MaterializeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("Done:")
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
