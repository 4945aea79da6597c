"""Streaming read speed: IrisLoader over a streamed split against the map-style loader and the decode limit.

Renders the synthetic sample, repeats each frame to a few hundred rows and has
push.py write them as local parquet shards (zstd, several shards), then times, each
in a child process of its own, one thread each, batch 64, model-ready tensors on the
CPU device:

  (s)  IrisLoader over ``load_dataset(folder, split="train", streaming=True)``,
       1 gather thread, Arrow's CPU pool at 1 thread, unshuffled;
  (s_shuffled) (s) shuffled as training does by default: shards reordered per epoch
       (datasets 5.x) and a shuffle buffer of 256 rows;
  (m)  IrisLoader over the map-style ``load_dataset(folder, split="train")`` (its
       memory-mapped Arrow cache, built before the timing), 1 gather thread;
  (l)  the decode limit: ``pyarrow.parquet.read_table(use_threads=False)`` of the same
       files into NumPy views of the array columns, with no other work;
  (r)  for the profile: the stream alone, ``with_format("arrow").iter(batch_size=16)``
       into NumPy views, with no other work (Arrow's CPU pool at 1 thread);
  (s2) (s_shuffled) with 2 gather threads and Arrow's CPU pool at 2 threads.

Two measured sections besides, the same run:

  shuffle: the shuffle on positions alone (no rows), today's keyed-delay order against the
       swap buffer it replaced, over the same ``--positions`` positions at window 256:
       the spread of each row's output position around its input position (std, mean
       ``|d|``, the 5-95 % range), how often two neighbouring input rows come out within
       16 positions of each other, the mean ``|d|`` of the first window's outputs, the
       rows held (most, mean), and the rows a resume re-reads (frontier minus the oldest
       held position; mean and most), and the time to replay half of it;
  resume: on the streamed folder, one thread, Arrow's CPU pool at 1 thread: the rows
       datasets' parquet reader decodes (counted on its table generator) and the time to
       the first rows, for datasets' own ``IterableDataset.load_state_dict`` (unshuffled:
       it has no exact shuffle resume), ``StreamRows.rows(start=h)`` unshuffled, and
       shuffled at window ``--window``: a fresh epoch's first batch of 64 against a
       resumed one's, with the time to decode one window plus a record batch (the
       issue's goal) from the rate of the unshuffled read.

A gather thread of (s) works beside the stream's reader thread, which decodes; the
CPU seconds per sample are printed beside each rate. Each feed runs a warm-up epoch,
then epochs for at least ``--seconds``; the rounds are interleaved and each feed
reports its best. Prints samples/s, the ratios (goal: (s) >= 0.67x (l)) and the load
average, and writes them as JSON.

    python -m benchmarks.bench_streaming [--frames 64] [--repeat 6] [--seconds 8] [--rounds 3]
        [--positions 20000] [--window 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks._common import main_behind_the_boundary, run_in_child, status_mb, write_results
from openeds.schema import raw_row_bytes
from openeds.synthetic import write_sample
from preprocessing.training import IrisLoader
from preprocessing.training.arrow_rows import _leaf_view
from preprocessing.training.shuffle import KeyedOrder, replay, swap_buffer_order
from preprocessing.training.source import STREAM_BATCH_ROWS, StreamRows
from push import push

BATCH = 64
GOAL = 0.67  # (s) / (l)
SPLIT = "train"


def build_folder(work: Path, frames: int, repeat: int) -> Path:
    """push.py's local folder of ``frames * repeat`` train rows in about 6 shards."""
    raw = write_sample(work / "raw", {SPLIT: frames, "validation": 1, "test": 1})
    images = raw / "openEDS" / "openEDS" / SPLIT
    for copy in range(1, repeat):  # stems that sort after the originals: a row group holds distinct frames
        for image in sorted((images / "images").glob("0*.png")):
            stem = f"{copy}{image.stem}"
            shutil.copy(image, images / "images" / f"{stem}.png")
            shutil.copy(images / "labels" / f"{image.stem}.npy", images / "labels" / f"{stem}.npy")
    shard = frames * repeat // 6 * raw_row_bytes("pupil")
    push(data_dir=raw, local_dir=work / "out", upload=False, splits=[SPLIT], num_proc=2, max_shard_size=shard)
    return work / "out"


# --- the feeds, each in a child process ----------------------------------------------------


def timed(epoch: Callable[[], Iterable], seconds: float) -> dict:
    """Samples/s over whole epochs lasting at least ``seconds``, after one warm-up epoch."""
    for _ in epoch():
        pass
    samples, epochs = 0, 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds or not epochs:
        for batch in epoch():
            samples += batch
        epochs += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"samples": samples, "epochs": epochs, "wall_s": wall, "samples_per_s": samples / wall,
            "cpu_ms_per_sample": 1e3 * cpu / samples}  # fmt: skip


def loader_epochs(loader: IrisLoader) -> Callable[[], Iterable]:
    def epoch() -> Iterable[int]:
        for _image, _label, filenames, _weights, _dist in loader:
            yield len(filenames)

    return epoch


def stream_loader(folder: str, threads: int, shuffle: bool) -> dict:
    stream = datasets.load_dataset(folder, split=SPLIT, streaming=True)
    with IrisLoader(stream, BATCH, seed=0, shuffle=shuffle, num_threads=threads) as loader:
        return timed(loader_epochs(loader), ARGS.seconds)


def map_loader(folder: str) -> dict:
    mapped = datasets.load_dataset(folder, split=SPLIT)
    with IrisLoader(mapped, BATCH, seed=0, shuffle=True, num_threads=1) as loader:
        return timed(loader_epochs(loader), ARGS.seconds)


def _views(table: pa.Table) -> None:
    for name in ("image", "label", "spatial_weights", "dist_map"):
        for chunk in table.column(name).chunks:
            _leaf_view(chunk)[0].to_numpy(zero_copy_only=True)


def decode_limit(folder: str) -> dict:
    files = sorted(Path(folder, "data").glob(f"{SPLIT}-*.parquet"))

    def epoch() -> Iterable[int]:
        for file in files:
            table = pq.read_table(file, use_threads=False)
            _views(table)
            yield table.num_rows

    return timed(epoch, ARGS.seconds)


def stream_read(folder: str) -> dict:
    stream = datasets.load_dataset(folder, split=SPLIT, streaming=True).with_format("arrow")

    def epoch() -> Iterable[int]:
        for table in stream.iter(batch_size=16):
            _views(table)
            yield table.num_rows

    return timed(epoch, ARGS.seconds)


FEEDS = {
    "s_streaming_1_thread": lambda folder: stream_loader(folder, 1, shuffle=False),
    "s_shuffled_streaming_1_thread": lambda folder: stream_loader(folder, 1, shuffle=True),
    "m_map_style_1_thread": map_loader,
    "l_decode_limit": decode_limit,
    "r_stream_read_only": stream_read,
    "s2_shuffled_streaming_2_threads": lambda folder: stream_loader(folder, 2, shuffle=True),
}
ARGS = argparse.Namespace(seconds=8.0, window=64)
#: the window of the shuffle section: the default shuffle_buffer
SPREAD_WINDOW = 256


# --- the shuffle on positions: the keyed order against the swap buffer it replaced -------------


def _displacement(out: list[int]) -> np.ndarray:
    where = np.empty(len(out), np.int64)
    where[np.asarray(out)] = np.arange(len(out))
    return where - np.arange(len(out))


def _spread(out: list[int], held: list[int], reread: list[int], window: int) -> dict:
    d = _displacement(out)
    where = d + np.arange(len(d))
    return {
        "std": float(d.std()),
        "mean_abs": float(np.abs(d).mean()),
        "p5": float(np.quantile(d, 0.05)),
        "p95": float(np.quantile(d, 0.95)),
        "neighbours_within_16": float((np.abs(np.diff(where)) < 16).mean()),
        "first_window_mean_abs": float(np.abs(d[np.asarray(out[:window])]).mean()),
        "max_held": max(held),
        "mean_held": float(np.mean(held)),
        "reread_mean": float(np.mean(reread)),
        "reread_max": max(reread),
    }


def shuffle_spread(positions: int, window: int = SPREAD_WINDOW) -> dict:
    """Both shuffles on the same ``positions`` positions, in this process (integers only)."""
    swapped, swap_reread = swap_buffer_order(positions, window, np.random.default_rng(0))
    swap_held = [min(window, p + 1) for p in range(window, positions)]  # full once filled
    order, keyed, held, reread = KeyedOrder(window, seed=0, epoch=0, part=0), [], [], []
    for position in range(positions):
        order.admit(position)
        while order.due():
            keyed.append(order.pop())
            held.append(len(order))  # besides the row on its way out, as the swap buffer's count
            reread.append(order.frontier - min(order.held) if len(order) else 0)
    order.end()
    keyed += [order.pop() for _ in range(len(order))]
    start = time.perf_counter()
    replay(KeyedOrder(window, seed=0, epoch=0, part=0), positions // 2, lambda row: row < positions, False)
    replay_s = time.perf_counter() - start
    return {
        "positions": positions,
        "window": window,
        "swap_buffer": _spread(swapped, swap_held, swap_reread, window),
        "keyed": {**_spread(keyed, held, reread, window), "span": order.span},
        "replay_half_ms": 1e3 * replay_s,
    }


# --- resuming a stream: rows decoded and time to the first rows ------------------------------


def _count_decoded(stream: datasets.IterableDataset) -> list[int]:
    """Count the rows datasets' parquet reader decodes for ``stream`` and every stream made from it (its table
    generator, wrapped on the stream's examples iterable, which the copies share): a measurement hook."""
    decoded = [0]
    source = stream._ex_iterable
    generate = source.generate_tables_fn

    def counting(builder: object, **kwargs: object) -> Iterator:
        for key, table in generate(**kwargs):
            decoded[0] += table.num_rows
            yield key, table

    source.generate_tables_fn = types.MethodType(counting, generate.__self__)  # still the builder's method
    return decoded


def _first(rows: Iterable, count: int, decoded: list[int]) -> dict:
    """Time and rows decoded to the first ``count`` rows of ``rows`` (then closed)."""
    before, start, names = decoded[0], time.perf_counter(), []
    for row in rows:
        names.append(row.filename)
        if len(names) == count:
            break
    seconds = time.perf_counter() - start
    rows.close()
    return {"rows": len(names), "seconds": seconds, "decoded": decoded[0] - before, "names": names}


def resume_costs(folder: str) -> dict:
    stream = datasets.load_dataset(folder, split=SPLIT, streaming=True)
    decoded = _count_decoded(stream)
    source = StreamRows(stream)
    n = source.num_rows
    start = time.perf_counter()
    plain = [row.filename for row in source.rows(0)]
    per_row = (time.perf_counter() - start) / n
    h = n // 2 // STREAM_BATCH_ROWS * STREAM_BATCH_ROWS
    # datasets' own resume: a state taken after h rows read as the loader reads (16-row tables)
    arrow = stream.with_format("arrow")
    tables = arrow.iter(batch_size=STREAM_BATCH_ROWS)
    for _ in range(h // STREAM_BATCH_ROWS):
        next(tables)
    state = arrow.state_dict()
    tables.close()
    again = datasets.load_dataset(folder, split=SPLIT, streaming=True).with_format("arrow")
    theirs = _count_decoded(again)
    again.load_state_dict(state)
    before, start = theirs[0], time.perf_counter()
    first = next(iter(again.iter(batch_size=STREAM_BATCH_ROWS)))
    datasets_resume = {"seconds": time.perf_counter() - start, "decoded": theirs[0] - before,
                       "exact": first.column("filename")[0].as_py() == plain[h]}  # fmt: skip
    ours = _first(source.rows(0, start=h), 1, decoded)
    ours_plain = {k: v for k, v in ours.items() if k != "names"} | {"exact": ours["names"] == plain[h : h + 1]}
    # shuffled: a fresh epoch's first batch against a resumed one's, late in the epoch
    window = max(1, min(ARGS.window, n // 6))
    shuffled = dict(order_seed=0, buffer=window)
    whole = [row.filename for row in source.rows(0, **shuffled)]
    late = max(1, n - BATCH)
    fresh = _first(source.rows(0, **shuffled), BATCH, decoded)
    resumed = _first(source.rows(0, **shuffled, start=late), BATCH, decoded)
    return {
        "rows": n,
        "decode_ms_per_row": 1e3 * per_row,
        "unshuffled_start": h,
        "datasets_load_state_dict": datasets_resume,
        "stream_rows_start": ours_plain,
        "window": window,
        "shuffled_start": late,
        "fresh_first_batch": {k: v for k, v in fresh.items() if k != "names"},
        "resumed_first_batch": {k: v for k, v in resumed.items() if k != "names"}
        | {"exact": resumed["names"] == whole[late : late + BATCH]},
        "goal_seconds": (window + STREAM_BATCH_ROWS) * per_row,
    }


def run_child(name: str, folder: str) -> None:
    datasets.disable_progress_bars()
    threads = 2 if name.startswith("s2") else 1
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    pa.set_cpu_count(threads)
    load = os.getloadavg()
    result = resume_costs(folder) if name == "resume" else FEEDS[name](folder)
    result["load_average"] = [round(x, 2) for x in (*load, *os.getloadavg())]
    result["peak_rss_mb"] = round(status_mb("VmHWM"))
    print(json.dumps(result), flush=True)


def feed_in_child(name: str, folder: Path) -> dict:
    args = ("--child", name, "--folder", str(folder), "--seconds", str(ARGS.seconds), "--window", str(ARGS.window))
    return run_in_child("benchmarks.bench_streaming", *args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="synthetic frames to render (default 64)")
    parser.add_argument("--repeat", type=int, default=6, help="copies of each frame (default 6: 384 rows)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds of each feed (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the feeds; each reports its best")
    parser.add_argument("--positions", type=int, default=20_000, help="positions of the shuffle section")
    parser.add_argument("--window", type=int, default=64, help="shuffle window of the resume section (default 64)")
    parser.add_argument("--child", choices=[*FEEDS, "resume"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    ARGS.seconds, ARGS.window = args.seconds, args.window
    if args.child:
        run_child(args.child, args.folder)
        return
    datasets.disable_progress_bars()
    shuffle = shuffle_spread(args.positions)
    with tempfile.TemporaryDirectory() as work:
        folder = build_folder(Path(work), args.frames, args.repeat)
        shards = sorted((folder / "data").glob(f"{SPLIT}-*.parquet"))
        rows = datasets.load_dataset(str(folder), split=SPLIT).num_rows  # builds the map-style cache once
        rounds: dict[str, list[dict]] = {name: [] for name in FEEDS}
        for _ in range(args.rounds):  # interleaved, so that a busy spell on shared cores hits every feed
            for name in FEEDS:
                rounds[name].append(feed_in_child(name, folder))
        resume = feed_in_child("resume", folder)
        megabytes = sum(p.stat().st_size for p in shards) / 1e6
    results = {}
    for name, runs in rounds.items():
        best = dict(max(runs, key=lambda r: r["samples_per_s"]))
        best["rounds_samples_per_s"] = [round(r["samples_per_s"], 1) for r in runs]
        best["rounds_load_average"] = [r["load_average"] for r in runs]
        results[name] = best
    report(results, rows, len(shards), megabytes, args, shuffle, resume)


def report_shuffle(spread: dict) -> None:
    print(f"shuffle on {spread['positions']:,} positions, window {spread['window']} (positions only, same run):")
    for name in ("swap_buffer", "keyed"):
        r = spread[name]
        print(
            f"  {name:12s} displacement std {r['std']:6.1f}, mean |d| {r['mean_abs']:6.1f}, 5-95% "
            f"{r['p5']:.0f}..{r['p95']:.0f}, neighbours within 16 {r['neighbours_within_16']:.3f}, first window "
            f"mean |d| {r['first_window_mean_abs']:.0f}; held {r['max_held']} at most, {r['mean_held']:.1f} on "
            f"average; a resume re-reads {r['reread_mean']:.0f} rows on average, {r['reread_max']} at most"
        )
    print(f"  replaying half of it (to output {spread['positions'] // 2:,}): {spread['replay_half_ms']:.0f} ms")


def report_resume(resume: dict) -> None:
    ms = 1e3
    print(f"resume on the streamed folder ({resume['rows']} rows, {resume['decode_ms_per_row']:.1f} ms a row):")
    ways = (("datasets load_state_dict", "datasets_load_state_dict"), ("rows(start=h)", "stream_rows_start"))
    for label, key in ways:
        r = resume[key]
        print(
            f"  unshuffled, at row {resume['unshuffled_start']}: {label:24s} first rows after {ms * r['seconds']:6.0f} "
            f"ms, {r['decoded']} rows decoded, exact: {r['exact']}"
        )
    fresh, resumed = resume["fresh_first_batch"], resume["resumed_first_batch"]
    print(
        f"  shuffled, window {resume['window']}: a fresh epoch's first batch of {BATCH} after "
        f"{ms * fresh['seconds']:.0f} ms ({fresh['decoded']} rows decoded); resumed at row {resume['shuffled_start']}: "
        f"{ms * resumed['seconds']:.0f} ms ({resumed['decoded']} rows decoded), exact: {resumed['exact']}; one "
        f"window plus a record batch decodes in {ms * resume['goal_seconds']:.0f} ms"
    )


def report(
    results: dict,
    rows: int,
    shards: int,
    megabytes: float,
    args: argparse.Namespace,
    shuffle: dict,
    resume: dict,
) -> None:
    rate = {name: r["samples_per_s"] for name, r in results.items()}
    limit = rate["l_decode_limit"]
    ratios = {f"{name}_over_l": r / limit for name, r in rate.items() if name != "l_decode_limit"}
    for name, r in results.items():
        load = "/".join(f"{x:.2f}" for x in r["load_average"][:3])
        spread = ", ".join(f"{x:.0f}" for x in r["rounds_samples_per_s"])
        print(
            f"{name:34s} {r['samples_per_s']:7.1f} samples/s (rounds {spread}), {r['cpu_ms_per_sample']:5.2f} "
            f"CPU ms/sample, {rate[name] / limit:5.2f}x (l), peak RSS {r['peak_rss_mb']:,} MB, load {load}"
        )
    for name in ("s_streaming_1_thread", "s_shuffled_streaming_1_thread"):
        met = ratios[f"{name}_over_l"] >= GOAL
        print(f"goal {name} >= {GOAL}x (l): {ratios[f'{name}_over_l']:.2f} {'met' if met else 'NOT met'}")
    report_shuffle(shuffle)
    report_resume(resume)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    path = write_results(
        "streaming",
        {
            "rows": rows,
            "shards": shards,
            "parquet_mb": round(megabytes, 1),
            "batch_size": BATCH,
            "timed_seconds": args.seconds,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "versions": {"torch": torch.__version__, "datasets": datasets.__version__, "pyarrow": pa.__version__},
            "results": results,
            "ratios_to_l": ratios,
            "goal": {"s_over_l": GOAL, "met": ratios["s_streaming_1_thread_over_l"] >= GOAL},
            "shuffle": shuffle,
            "resume": resume,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
