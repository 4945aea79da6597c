"""Train a tiny segmentation net on OpenEDS v1 or v2 data, on the CPU.

Shows the training side end to end: ``load_dataset`` -> ``IrisLoader`` (or, with
``--dataloader``, ``IrisDataset`` in a ``DataLoader``) -> a weighted cross-entropy plus
surface loss that uses every array of the batch. The model is deliberately tiny; swap
in your own.

Usage::

    python examples/train_tiny.py Conner/openeds-precomputed --max-steps 100
    python examples/train_tiny.py Conner/openeds-precomputed --config full --preprocessed yes
    python examples/train_tiny.py ./parquet_folder   # any local copy, v1 or v2 (v1: gamma + CLAHE on the CPU)
    python examples/train_tiny.py ./parquet_folder --dataloader --num-workers 2   # the DataLoader feed
    python examples/train_tiny.py Conner/openeds-precomputed --streaming   # read as it goes, no local copy
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import datasets
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from preprocessing.augment import TRAIN_AUGMENT
from preprocessing.training import (
    DatasetFormatError,
    IrisDataset,
    IrisIterableDataset,
    IrisLoader,
    add_preprocessed_argument,
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


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    if args.dataloader and args.num_threads is not None:
        parser.error("--num-threads is IrisLoader's; with --dataloader use --num-workers")
    if not args.dataloader and args.num_workers is not None:
        parser.error("--num-workers is for --dataloader; IrisLoader takes --num-threads")

    torch.manual_seed(args.seed)  # model init (and the DataLoader's per-epoch worker seeds)
    try:
        check_source(args.source, args.config, args.split)
        split = datasets.load_dataset(
            args.source, args.config, split=args.split, cache_dir=args.cache_dir, streaming=args.streaming
        )
        options = {
            "split": args.split,
            "transform": TRAIN_AUGMENT,
            "preprocessed": preprocessed_from_flag(args.preprocessed),
            "seed": args.seed,
        }
        if args.dataloader and args.streaming:  # the dataset shuffles a stream itself; call set_epoch per epoch
            train = IrisIterableDataset(split, **options)
            loader = DataLoader(train, batch_size=args.batch_size, num_workers=args.num_workers or 0)
        elif args.dataloader:
            train = IrisDataset(split, **options)
            loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers or 0)
        else:
            loader = IrisLoader(split, args.batch_size, num_threads=args.num_threads, **options)
            train = loader.dataset
    except (DatasetFormatError, UsageError) as err:
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
    step = epoch = 0
    while step < args.max_steps:
        if args.dataloader and args.streaming:
            train.set_epoch(epoch)  # the DataLoader does not tell it (IrisLoader counts its epochs itself)
        epoch += 1
        for image, label, _filenames, weights, dist in loader:
            loss = loss_fn(model(image), label, weights, dist)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            print(f"step {step}: loss {loss.item():.4f}")
            if step == args.max_steps:
                break
    if isinstance(loader, IrisLoader):
        loader.close()  # the last loop may have stopped mid-epoch
    return 0


if __name__ == "__main__":
    sys.exit(main())
