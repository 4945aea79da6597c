"""Train a tiny segmentation net on OpenEDS v1 or v2 data, on the CPU.

Shows the training side end to end: ``load_dataset`` -> ``IrisLoader`` (or, with
``--dataloader``, ``IrisDataset`` in a ``DataLoader``) -> a weighted cross-entropy plus
surface loss that uses every array of the batch. The model is deliberately tiny; swap
in your own.

**Preemption.** With ``--checkpoint PATH`` the model, the optimiser and the loader's state
(``IrisLoader.state_dict()``) are saved every ``--checkpoint-every`` steps and at the end,
atomically (a temporary file in the same folder, fsync'd, then renamed over PATH: a kill
mid-save leaves the previous checkpoint whole, and its temporary file is removed by the next
save or resume). A save that fails (a full disk) is one line and leaves the previous checkpoint
whole; a ``--checkpoint`` that could never be saved (a folder, a path under a file) is refused
before training, and one that does not fit this run (another model, a truncated file) in one
line at ``--resume``. ``--resume`` starts from it when it exists: the loader gives exactly the
batches the killed run would have given next, mid-epoch, so the run ends as if it had never
stopped. Under ``torch.distributed.run`` it trains with DDP on gloo (the CPU), rank 0 saves, and
a checkpoint of ``N`` processes resumes on any number (the rest of the epoch is dealt to the new
ranks). ``--log-batches PATH`` writes one JSON line per step: the step, the epoch, the filenames
and a SHA-256 of every tensor of the batch (``PATH`` with ``-rank<r>`` before its suffix under
DDP).

Usage::

    python examples/train_tiny.py Conner/openeds-precomputed --max-steps 100
    python examples/train_tiny.py Conner/openeds-precomputed --config full --preprocessed yes
    python examples/train_tiny.py ./parquet_folder   # any local copy, v1 or v2 (v1: gamma + CLAHE on the CPU)
    python examples/train_tiny.py ./parquet_folder --dataloader --num-workers 2   # the DataLoader feed
    python examples/train_tiny.py Conner/openeds-precomputed --streaming   # read as it goes, no local copy
    python examples/train_tiny.py ./parquet_folder --epochs 3 --checkpoint ckpt.pt --resume   # survives a kill
    python -m torch.distributed.run --nproc_per_node 2 examples/train_tiny.py ./parquet_folder --checkpoint ckpt.pt
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import IO

import datasets
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from openeds import cli, stages
from preprocessing.augment import TRAIN_AUGMENT
from preprocessing.training import (
    DatasetFormatError,
    IrisDataset,
    IrisIterableDataset,
    IrisLoader,
    add_preprocessed_argument,
    describe_state,
    preprocessed_from_flag,
)


def tiny_net(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(8, num_classes, 1),
    )


def loss_fn(logits: torch.Tensor, label: torch.Tensor, weights: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """RITnet-style: cross-entropy weighted up on label edges, plus the surface (boundary) loss."""
    cross_entropy = F.cross_entropy(logits, label, reduction="none")
    surface = (logits.softmax(dim=1) * dist).mean()
    return ((1 + weights) * cross_entropy).mean() + surface


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of ``minimum`` or more, else one usage line naming the value.

    Without it a 0 or negative count reaches the loader or the DataLoader and ends in a traceback.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected {minimum} or more") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is below {minimum}; expected an integer of {minimum} or more")
        return value

    return parse


class UsageError(ValueError):
    """A source, config or split that does not exist. One line, naming the choices."""


def check_source(source: str, config: str | None, split: str) -> None:
    """Refuse an unknown config or split before ``load_dataset`` downloads or prepares anything."""
    try:
        configs = datasets.get_dataset_config_names(source)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise UsageError(f"cannot read {source}: {' '.join(str(error).split())}") from None
    if config is not None and config not in configs:
        raise UsageError(f"{source} has no config {config!r}; expected one of {', '.join(configs)} (--config)")
    splits = datasets.get_dataset_split_names(source, config)
    if split not in splits:
        raise UsageError(f"{source} has no split {split!r}; expected one of {', '.join(splits)} (--split)")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or used. One line: the path, what was wrong, what to do."""


def check_checkpoint_path(path: Path) -> None:
    """Refuse a ``--checkpoint`` that no save could write, before any data is loaded or step trained.

    A folder (``torch.load`` would meet it at ``--resume``, a save after the first steps), and a path
    under a file (the save's ``mkdir`` would) are ``CheckpointError``s naming what is in the way.
    """
    if path.is_dir():
        raise CheckpointError(
            f"--checkpoint {path} is a folder; expected the path of a file, which this script writes. "
            f"Fix: name a file, e.g. --checkpoint {path / 'ckpt.pt'}"
        )
    for folder in path.parents:
        if folder.is_dir():
            break
        if folder.exists() or folder.is_symlink():
            raise CheckpointError(
                f"--checkpoint {path}: {folder} is a file, not a folder; expected a folder to save the checkpoint "
                f"in. Fix: name a path in a folder, or move {folder} away"
            )


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """``torch.save`` to ``path`` atomically: a temporary file in the same folder, fsync'd, renamed over it.

    A kill at any point leaves either the previous checkpoint or the new one, whole; the temporary
    file of a save killed midway is removed by the next save (or resume: :func:`remove_leftovers`).
    A save that fails (a full disk) removes its temporary file and raises the ``OSError`` of the
    write itself (``torch.save`` reports it as a bare ``RuntimeError``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open, not mkstemp: the checkpoint gets the umask's permissions, as torch.save(path) would give it
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        writer = _Writes(os.fdopen(handle, "wb"))
        try:
            with writer.file:
                torch.save(checkpoint, writer)
                writer.file.flush()
                os.fsync(writer.file.fileno())
        except (OSError, RuntimeError) as error:
            error = writer.error or error
            if not isinstance(error, OSError):
                raise
            raise OSError(error.errno, error.strerror, error.filename or str(temporary)) from None
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a power cut once its folder is synced
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    remove_leftovers(path)


class _Writes:
    """A file as ``torch.save`` writes to it, keeping the ``OSError`` of a failed write (torch hides it)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporary files of saves of ``path`` killed midway; the paths removed.

    Each save writes ``.NAME.PID.HEX.tmp`` beside ``path``. One whose process is gone (or is this
    one: its saves run one at a time, and a killed run's pid may come back in a restarted
    container) is a killed save's. A live process's is left alone: a save in progress.
    """
    name = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        match = name.fullmatch(leftover.name)
        if match and not _another_live_process(int(match[1])):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed.append(leftover)
    return removed


def _another_live_process(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def log_batch(log: IO[str], step: int, epoch: int, batch: tuple) -> None:
    """One JSON line: the step, its epoch, the batch's filenames and a SHA-256 of each of its tensors."""
    image, label, filenames, weights, dist = batch
    tensors = {"image": image, "label": label, "spatial_weights": weights, "dist_map": dist}
    digests = {name: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() for name, t in tensors.items()}
    log.write(json.dumps({"step": step, "epoch": epoch, "filenames": filenames, "sha256": digests}) + "\n")
    log.flush()


def rank_path(path: Path, rank: int, world_size: int) -> Path:
    """This rank's log: ``path`` itself on one process, ``name-rank<r>.suffix`` under DDP."""
    return path if world_size == 1 else path.with_name(f"{path.stem}-rank{rank}{path.suffix}")


#: this script behind the one error boundary of the project's commands (`openeds.cli`)
COMMAND = cli.Command(
    "python examples/train_tiny.py",
    again="with --checkpoint PATH --resume, a re-run goes on from the last checkpoint saved",
    known=(CheckpointError,),
)


def main(argv: list[str] | None = None) -> int:
    """The command line: its exit status (2: a refused argument, source or checkpoint; 1: a failure; 130: Ctrl-C)."""
    return cli.run(COMMAND, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("Usage::")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", help="Hub dataset id, or a local folder of parquet files (anything load_dataset reads)"
    )
    parser.add_argument(
        "--config",
        help="dataset config: pupil (binary pupil mask; loaded when omitted) or full (4 classes); "
        "the same names on the Hub and in a local folder",
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache-dir", help="datasets cache folder (default: HF_DATASETS_CACHE)")
    parser.add_argument(
        "--streaming", action="store_true", help="stream the split (load_dataset(..., streaming=True)): no local copy"
    )
    add_preprocessed_argument(parser)
    parser.add_argument("--max-steps", type=at_least(1), default=100)
    parser.add_argument(
        "--epochs", type=at_least(1), help="stop after this many epochs too (default: --max-steps only)"
    )
    parser.add_argument("--batch-size", type=at_least(1), default=4)
    parser.add_argument(
        "--dataloader", action="store_true", help="feed through torch's DataLoader(IrisDataset) instead of IrisLoader"
    )
    parser.add_argument(
        "--num-workers", type=at_least(0), help="DataLoader worker processes (with --dataloader; default 0)"
    )
    parser.add_argument(
        "--num-threads", type=at_least(1), help="IrisLoader gather threads (default: the cores, at most 4)"
    )
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument(
        "--checkpoint", type=Path, help="save the model, the optimiser and the loader here, atomically (IrisLoader)"
    )
    parser.add_argument("--checkpoint-every", type=at_least(1), default=50, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="start from --checkpoint when it exists")
    parser.add_argument("--log-batches", type=Path, help="append one JSON line per step: filenames, tensor hashes")
    cli.add_traceback_argument(parser)
    args = parser.parse_args(argv)
    if args.dataloader and args.num_threads is not None:
        parser.error("--num-threads is IrisLoader's; with --dataloader use --num-workers")
    if not args.dataloader and args.num_workers is not None:
        parser.error("--num-workers is for --dataloader; IrisLoader takes --num-threads")
    if args.dataloader and (args.checkpoint or args.resume):
        parser.error("--checkpoint and --resume need IrisLoader's state_dict(); drop --dataloader")
    if args.resume and args.checkpoint is None:
        parser.error("--resume needs --checkpoint PATH: the checkpoint to start from")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torch.distributed.run
    if world_size > 1 and args.dataloader:
        parser.error("under torch.distributed.run this example feeds through IrisLoader; drop --dataloader")
    if world_size > 1:
        stages.now(f"joining the {world_size} processes of torch.distributed.run (gloo)")
        torch.distributed.init_process_group("gloo")  # the CPU backend; IrisLoader takes its ranks from it
    try:
        return run(args)
    finally:
        if world_size > 1:
            torch.distributed.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    """Load the split, build the feed and the model, resume if asked, train; the exit code."""
    torch.manual_seed(args.seed)  # model init (and the DataLoader's per-epoch worker seeds)
    try:
        if args.checkpoint is not None:
            check_checkpoint_path(args.checkpoint)
        stages.now(f"reading the configs and splits of {args.source}")
        check_source(args.source, args.config, args.split)
        stages.now(f"loading the {args.split} split of {args.source}")
        split = datasets.load_dataset(
            args.source, args.config, split=args.split, cache_dir=args.cache_dir, streaming=args.streaming
        )
        options = {
            "split": args.split,
            "transform": TRAIN_AUGMENT,
            "preprocessed": preprocessed_from_flag(args.preprocessed),
            "seed": args.seed,
        }
        stages.now(f"building the feed of the {args.split} split")
        if args.dataloader and args.streaming:  # the dataset shuffles a stream itself; call set_epoch per epoch
            train = IrisIterableDataset(split, **options)
            loader = DataLoader(train, batch_size=args.batch_size, num_workers=args.num_workers or 0)
        elif args.dataloader:
            train = IrisDataset(split, **options)
            loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers or 0)
        else:
            loader = IrisLoader(split, args.batch_size, num_threads=args.num_threads, **options)
            train = loader.dataset
    except (DatasetFormatError, UsageError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = train.num_rows if args.streaming else len(train)  # a stream's row count comes from its card, if any
    if rows == 0:
        print(f"error: split {args.split!r} of {args.source} has no rows", file=sys.stderr)
        return 2
    images = "preprocessed" if train.preprocessed else "raw images: gamma + CLAHE on the CPU"
    print(f"{'an unknown number of' if rows is None else rows} rows, {train.num_classes} classes, {images}")

    model = tiny_net(train.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    if args.resume and args.checkpoint.exists():
        stages.now(f"resuming from the checkpoint {args.checkpoint}")
        try:
            step = resume(args.checkpoint, model, optimizer, loader)
        except ValueError as err:
            print(f"error: cannot resume from {args.checkpoint}: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
    try:
        with open(rank_path(args.log_batches, *ranks(loader)), "a") if args.log_batches else nullcontext() as log:
            train_steps(args, loader, train, model, optimizer, step, log)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if isinstance(loader, IrisLoader):
            loader.close()  # the last loop may have stopped mid-epoch
    return 0


def ranks(loader: IrisLoader | DataLoader) -> tuple[int, int]:
    return (loader.rank, loader.world_size) if isinstance(loader, IrisLoader) else (0, 1)


def resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loader: IrisLoader) -> int:
    """Load a checkpoint of :func:`train_steps` into the model, the optimiser and the loader; its step.

    The loader refuses a state that does not fit it (another batch size, seed, split...) in one
    line: a ``ValueError``, as is a checkpoint that cannot be read.
    """
    remove_leftovers(path)  # a save killed midway left its temporary file
    try:
        file = path.open("rb")
    except OSError as err:
        raise ValueError(f"it cannot be read ({err.strerror or err}); expected a readable file") from None
    with file:
        try:
            checkpoint = torch.load(file, weights_only=True)
        except MemoryError:
            raise
        except Exception as err:  # a damaged file fails in many ways: EOFError, RuntimeError, OSError, ValueError...
            said = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            raise ValueError(
                f"not a checkpoint torch.load reads ({said}); expected a whole checkpoint of this script (one cut "
                "short, by a copy or a full disk, is not). Fix: pass another --checkpoint, or remove it to start afresh"
            ) from None
    if not isinstance(checkpoint, dict) or not {"model", "optimizer", "loader", "step"} <= set(checkpoint):
        raise ValueError("expected a checkpoint of this script: a dict of model, optimizer, loader and step")
    loader.load_state_dict(checkpoint["loader"])  # first: it checks the state against this loader
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        said = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ValueError(
            f"it holds another model or optimiser than this run's ({said}); expected a checkpoint of this script's "
            f"model for the same config. Fix: pass the --config of the run that saved it, or another --checkpoint"
        ) from None
    print(f"resumed from {path} at step {checkpoint['step']}: {describe_state(checkpoint['loader'])}")
    return checkpoint["step"]


def train_steps(
    args: argparse.Namespace,
    loader: IrisLoader | DataLoader,
    train: IrisDataset | IrisIterableDataset,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    log: IO[str] | None,
) -> None:
    """Train from ``step`` to ``--max-steps`` (or ``--epochs``), checkpointing every ``--checkpoint-every`` steps.

    An :class:`IrisLoader` counts its epochs itself (``loader.epoch``, also after a resume); the
    DataLoader feeds count them here.
    """
    iris = isinstance(loader, IrisLoader)
    rank, world_size = ranks(loader)
    net = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    def save() -> None:
        if rank == 0:  # every rank holds the same loader state, and DDP keeps the models equal
            stages.now(f"saving the checkpoint {args.checkpoint} after step {step}")
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "loader": loader.state_dict()}
            try:
                save_checkpoint(args.checkpoint, {**state, "step": step})
            except OSError as err:
                before = "the previous checkpoint is unchanged" if args.checkpoint.exists() else "none was saved before"
                raise CheckpointError(
                    f"cannot save the checkpoint {args.checkpoint} after step {step}: {err.strerror or err} "
                    f"(writing {err.filename}); {before}. Fix: make room on its disk (or pass --checkpoint on another "
                    "one), then run again with --resume"
                ) from None

    epoch = empty = 0  # empty: loops in a row without a batch (a resumed epoch may have none left; two: no data)
    while step < args.max_steps and (args.epochs is None or (loader.epoch if iris else epoch) < args.epochs):
        if args.dataloader and args.streaming:
            train.set_epoch(epoch)  # the DataLoader does not tell it
        current, epoch, batches = loader.epoch if iris else epoch, epoch + 1, 0
        stages.now(f"training: step {step + 1}, epoch {current}")
        for batch in loader:
            image, label, _filenames, weights, dist = batch
            loss = loss_fn(net(image), label, weights, dist)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step, batches = step + 1, batches + 1
            stages.now(f"training: step {step + 1}, epoch {current}")
            if rank == 0:
                print(f"step {step}: loss {loss.item():.4f}")
            if log is not None:
                log_batch(log, step, current, batch)
            if args.checkpoint is not None and step % args.checkpoint_every == 0:
                save()  # after the step: the state counts this batch as trained
            if step == args.max_steps:
                break
        empty = 0 if batches else empty + 1
        if empty == 2:
            raise UsageError(f"an epoch of split {args.split!r} gives no batch on {world_size} rank(s)")
    if args.checkpoint is not None:
        save()  # at the end too: the run's result


if __name__ == "__main__":
    cli.exit(main())
