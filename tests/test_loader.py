"""IrisLoader: the same values as stacked IrisDataset items, reused buffers, epochs, errors, DDP."""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import datasets
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from openeds import schema  # noqa: E402
from preprocessing.augment import (  # noqa: E402
    Compose,
    GaussianBlur,
    HorizontalFlip,
    LineAugment,
    Sample,
    Transform,
    order_rng,
)
from preprocessing.training import IrisDataset, IrisLoader, to_normalized_tensor  # noqa: E402
from preprocessing.training.buffers import (  # noqa: E402
    IMAGE_TABLE,
    POOL_DEPTH,
    WIRE,
    DeviceBatches,
    HostBatches,
    Pool,
    slot_bytes,
)
from tests.ranks import run_ranks  # noqa: E402

pytestmark = pytest.mark.datasets_line

#: TRAIN_AUGMENT's steps, each with p=0.5, so that every small epoch has some of each
AUGMENT = Compose((LineAugment(p=0.5), GaussianBlur(p=0.5), HorizontalFlip(p=0.5)))
NAMES = ("image", "label", "filenames", "spatial_weights", "dist_map")


def expected_batches(loader: IrisLoader, epoch: int) -> list[tuple]:
    """``torch.stack`` of the IrisDataset items of the epoch's rows, with the loader's draws."""
    rows = [int(r) for r in loader.rows(epoch)]
    stop = len(loader) * loader.batch_size
    batches = []
    for start in range(0, stop, loader.batch_size):
        items = [
            loader.dataset.item(row, np.random.default_rng([loader.seed, epoch, row]))
            for row in rows[start : min(start + loader.batch_size, stop)]
        ]
        batches.append(tuple(name if k == 2 else torch.stack(name) for k, name in enumerate(zip(*items, strict=True))))
    return batches


def augmentations_drawn(loader: IrisLoader, epoch: int) -> set[str]:
    """The augmentations that hit some row of the epoch, replaying the draws as ``Augmentation`` makes them."""
    hits = set()
    for row in loader.rows(epoch):
        rng = np.random.default_rng([loader.seed, epoch, int(row)])
        for augmentation in AUGMENT.transforms:
            if rng.random() < augmentation.p:
                hits.add(type(augmentation).__name__)
                augmentation.get_params(rng, (schema.HEIGHT, schema.WIDTH))
    return hits


def assert_batches_equal(got: list, expected: list, where: str) -> None:
    assert len(got) == len(expected), f"{where}: {len(got)} batches, expected {len(expected)}"
    for b, (x, y) in enumerate(zip(got, expected, strict=True)):
        assert x[2] == list(y[2]), f"{where}, batch {b}: filenames"
        for name, a, e in zip(NAMES, x, y, strict=True):
            if name != "filenames":
                assert (a.dtype, a.shape) == (e.dtype, e.shape), f"{where}, batch {b}: {name} dtype or shape"
                assert torch.equal(a, e), f"{where}, batch {b}: {name} differs from the stacked IrisDataset items"


@pytest.mark.parametrize("config", schema.CONFIG_NAMES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batches_equal_stacked_dataset_items(version, config, v1, v2):
    data = {"v1": v1, "v2": v2}[version][config]["train"]  # v1: gamma + CLAHE in the threads
    with IrisLoader(data, batch_size=3, transform=AUGMENT, seed=7, num_threads=2) as loader:
        assert len(loader) == 3 and loader.num_classes == schema.DIST_CHANNELS[config]
        assert loader.preprocessed == (version == "v2")
        for epoch in range(2):
            assert_batches_equal(list(loader), expected_batches(loader, epoch), f"{version}/{config} epoch {epoch}")
            assert augmentations_drawn(loader, epoch) == {"LineAugment", "GaussianBlur", "HorizontalFlip"}


def test_image_table_is_to_normalized_tensor():
    every_value = np.arange(256, dtype=np.uint8)
    assert IMAGE_TABLE.dtype == np.float32
    assert torch.equal(torch.from_numpy(IMAGE_TABLE.copy()), to_normalized_tensor(every_value[None]).reshape(256))


def test_kept_batches_are_never_overwritten_and_the_pool_returns_to_its_depth(v2):
    loader = IrisLoader(v2["pupil"]["train"], batch_size=1, transform=AUGMENT, seed=0)
    kept = list(loader)  # every batch of the epoch, held at once
    assert loader._pool.allocated == len(kept) == 8, "the pool grows by the batches the caller holds"
    assert_batches_equal(kept, expected_batches(loader, 0), "kept batches")
    a_view = kept[5][4][0, 1]  # a view the caller keeps of one batch
    a_copy = a_view.clone()
    del kept
    assert loader._pool.allocated == POOL_DEPTH + 1, "3 kept for reuse, 1 held through a view, 4 let go"
    for epoch in (1, 2, 3):  # normal loops: each batch dropped before the next
        loader._pool.peak = loader._pool.allocated
        for batch in loader:  # noqa: B007 (each batch is held until the next, as in a training loop)
            pass
        del batch
        assert loader._pool.peak <= POOL_DEPTH + 1, f"epoch {epoch}: {loader._pool.peak} slots for a normal loop"
    assert torch.equal(a_view, a_copy), "a view the caller kept was overwritten"
    del a_view
    assert loader._pool.allocated <= POOL_DEPTH
    loader.close()


def test_threads_and_scheduling_do_not_change_an_epoch(v2):
    data = v2["full"]["train"]
    epochs = {}
    for threads in (1, 2):
        with IrisLoader(data, batch_size=4, transform=AUGMENT, seed=3, num_threads=threads) as loader:
            epochs[threads] = [list(loader), list(loader)]
    for epoch in (0, 1):
        assert_batches_equal(epochs[2][epoch], epochs[1][epoch], f"2 threads vs 1, epoch {epoch}")


def test_epochs_advance_reshuffle_and_set_epoch_replays(v2):
    data = v2["pupil"]["train"]
    loader = IrisLoader(data, batch_size=8, transform=AUGMENT, seed=1)
    first, second = next(iter(loader)), next(iter(loader))
    assert sorted(first[2]) == sorted(second[2]) and first[2] != second[2], "each loop is a new, reshuffled epoch"
    loader.set_epoch(0)
    replay = next(iter(loader))
    assert all(torch.equal(a, b) for a, b in zip(first[:2] + first[3:], replay[:2] + replay[3:], strict=True))
    assert replay[2] == first[2]
    assert list(loader.rows(1)) == [data["filename"].index(name) for name in second[2]]
    other = IrisLoader(data, batch_size=8, transform=AUGMENT, seed=1)
    assert next(iter(other))[2] == first[2], "the same seed gives the same epoch"
    loader.close()
    other.close()


def test_shuffle_defaults_to_the_train_split_and_seed_none_draws_one(v2):
    data = v2["pupil"]["train"]
    assert IrisLoader(data).shuffle and not IrisLoader(data, split="validation").shuffle
    unshuffled = IrisLoader(data, batch_size=3, split="validation", transform=AUGMENT)
    assert list(unshuffled.rows(5)) == list(range(8))
    assert [name for batch in unshuffled for name in batch[2]] == data["filename"]
    assert [len(batch[2]) for batch in unshuffled] == [3, 3, 2]
    drawn = IrisLoader(data)
    assert isinstance(drawn.seed, int) and drawn.seed != IrisLoader(data).seed
    for loader in (unshuffled, drawn):
        loader.close()


@pytest.mark.parametrize(
    ("rows", "batch_size", "world_size", "drop_last", "expected"),
    [
        (8, 3, 1, False, 3),
        (8, 3, 1, True, 2),
        (7, 2, 2, False, 2),
        (7, 2, 2, True, 1),
        (8, 4, 3, False, 1),
        (2, 4, 3, False, 0),
    ],
)
def test_len(v2, rows, batch_size, world_size, drop_last, expected):
    data = v2["pupil"]["train"].select(range(rows))
    loaders = [
        IrisLoader(data, batch_size, drop_last=drop_last, seed=0, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    for loader in loaders:
        assert len(loader) == expected
        assert len(list(loader)) == expected
        loader.close()
    shares = [set(loader.rows(4).tolist()) for loader in loaders]
    assert len({len(share) for share in shares}) == 1, "equal shares"
    assert sum(map(len, shares)) == len(set().union(*shares)) == rows // world_size * world_size, "disjoint"


def test_shares_follow_distributed_sampler_without_shuffle(v2):
    data = v2["pupil"]["train"].select(range(7))
    for rank in range(3):
        loader = IrisLoader(data, shuffle=False, seed=0, rank=rank, world_size=3)
        sampler = torch.utils.data.DistributedSampler(range(7), 3, rank, shuffle=False, drop_last=True)
        assert list(loader.rows(0)) == list(sampler)


class FailOn(Transform):
    """Raises a one-line error on one frame, and remembers the exception it raised."""

    def __init__(self, image: np.ndarray | None, filename: str) -> None:
        self.image, self.filename, self.raised = image, filename, []

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.image is not None and np.array_equal(sample.image, self.image):
            error = ValueError(f"frame {self.filename} is bad; expected a good one")
            self.raised.append(error)
            raise error
        return sample


def test_a_gather_error_reaches_the_caller_as_that_exception(v2):
    data = v2["pupil"]["train"]
    transform = FailOn(data.with_format("numpy", dtype=None)[5]["image"], data["filename"][5])
    loader = IrisLoader(data, batch_size=2, shuffle=False, transform=transform, num_threads=2)

    def run() -> list:
        return [batch[2] for batch in loader]

    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError) as info:
        pool.submit(run).result(timeout=60)  # never hangs
    assert info.value is transform.raised[0], "the exception object itself, not a copy or a wrapper"
    assert str(info.value) == f"frame {data['filename'][5]} is bad; expected a good one"
    assert not loader._feed._thread.is_alive(), "the feed thread ended"
    transform.image = None
    assert len(run()) == 4, "the next loop works"
    loader.close()


def test_close_and_context_manager_stop_a_loop_left_mid_epoch(v2):
    data = v2["pupil"]["train"]
    with IrisLoader(data, batch_size=2, transform=AUGMENT, seed=0) as loader:
        for batch in loader:  # noqa: B007 (the batch is held past the loop, and checked there)
            threads = [loader._feed._thread, *loader._executor._threads]
            break
    # the feed and the gather threads started so far (the executor starts one per task while none is idle,
    # so under load the first batch may have needed fewer than num_threads)
    assert len(threads) >= 2 and not [t.name for t in threads if t.is_alive()], "threads left running"
    assert batch[0].shape == (2, 1, 400, 640) and torch.isfinite(batch[4]).all(), "a held batch stays valid"
    assert len(list(loader)) == 4, "a closed loader can loop again"
    first = iter(loader)
    next(first)
    next(iter(loader))  # a newer loop ends the first one
    with pytest.raises(RuntimeError, match=r"ended by close\(\) or by a newer loop over it; start a new loop"):
        next(first)
    del first, batch
    pool = weakref.ref(loader._pool)
    del loader
    assert pool() is None, "a dropped loader lets go of its buffers at once"


# --- two threads on one loader (issue 14 §5): the loop that loses is told so, batches stay intact ---

#: what a loop ended by close() or by a newer loop over the same loader raises
ENDED = r"^this loop over the IrisLoader was ended by close\(\) or by a newer loop over it; start a new loop$"


def run_together(loader: IrisLoader, actions: list[str], hold_first: bool = False) -> list[tuple[object, list]]:
    """Run each action (``"loop"``: one loop over the loader, keeping every batch; ``"close"``) in a
    thread of its own, all released at once by a barrier. Per action: ``"done"`` or the exception, and
    the batches it kept.

    ``hold_first``: every loop waits, after its first batch (or its end), until all have started, so
    that the loops overlap whatever the scheduling.
    """
    start = threading.Barrier(len(actions))
    started = threading.Barrier(actions.count("loop"))
    results: list = [None] * len(actions)

    def run(k: int, action: str) -> None:
        kept: list = []
        waited = not hold_first
        try:
            start.wait(timeout=60)
            if action == "close":
                loader.close()
            for batch in loader if action == "loop" else ():
                kept.append(batch)
                if not waited:
                    waited = True
                    started.wait(timeout=60)
            results[k] = ("done", kept)
        except BaseException as error:  # noqa: BLE001 (asserted on by the caller)
            results[k] = (error, kept)
        finally:
            if not waited:
                started.wait(timeout=60)

    threads = [threading.Thread(target=run, args=(k, a), daemon=True) for k, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not [t for t in threads if t.is_alive()], "a loop hung"
    return results


def by_filename(dataset: IrisDataset) -> dict[str, tuple]:
    """The unaugmented items of every row, by filename: what a batch's rows must hold."""
    return {item[2]: item for item in (dataset.item(i) for i in range(len(dataset)))}


def assert_outcomes(results: list, actions: list[str], items: dict[str, tuple], where: str) -> list[str]:
    """Every loop completed its epoch or was told it was ended, and every batch kept is intact and its own.

    Returns the loops' outcomes ("done" or "ended").
    """
    outcomes, slots = [], []
    for k, ((outcome, kept), action) in enumerate(zip(results, actions, strict=True)):
        if action == "close":
            assert outcome == "done", f"{where}: close() raised {outcome!r}"
            continue
        names = [name for batch in kept for name in batch[2]]
        assert len(set(names)) == len(names), f"{where}, loop {k}: a row handed out twice: {names}"
        if outcome == "done":
            assert sorted(names) == sorted(items), f"{where}, loop {k} completed without every row once"
            outcomes.append("done")
        else:
            assert isinstance(outcome, RuntimeError) and re.match(ENDED, str(outcome)), (
                f"{where}, loop {k}: {type(outcome).__name__}: {outcome}; expected the documented message"
            )
            outcomes.append("ended")
        for batch in kept:
            slots.append(batch[0].data_ptr())
            for j, name in enumerate(batch[2]):
                for i, part in ((0, "image"), (1, "label"), (3, "spatial_weights"), (4, "dist_map")):
                    assert torch.equal(batch[i][j], items[name][i]), f"{where}, loop {k}: {name}'s {part} overwritten"
    assert len(set(slots)) == len(slots), f"{where}: one slot handed out to two batches held at once"
    return outcomes


# "free" is the race as reported: on the old code a loser waiting for its next batch got "feed thread
# ended without a batch or an error" (by the 20th repetition in 6 runs of 7). "overlapping" makes both
# loops start before either goes on: on the old code both ran to the end, each on a feed of its own, or
# the loser got that message (at the first repetition in 7 runs of 7).
@pytest.mark.parametrize(("hold_first", "repetitions"), [(False, 20), (True, 8)], ids=["free", "overlapping"])
def test_two_threads_on_one_loader_the_later_loop_wins(hold_first, repetitions, v2):
    data = v2["pupil"]["train"]
    items = by_filename(IrisDataset(data))
    loader = IrisLoader(data, batch_size=2, seed=0, num_threads=2)
    for repetition in range(repetitions):
        results = run_together(loader, ["loop", "loop"], hold_first)
        outcomes = assert_outcomes(results, ["loop", "loop"], items, f"repetition {repetition}")
        assert "done" in outcomes, f"repetition {repetition}: no loop completed: {outcomes}"
        if hold_first:  # both had started: the later one ended the earlier
            assert sorted(outcomes) == ["done", "ended"], f"repetition {repetition}: {outcomes}"
    assert len(list(loader)) == 4, "the loader loops on"
    loader.close()


def loop_keeping(loader: IrisLoader, kept: list, first: threading.Event) -> None:
    """One loop over the loader: every batch into ``kept``, then ``"done"`` or the RuntimeError that ended it."""
    try:
        for batch in loader:
            kept.append(batch)
            first.set()
        kept.append("done")
    except RuntimeError as error:
        kept.append(error)
    finally:
        first.set()


def test_close_from_another_thread_ends_the_loop_with_the_documented_message(v2):
    data = v2["pupil"]["train"]
    items = by_filename(IrisDataset(data))
    loader = IrisLoader(data, batch_size=2, seed=0, num_threads=2)
    for repetition in range(8):
        actions = ["loop", "close"] if repetition % 2 else ["loop", "loop", "close"]
        assert_outcomes(run_together(loader, actions), actions, items, f"repetition {repetition}")
        mid_loop: list = []
        first = threading.Event()
        thread = threading.Thread(target=loop_keeping, args=(loader, mid_loop, first), daemon=True)
        thread.start()
        assert first.wait(timeout=60)
        loader.close()  # while the loop waits for its next batch, most of the time
        thread.join(timeout=60)
        assert not thread.is_alive(), f"repetition {repetition}: the loop hung after close()"
        ending = mid_loop.pop()
        assert ending == "done" or re.match(ENDED, str(ending)), f"repetition {repetition}: {ending!r}"
        assert_outcomes([("done" if ending == "done" else ending, mid_loop)], ["loop"], items, "mid-loop close")
    assert len(list(loader)) == 4, "a closed loader loops again"
    loader.close()


def test_wire_format_widened_on_the_device_gives_the_same_values(v2):
    # The GPU path (uint8 image and label copied, then widened on the device) with the
    # CPU as the device: everything but pinned memory and the CUDA events.
    data = v2["full"]["train"]
    plain = IrisLoader(data, batch_size=3, transform=AUGMENT, seed=2)
    wired = IrisLoader(data, batch_size=3, transform=AUGMENT, seed=2)
    wired._batches = DeviceBatches(torch.device("cpu"))
    assert_batches_equal(list(wired), list(plain), "wire format widened on the device")
    assert wired._pool.peak <= POOL_DEPTH, "a slot goes back once its copy is done"
    raw = IrisLoader(data, batch_size=3, transform=AUGMENT, seed=2)
    raw._batches = HostBatches(WIRE)
    image, label, *_ = next(iter(raw))
    assert (image.dtype, label.dtype) == (torch.uint8, torch.uint8)
    for loader in (plain, wired, raw):
        loader.close()


class Copy:
    """Stands in for the CUDA event recorded after a copy: done only when the test says so."""

    def __init__(self) -> None:
        self.finished = threading.Event()

    def query(self) -> bool:
        return self.finished.is_set()

    def synchronize(self) -> None:
        self.finished.wait()


class StandInSlot:
    """The pool only moves slots around; this stands in for one without 400 MB of buffers."""

    copy_done = None


def test_a_slot_is_refilled_only_once_its_copy_has_finished():
    made = []
    pool = Pool(lambda: made.append(StandInSlot()) or made[-1])
    first = pool.take()
    first.copy_done = Copy()
    pool.give_back_after_copy(first)
    with ThreadPoolExecutor(1) as executor:
        taking = executor.submit(pool.take)
        time.sleep(0.2)
        assert not taking.done(), "took a slot whose copy had not finished"
        first.copy_done.finished.set()
        assert taking.result(timeout=10) is first, "the slot came back once its copy had finished"
    assert len(made) == 1, "waited for the copy rather than allocating"


def test_slot_bytes_formula():
    assert slot_bytes(64, 2) == 64 * 400 * 640 * (4 + 8 + 4 + 8) == 393_216_000
    assert slot_bytes(64, 2, WIRE) == 64 * 400 * 640 * (1 + 1 + 4 + 8)


def test_wrong_arguments_are_named(v2):
    data = v2["pupil"]["train"]
    cases = [
        ({"device": "cuda"}, r"device='cuda', but CUDA is not available \(torch .*\); use device='cpu'"),
        ({"world_size": 2, "rank": 0}, r"world_size=2 needs a seed: every rank must draw the same permutation"),
        ({"rank": 1}, r"rank=1 and world_size=None: pass both, or neither and initialise torch.distributed"),
        ({"rank": 2, "world_size": 2, "seed": 0}, r"rank=2; expected an int in 0..1 for world_size=2"),
        ({"batch_size": 0}, r"batch_size=0; expected a positive int"),
        ({"num_threads": 1.5}, r"num_threads=1.5; expected a positive int"),
        ({"seed": -1}, r"seed=-1; expected a non-negative int or None"),
    ]
    if torch.cuda.is_available():
        cases = cases[1:]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            IrisLoader(data, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"epoch=-1; expected a non-negative int"):
        IrisLoader(data).set_epoch(-1)


# --- distributed data parallel: 2 processes on gloo ---------------------------------------


def all_reduced_epoch(loader) -> dict:
    """One epoch of a DDP rank: its filenames, and per batch the batch sizes summed over the ranks."""
    names, sums = [], []
    for _image, _label, filenames, _weights, _dist in loader:
        total = torch.tensor([float(len(filenames))])
        torch.distributed.all_reduce(total)  # with unequal batch counts this would fail or time out
        sums.append(total.item())
        names += filenames
    return {"filenames": names, "sums": sums}


def ddp_rank(rank: int, world_size: int, data_dir: str, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=30)
    )
    try:
        data = datasets.load_from_disk(data_dir)
        loader = IrisLoader(data, batch_size=2, transform=AUGMENT, seed=11)  # rank, world_size from torch.distributed
        record = {"rank": loader.rank, "world_size": loader.world_size, "len": len(loader)}
        record["epochs"] = [all_reduced_epoch(loader) for _ in range(2)]
        loader.close()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        torch.distributed.destroy_process_group()


def test_the_order_has_a_stream_of_its_own():
    # SeedSequence ignores trailing zeros: default_rng([seed, e]) is default_rng([seed, e, 0]), row 0's draws.
    def state(rng):
        return rng.bit_generator.state["state"]["state"]

    for seed, epoch in [(0, 0), (11, 3), (int(np.random.SeedSequence().entropy), 1)]:
        rows = {state(np.random.default_rng([seed, epoch, r])) for r in range(8)}
        orders = [state(order_rng(seed, epoch, part)) for part in range(8)]
        orders.append(state(order_rng(seed, epoch, shards=True)))
        assert len(set(orders)) == len(orders) and not set(orders) & rows, (seed, epoch)


def test_ddp_ranks_read_equal_disjoint_shares_of_one_permutation(v2, tmp_path):
    data = v2["pupil"]["train"].select(range(7))  # 7 rows on 2 ranks: 3 each, 1 dropped
    data.save_to_disk(str(tmp_path / "data"))
    run_ranks(ddp_rank, (2, str(tmp_path / "data"), str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world_size"], r["len"]) for r in records] == [(0, 2, 2), (1, 2, 2)]
    reference = IrisLoader(data, batch_size=2, transform=AUGMENT, seed=11, rank=0, world_size=2)
    for epoch in range(2):
        shares = [r["epochs"][epoch]["filenames"] for r in records]
        assert len(shares[0]) == len(shares[1]) == 3 and not set(shares[0]) & set(shares[1]), f"epoch {epoch}"
        order = order_rng(11, epoch).permutation(7)[:6]
        assert shares[0] + shares[1] == [data["filename"][i] for i in [*order[0::2], *order[1::2]]]
        assert records[0]["epochs"][epoch]["sums"] == [4.0, 2.0]
        assert shares[0] == [data["filename"][int(i)] for i in reference.rows(epoch)]
    assert records[0]["epochs"][0]["filenames"] != records[0]["epochs"][1]["filenames"], "reshuffled per epoch"
