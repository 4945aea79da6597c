"""The resume state of :class:`~preprocessing.training.loader.IrisLoader`: its format, its checks, its description.

An epoch of the loader follows from ``(seed, epoch)`` and its arguments alone (the
permutation, every row's draws, the DDP shares), so a place in the training is two
numbers: the epoch and how much of it was consumed. The state is a plain dict of ints,
bools and strings, no row data (about 300 bytes pickled), which ``torch.save`` (also
with ``weights_only=True``), JSON and ``torch.distributed.checkpoint`` carry as they
are::

    {"format": "IrisLoader", "version": 1, "kind": "map" | "stream",
     "split": str, "num_rows": int (-1: a stream whose card gives none), "num_classes": int,
     "preprocessed": bool, "batch_size": int, "seed": int, "shuffle": bool, "drop_last": bool,
     "shuffle_buffer": int (0 for map-style), "world_size": int, "epoch": int, "consumed": int}

``consumed``: map-style, the length of the prefix of the epoch's permutation that all
ranks together have consumed (``min(k * batch_size * world_size, n // world_size *
world_size)`` after ``k`` batches each); streamed, the rows this rank has handed out in
the epoch. A state taken after the last batch of an epoch says the next epoch, 0.

The other fields are the settings the epoch's order and draws follow from: a state
resumes only a loader whose settings are the same, and :func:`check_state` refuses any
other state in one line (``ValueError``) that names the field, the value in the state
and the value expected. ``num_threads`` is not part of the state (an epoch is the same
for any), and ``world_size`` may differ for a map-style split (elastic resume). No torch
here, nor anything of the rest of the package: only what a state is.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The state's ``format`` and ``version`` (a new version, when a field's meaning changes).
FORMAT, VERSION = "IrisLoader", 1

#: Every field of a state, with its type, in order.
FIELDS: dict[str, type] = {
    "format": str,
    "version": int,
    "kind": str,
    "split": str,
    "num_rows": int,
    "num_classes": int,
    "preprocessed": bool,
    "batch_size": int,
    "seed": int,
    "shuffle": bool,
    "drop_last": bool,
    "shuffle_buffer": int,
    "world_size": int,
    "epoch": int,
    "consumed": int,
}

#: The settings a state must share with the loader that loads it ("kind" first: it explains the others).
SETTINGS = (
    "kind",
    "split",
    "num_rows",
    "num_classes",
    "preprocessed",
    "batch_size",
    "seed",
    "shuffle",
    "drop_last",
    "shuffle_buffer",
)

#: ``kind``: what each kind of loader reads, for the messages.
KINDS = {"map": "a map-style split", "stream": "a streamed split"}

_FIX = "Load it into a loader built with the same arguments (num_threads may differ)"


def make_state(settings: Mapping[str, object], epoch: int, consumed: int) -> dict:
    """A state: the loader's ``settings`` (:data:`SETTINGS` and ``world_size``), ``epoch`` and ``consumed``."""
    state = {"format": FORMAT, "version": VERSION, **{name: settings[name] for name in (*SETTINGS, "world_size")}}
    state.update(epoch=epoch, consumed=consumed)
    return state


def check_state(state: object, settings: Mapping[str, object]) -> tuple[int, int]:
    """``(epoch, consumed)`` of a state that fits a loader with these ``settings``; else a one-line ``ValueError``.

    ``settings`` holds :data:`SETTINGS` and ``world_size`` of the loader. Refused: a
    non-dict, another format or version, a missing, extra or mistyped field, a setting
    that differs, a different ``world_size`` for a stream, and an ``epoch`` or
    ``consumed`` out of range.
    """
    if not isinstance(state, Mapping):
        raise ValueError(
            f"the IrisLoader state is a {type(state).__name__}; expected the dict that IrisLoader.state_dict() gives"
        )
    if state.get("format") != FORMAT:
        seen = repr(state["format"]) if "format" in state else "missing"
        raise ValueError(
            f"field 'format' is {seen} in the state; expected {FORMAT!r}: this is not an IrisLoader state "
            "(take it with IrisLoader.state_dict())"
        )
    if type(state.get("version")) is not int or state["version"] != VERSION:
        seen = repr(state["version"]) if "version" in state else "missing"
        raise ValueError(
            f"field 'version' is {seen} in the state; expected {VERSION}: a state format this release of IrisLoader "
            "cannot read. Resume with the release that wrote it"
        )
    _check_fields(state)
    kind = settings["kind"]
    if state["kind"] != kind:
        raise ValueError(
            f"field 'kind' is {state['kind']!r} in the state; expected {kind!r}: the state is from a loader over "
            f"{KINDS.get(state['kind'], 'an unknown kind of split')}, and this loader reads {KINDS[kind]}. {_FIX}"
        )
    for name in SETTINGS[1:]:
        if state[name] != settings[name]:
            hint = " (seed=None draws a new one: pass the seed the state has)" if name == "seed" else ""
            raise ValueError(
                f"field {name!r} is {state[name]!r} in the state; expected {settings[name]!r}, this loader's "
                f"{name}{hint}: a state resumes only a loader that reads the same epochs. {_FIX}"
            )
    if state["world_size"] < 1:
        raise ValueError(f"field 'world_size' is {state['world_size']!r} in the state; expected a positive int")
    if kind == "stream" and state["world_size"] != settings["world_size"]:
        raise ValueError(
            f"field 'world_size' is {state['world_size']} in the state; expected {settings['world_size']}, this "
            f"loader's: a stream resumes only on as many ranks as it ran on ({state['world_size']} in the state, "
            f"{settings['world_size']} here), since each rank's part of a stream depends on their number"
        )
    if state["epoch"] < 0:
        raise ValueError(f"field 'epoch' is {state['epoch']!r} in the state; expected a non-negative int")
    most = _most_consumed(settings)
    if not 0 <= state["consumed"] <= (most if most is not None else state["consumed"]):
        upto = "a non-negative int" if most is None else f"0..{most}"
        raise ValueError(
            f"field 'consumed' is {state['consumed']!r} in the state; expected {upto}, the rows "
            f"{'of the split' if kind == 'map' else 'each rank reads in an epoch'}"
        )
    return state["epoch"], state["consumed"]


def _check_fields(state: Mapping) -> None:
    missing = [name for name in FIELDS if name not in state]
    if missing:
        raise ValueError(
            f"field {missing[0]!r} is missing from the state; expected every field of {FORMAT} state version "
            f"{VERSION}: {', '.join(FIELDS)}"
        )
    extra = [name for name in state if name not in FIELDS]
    if extra:
        raise ValueError(
            f"field {extra[0]!r} is in the state, but not in {FORMAT} state version {VERSION}; expected only "
            f"{', '.join(FIELDS)}"
        )
    for name, kind in FIELDS.items():
        if type(state[name]) is not kind:  # exactly: a bool is not an int here, nor an int a bool
            raise ValueError(
                f"field {name!r} is {state[name]!r} ({type(state[name]).__name__}) in the state; expected a "
                f"{kind.__name__}"
            )


def _most_consumed(settings: Mapping[str, object]) -> int | None:
    """The most ``consumed`` can be: the split's rows (map-style), a rank's rows (a stream whose count is kept)."""
    rows, world_size = settings["num_rows"], settings["world_size"]
    if settings["kind"] == "map":
        return rows
    return rows // world_size if world_size > 1 else None  # one process reads a stream to its end, whatever its card


def describe_state(state: Mapping[str, object]) -> str:
    """A state in a few words, for a log line: where it resumes, and how."""
    unit = "rows of the epoch's order" if state["kind"] == "map" else "rows of this rank's part"
    return (
        f"epoch {state['epoch']}, {state['consumed']} {unit} consumed ({state['kind']}, split {state['split']!r}, "
        f"seed {state['seed']}, batch {state['batch_size']}, world_size {state['world_size']})"
    )
