"""What a run is doing now, for the one line its error boundary prints when it fails (`openeds.cli`).

A command's boundary opens a frame for its run; the command says, as it goes, what it is doing
(:func:`now`: "listing the raw data in RAW", "building the shards of pupil/train in OUT", ...).
Code that runs inside it can name a finer step for the time of a call (:func:`stage`, or the
:func:`during` decorator: "uploading the files to USER/NAME"). An exception that leaves a
:func:`stage` takes that stage with it (the innermost it left, the first time), so the boundary
names the step that failed even after the frames are gone; an exception raised directly under a
frame set by :func:`now` is named by that frame, which the boundary reads (:func:`current`).

Each thread has its own frames, so a worker thread naming its step never renames the main
thread's. Nothing here prints or imports anything beyond the standard library: the library
modules that name their steps stay usable without a boundary (the frames are then just kept).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

#: the attribute an exception carries once it has left a stage: the innermost stage it left
_ATTRIBUTE = "_openeds_stage"
_local = threading.local()


def _frames() -> list[str]:
    frames = getattr(_local, "frames", None)
    if frames is None:
        frames = _local.frames = []
    return frames


def reset(doing: str) -> None:
    """Start this thread's frames afresh with `doing` (a command's boundary, at the start of a run)."""
    _local.frames = [doing]


def now(doing: str) -> None:
    """Say what this thread is doing now: it replaces the innermost frame's text (opened if there is none)."""
    frames = _frames()
    if frames:
        frames[-1] = doing
    else:
        frames.append(doing)


def current() -> str | None:
    """What this thread is doing now (its innermost frame), or None before anything was said."""
    frames = _frames()
    return frames[-1] if frames else None


@contextmanager
def stage(doing: str) -> Iterator[None]:
    """A step inside the current one; an exception that leaves it is marked with it (see :func:`of`)."""
    frames = _frames()
    frames.append(doing)
    depth = len(frames)
    try:
        yield
    except BaseException as error:
        if getattr(error, _ATTRIBUTE, None) is None:
            try:
                setattr(error, _ATTRIBUTE, frames[depth - 1])  # its text, as `now` may have changed it
            except (AttributeError, TypeError):  # an exception type without a __dict__: the frame still says it
                pass
        raise
    finally:
        del frames[depth - 1 :]


def during(template: str) -> Callable[[F], F]:
    """Decorate a function: each call is a :func:`stage` named by `template` formatted with the call's arguments.

    ``@during("uploading the files to {repo_id}")``: a failure of the call names the repo it was for.
    Attributes work as in :meth:`str.format` (``{task.relpath}``).
    """

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: object, **kwargs: object) -> object:
            try:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                doing = template.format(**bound.arguments)
            except (TypeError, KeyError, AttributeError, IndexError, ValueError):
                doing = template  # the call itself will say what is wrong with its arguments
            with stage(doing):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def of(error: BaseException) -> str | None:
    """The stage `error` failed in: the first stage marked on it or on an exception of its chain, else None."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        marked = getattr(link, _ATTRIBUTE, None)
        if isinstance(marked, str):
            return marked
        link = link.__cause__ or link.__context__
    return None
