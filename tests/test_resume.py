"""IrisLoader.state_dict / load_state_dict: exact mid-epoch resume, elastic map-style resume, refused states.

Every state a loop can give is taken (before the first batch, after each batch, after the
last, between epochs) and loaded into a fresh loader, whose batches must be the rest of
the uninterrupted loop's, bit for bit. The preemption tests (a training script killed and
resumed) are in tests/test_preemption.py.
"""

from __future__ import annotations

import io
import json
import pickle

import datasets
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from preprocessing.augment import order_rng  # noqa: E402
from preprocessing.training import IrisLoader  # noqa: E402
from preprocessing.training.state import FIELDS, SETTINGS  # noqa: E402
from tests.test_loader import AUGMENT, assert_batches_equal  # noqa: E402
from tests.test_streaming import RESUMABLE, parts, stream_of, write_folder  # noqa: E402

pytestmark = pytest.mark.datasets_line  # map-style and streamed splits through datasets

EPOCHS = 2


def kept(batch: tuple) -> tuple:
    """A batch the test keeps: its tensors copied out of the loader's slots."""
    return tuple(part if k == 2 else part.clone() for k, part in enumerate(batch))


def run_with_states(loader: IrisLoader) -> tuple[list[tuple], list[dict], list[tuple[int, dict]]]:
    """Every batch of ``EPOCHS`` epochs, the state at every point (``states[k]`` after ``k`` batches),
    and ``(k, state)`` between two epochs, the loop over.

    Checks that the state after an epoch's last batch and between two epochs are the same: the
    next epoch, nothing consumed. Except on a stream read to its end by one process, whose last
    batch is known only once the stream ends: there the state after the last batch says the
    epoch with all its rows consumed, which resumes alike (an empty rest, then the next epoch).
    """
    batches, states, between = [], [loader.state_dict()], []
    while loader.epoch < EPOCHS:
        for batch in loader:
            batches.append(kept(batch))
            states.append(loader.state_dict())
        between.append((len(batches), loader.state_dict()))
        assert (between[-1][1]["epoch"], between[-1][1]["consumed"]) == (loader.epoch, 0)
        if loader.streaming and loader.world_size == 1:
            assert (states[-1]["epoch"], states[-1]["consumed"]) == (loader.epoch - 1, loader.dataset.num_rows)
        else:
            assert between[-1][1] == states[-1], "after the last batch and after the loop: the same state"
    return batches, states, between


def rest_of(loader: IrisLoader, state: dict) -> list[tuple]:
    """What a fresh loader gives from ``state`` on, to the end of epoch ``EPOCHS - 1``."""
    loader.load_state_dict(state)
    batches = []
    while loader.epoch < EPOCHS:
        batches += [kept(batch) for batch in loader]
    loader.close()
    return batches


# --- the state ------------------------------------------------------------------------------


def test_the_state_is_small_plain_and_carried_by_torch_save_and_json(v2):
    with IrisLoader(v2["pupil"]["train"], 3, transform=AUGMENT, seed=4) as loader:
        batches = iter(loader)
        next(batches)
        state = loader.state_dict()
    assert list(state) == list(FIELDS) and all(type(state[name]) is kind for name, kind in FIELDS.items())
    assert state | {"epoch": 0, "consumed": 3} == state, state
    assert len(pickle.dumps(state)) < 400, len(pickle.dumps(state))
    saved = io.BytesIO()
    torch.save({"loader": state}, saved)
    saved.seek(0)
    assert torch.load(saved, weights_only=True)["loader"] == state
    assert json.loads(json.dumps(state)) == state


def test_torch_distributed_checkpoint_carries_the_loader_as_a_stateful(v2, tmp_path):
    from torch.distributed.checkpoint import load, save
    from torch.distributed.checkpoint.stateful import Stateful

    data = v2["pupil"]["train"]
    with IrisLoader(data, 2, seed=3) as loader, IrisLoader(data, 2, seed=3) as resumed:
        assert isinstance(loader, Stateful)
        batches = iter(loader)
        next(batches), next(batches)
        with pytest.warns(UserWarning, match="single process"):  # no process group: DCP saves as one process
            save({"loader": loader}, checkpoint_id=tmp_path / "dcp")
        with pytest.warns(UserWarning, match="single process"):
            load({"loader": resumed}, checkpoint_id=tmp_path / "dcp")
        assert resumed.state_dict() == loader.state_dict() and resumed.state_dict()["consumed"] == 4
        assert [batch[2] for batch in resumed] == [batch[2] for batch in batches]


# --- exact resume ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shuffle", "drop_last", "augment", "rank", "world_size"),
    [
        (True, False, True, 0, 1),  # batches of 3, 3 and 2 rows
        (False, True, False, 0, 1),  # 3 and 3, the short one dropped
        (True, True, True, 1, 2),  # rank 1 of 2 (resumed on 2 ranks too): 4 rows, a batch of 3
    ],
)
def test_a_map_style_resume_gives_the_rest_of_the_uninterrupted_batches(
    shuffle, drop_last, augment, rank, world_size, v2
):
    data = v2["pupil"]["train"]  # 8 rows, batches of 3: a short last batch, kept or dropped
    options = {
        "shuffle": shuffle, "drop_last": drop_last, "transform": AUGMENT if augment else None, "seed": 9,
        "rank": rank, "world_size": world_size,
    }  # fmt: skip
    with IrisLoader(data, 3, num_threads=2, **options) as loader:
        batches, states, _ = run_with_states(loader)
    assert len(batches) == EPOCHS * len(loader) and len(states) == len(batches) + 1
    per_epoch = len(loader)
    for k, state in enumerate(states):
        assert (state["epoch"], state["consumed"] > 0) == (k // per_epoch, k % per_epoch > 0), (k, state)
        resumed = rest_of(IrisLoader(data, 3, num_threads=1, **options), state)  # num_threads may differ
        assert_batches_equal(resumed, batches[k:], f"resumed after {k} batches ({state['epoch']}, {state['consumed']})")


@pytest.mark.parametrize(("world_size", "rank", "batch_size"), [(1, 0, 3), (2, 1, 2)])
def test_a_stream_resume_gives_the_rest_of_the_uninterrupted_batches(world_size, rank, batch_size, v2, tmp_path):
    # Two shards of 4 and 3 rows, shuffled (the shard order, a buffer of 3 rows) and augmented;
    # with 2 ranks, every other row of the stream, 3 each (the card's 7 // 2), so the number of
    # batches is known; on one process, the stream is read to its end.
    stream = stream_of(write_folder(tmp_path, {"train": parts(v2["pupil"]["train"], 4, 3)}))
    options = {"transform": AUGMENT, "seed": 2, "shuffle_buffer": 3, "rank": rank, "world_size": world_size}
    with IrisLoader(stream, batch_size, num_threads=2, **options) as loader:
        batches, states, between = run_with_states(loader)
    assert len(batches) == EPOCHS * len(loader)
    for k, state in [*enumerate(states), *between]:
        fresh = IrisLoader(stream, batch_size, num_threads=1, **options)
        if state["consumed"] and not RESUMABLE:
            message = refusal(fresh, state)
            assert f"datasets {datasets.__version__} reads a streamed parquet file from its start" in message
            continue
        assert_batches_equal(rest_of(fresh, state), batches[k:], f"stream resumed after {k} batches")


def test_set_epoch_keeps_the_place_in_the_states_epoch_and_drops_it_for_another(v2):
    data, options = v2["pupil"]["train"], {"transform": AUGMENT, "seed": 5}
    with IrisLoader(data, 2, **options) as loader:
        batches, states, _ = run_with_states(loader)
    state = states[5]  # epoch 1, after its first batch
    assert (state["epoch"], state["consumed"]) == (1, 2)
    loader = IrisLoader(data, 2, **options)
    loader.load_state_dict(state)
    assert loader.epoch == 1 and loader.state_dict() == state, "loaded: where the next loop starts"
    resumed = []
    for epoch in range(loader.epoch, EPOCHS):  # the usual loop, started at the state's epoch
        loader.set_epoch(epoch)
        resumed += [kept(batch) for batch in loader]
    assert_batches_equal(resumed, batches[5:], "set_epoch(the state's epoch)")
    loader.load_state_dict(state)
    loader.set_epoch(0)  # another epoch: read whole, the place in epoch 1 dropped
    assert loader.state_dict()["consumed"] == 0
    assert_batches_equal([kept(batch) for batch in loader], batches[:4], "set_epoch(another epoch)")
    assert_batches_equal([kept(batch) for batch in loader], batches[4:], "then epoch 1, whole")
    loader.close()


def test_a_loop_left_mid_epoch_is_over_and_the_state_says_the_next_epoch(v2):
    with IrisLoader(v2["pupil"]["train"], 2, seed=5) as loader:
        for _batch in loader:
            assert loader.state_dict()["consumed"] == 2 and loader.epoch == 0
            break
        assert loader.epoch == 1 and (loader.state_dict()["epoch"], loader.state_dict()["consumed"]) == (1, 0)


# --- elastic resume (map-style) -------------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "batches_before"), [(2, 1, 1), (2, 3, 1), (3, 2, 1), (2, 3, 0)])
def test_an_elastic_resume_deals_the_rest_of_the_epoch_to_the_new_ranks(before, after, batches_before, v2):
    data = v2["pupil"]["train"].select(range(7))  # 7 rows, batches of 1: remainders on 2 and 3 ranks
    names = data["filename"]
    options = {"transform": AUGMENT, "seed": 3}
    seen, states = [], []
    for rank in range(before):  # each rank's first batches; the ranks hold the same state
        with IrisLoader(data, 1, rank=rank, world_size=before, **options) as loader:
            batches = iter(loader)
            for _ in range(batches_before):
                seen += next(batches)[2]
            states.append(loader.state_dict())
    assert all(state == states[0] for state in states), "every rank holds the same state"
    consumed = states[0]["consumed"]
    assert consumed == batches_before * before
    order = [names[int(i)] for i in order_rng(3, 0).permutation(7)]
    assert sorted(seen) == sorted(order[:consumed]), "the consumed prefix of the epoch's order"
    rest, next_epoch = [], []
    for rank in range(after):
        loader = IrisLoader(data, 1, rank=rank, world_size=after, num_threads=1, **options)
        loader.load_state_dict(states[0])
        resumed = [kept(batch) for batch in loader]
        assert [name for batch in resumed for name in batch[2]] == [names[int(i)] for i in loader.rows(0, consumed)]
        reference = IrisLoader(data, 1, rank=rank, world_size=after, **options)  # the rows' values and draws
        expected = {names[i]: reference.dataset.item(i, np.random.default_rng([3, 0, i])) for i in range(7)}
        for batch in resumed:
            item = expected[batch[2][0]]
            assert all(torch.equal(batch[k][0], item[k]) for k in (0, 1, 3, 4)), batch[2]
        rest += [name for batch in resumed for name in batch[2]]
        next_epoch.append([name for batch in loader for name in batch[2]])
        assert next_epoch[-1] == [names[int(i)] for i in reference.rows(1)], "then the usual epochs on the new ranks"
        loader.close()
    usable = (7 - consumed) // after * after
    assert len(seen + rest) == len(set(seen + rest)), "no row of the epoch read twice"
    assert sorted(seen + rest) == sorted(order[: consumed + usable]), "none lost but the new remainder"


def test_rows_of_a_resumed_epoch_check_their_start(v2):
    loader = IrisLoader(v2["pupil"]["train"], 2, seed=0, rank=1, world_size=2)
    assert list(loader.rows(0, 0)) == list(loader.rows(0))
    assert list(loader.rows(0, 3)) == list(order_rng(0, 0).permutation(8)[3:7][1::2])
    with pytest.raises(ValueError, match=r"^start=9; expected an int in 0\.\.8, the rows of the split$"):
        loader.rows(0, 9)


# --- refused states ---------------------------------------------------------------------------

#: the fields a state may differ in from the loader that loads it, per kind: all others are refused
MAY_DIFFER = {"map": {"epoch", "consumed", "world_size"}, "stream": {"epoch", "consumed"}}


@pytest.fixture(scope="module")
def loaders(v2, tmp_path_factory) -> dict[str, IrisLoader]:
    """A map-style and a stream loader (nothing read: v2's features tell the layout), with a shuffle buffer."""
    folder = write_folder(tmp_path_factory.mktemp("stream"), {"train": parts(v2["pupil"]["train"], 5, 3)})
    return {
        "map": IrisLoader(v2["pupil"]["train"], 2, seed=1, transform=AUGMENT),
        "stream": IrisLoader(stream_of(folder), 2, seed=1, transform=AUGMENT, shuffle_buffer=3),
    }


def changed(value: object) -> object:
    """Another value of the same type."""
    return not value if isinstance(value, bool) else value + 1 if isinstance(value, int) else value + "x"


def mistyped(value: object) -> object:
    """The value as another type: a bool as an int, an int as a string, a string as an int."""
    return int(value) if isinstance(value, bool) else str(value) if isinstance(value, int) else 1


def refusal(loader: IrisLoader, state: object) -> str:
    with pytest.raises(ValueError) as refused:
        loader.load_state_dict(state)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("kind", ["map", "stream"])
@pytest.mark.parametrize("name", list(FIELDS))
def test_every_field_is_checked(name, kind, loaders):
    loader = loaders[kind]
    state = loader.state_dict()
    assert f"field '{name}' is missing" in refusal(loader, {k: v for k, v in state.items() if k != name})
    assert f"field '{name}' is {mistyped(state[name])!r}" in refusal(loader, state | {name: mistyped(state[name])})
    other = state | {name: changed(state[name])}
    if kind == "stream" and name == "consumed" and not RESUMABLE:
        assert f"datasets {datasets.__version__} reads a streamed parquet file" in refusal(loader, other)
    elif name in MAY_DIFFER[kind]:  # accepted, and applied
        loader.load_state_dict(other)
        assert loader.state_dict()[name] == (other[name] if name != "world_size" else loader.world_size)
        loader.load_state_dict(state)
    else:
        expected = f"field '{name}' is {other[name]!r} in the state; expected {state[name]!r}"
        assert expected in refusal(loader, other)
    assert name in SETTINGS or name in {"format", "version", "world_size", "epoch", "consumed"}


def test_other_states_are_refused_in_one_line(loaders):
    map_loader, stream_loader = loaders["map"], loaders["stream"]
    assert refusal(map_loader, [1, 2]) == (
        "the IrisLoader state is a list; expected the dict that IrisLoader.state_dict() gives"
    )
    assert "is in the state, but not in IrisLoader state version 1" in refusal(
        map_loader, map_loader.state_dict() | {"offset": 3}
    )
    message = refusal(stream_loader, map_loader.state_dict())
    assert message.startswith("field 'kind' is 'map' in the state; expected 'stream': the state is from a loader over ")
    assert "a map-style split, and this loader reads a streamed split" in message
    assert "expected 'map'" in refusal(map_loader, stream_loader.state_dict())
    assert "field 'version' is 2 in the state; expected 1" in refusal(
        map_loader, map_loader.state_dict() | {"version": 2}
    )
    assert "(seed=None draws a new one: pass the seed the state has)" in refusal(
        IrisLoader(map_loader.dataset.rows.dataset, 2, transform=AUGMENT), map_loader.state_dict()
    )
    for too_many in (9, -1):
        assert f"field 'consumed' is {too_many} in the state; expected 0..8" in refusal(
            map_loader, map_loader.state_dict() | {"consumed": too_many}
        )
    assert "field 'epoch' is -1" in refusal(map_loader, map_loader.state_dict() | {"epoch": -1})
    assert "field 'world_size' is 0" in refusal(map_loader, map_loader.state_dict() | {"world_size": 0})


def test_a_stream_resumes_on_the_same_number_of_ranks_only(loaders):
    stream = loaders["stream"].dataset.rows.stream
    two = IrisLoader(stream, 2, seed=1, transform=AUGMENT, shuffle_buffer=3, rank=0, world_size=2)
    state = two.state_dict()
    message = refusal(loaders["stream"], state)
    assert message.startswith("field 'world_size' is 2 in the state; expected 1, this loader's: a stream resumes only")
    assert "(2 in the state, 1 here)" in message
    three = IrisLoader(stream, 2, seed=1, transform=AUGMENT, shuffle_buffer=3, rank=2, world_size=3)
    assert "(2 in the state, 3 here)" in refusal(three, state)
    assert "field 'consumed' is 5 in the state; expected 0..4" in refusal(two, state | {"consumed": 5})
