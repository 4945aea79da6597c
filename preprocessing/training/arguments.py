"""The arguments the training feeds share, checked once: ranks, seeds, transforms, ``--preprocessed``.

Every check gives a one-line ``ValueError`` or ``TypeError`` that names the value and
what was expected.
"""

from __future__ import annotations

import argparse

import torch

from preprocessing.augment import Transform

#: ``--preprocessed`` values and what they mean for ``IrisDataset(preprocessed=...)``.
PREPROCESSED_CHOICES: dict[str, bool | None] = {"auto": None, "yes": True, "no": False}


def add_preprocessed_argument(parser: argparse.ArgumentParser) -> argparse.Action:
    """Add ``--preprocessed {auto,yes,no}`` to a training script's parser.

    Map the parsed value with :func:`preprocessed_from_flag` and pass it to
    ``IrisDataset(preprocessed=...)``.
    """
    return parser.add_argument(
        "--preprocessed",
        choices=list(PREPROCESSED_CHOICES),
        default="auto",
        help=(
            "are the images already gamma + CLAHE? auto (default): read the dataset's "
            "'preprocessed' column (v2 has it; v1 has none, so its raw images are "
            "preprocessed on the CPU); yes/no: require that, and fail fast if the column disagrees"
        ),
    )


def preprocessed_from_flag(value: str) -> bool | None:
    """``auto`` -> None (detect), ``yes`` -> True, ``no`` -> False."""
    if value not in PREPROCESSED_CHOICES:
        raise ValueError(f"--preprocessed {value!r}; expected one of {', '.join(PREPROCESSED_CHOICES)}")
    return PREPROCESSED_CHOICES[value]


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive int")
    return value


def ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else from an initialised ``torch.distributed``."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    elif rank is None and world_size is None:
        return 0, 1
    elif rank is None or world_size is None:
        raise ValueError(
            f"rank={rank!r} and world_size={world_size!r}: pass both, or neither and initialise torch.distributed"
        )
    world_size = positive_int(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}; expected an int in 0..{world_size - 1} for world_size={world_size}")
    return rank, world_size


def check_seed(seed: object, world_size: int) -> None:
    """A seed is a non-negative int or None, and every rank of a distributed run must pass the same one."""
    if seed is None and world_size > 1:
        raise ValueError(
            f"world_size={world_size} needs a seed: every rank must draw the same permutation "
            "to read a disjoint share. Pass the same seed=... on every rank"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r}; expected a non-negative int or None")


def check_transform(transform: object) -> None:
    if transform is not None and not isinstance(transform, Transform):
        raise TypeError(
            f"transform is a {type(transform).__module__}.{type(transform).__qualname__}; expected a "
            "preprocessing.augment.Transform such as augment.TRAIN_AUGMENT. IrisDataset already "
            "normalises like ToTensor + Normalize([0.5], [0.5]), so drop the torchvision pipeline"
        )


def check_shuffle_buffer(shuffle_buffer: object) -> None:
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer={shuffle_buffer!r}; expected a non-negative int (rows)")
