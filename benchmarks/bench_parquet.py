"""Parquet bytes per row: push.py's shards against ``datasets``' default parquet.

The baseline is ``Dataset.to_parquet`` of the same rows (the writer ``push_to_hub`` uses, snappy,
datasets' own row groups). Both are written in this run from the same synthetic frames.

    python -m benchmarks.bench_parquet [--frames 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks._common import main_behind_the_boundary, write_results
from openeds import raw
from openeds.materialize import materialize
from openeds.synthetic import write_sample
from openeds_precomputed import OpenEDSPrecomputed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args(argv)
    results: dict = {"frames": args.frames, "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_sample(Path(tmp) / "raw", {"train": args.frames})
        pairs = raw.list_pairs(raw.find_split_dirs(root)["train"]).pairs
        for config in ("pupil", "full"):
            builder = OpenEDSPrecomputed(config_name=config, data_dir=str(root), cache_dir=f"{tmp}/cache")
            builder.download_and_prepare()
            dataset = builder.as_dataset(split="train")
            start = time.perf_counter()
            baseline_bytes = dataset.to_parquet(f"{tmp}/baseline-{config}.parquet")
            baseline_s = time.perf_counter() - start
            baseline_bytes = Path(f"{tmp}/baseline-{config}.parquet").stat().st_size
            start = time.perf_counter()
            sizes = materialize({(config, "train"): pairs}, Path(tmp) / "out")
            ours_s = time.perf_counter() - start
            ours = sizes[config]["train"].parquet_bytes
            n = len(pairs)
            row = {
                "baseline_mb_per_row": round(baseline_bytes / n / 1e6, 3),
                "ours_mb_per_row": round(ours / n / 1e6, 3),
                "ratio": round(ours / baseline_bytes, 3),
                "baseline_write_s": round(baseline_s, 2),
                "ours_build_and_write_s": round(ours_s, 2),
            }
            results["configs"][config] = row
            print(
                f"{config:5s}: to_parquet {row['baseline_mb_per_row']:.3f} MB/row, push.py "
                f"{row['ours_mb_per_row']:.3f} MB/row, ratio {row['ratio']:.2f}x (goal <= 0.7x)"
            )
    print(f"wrote {write_results('parquet', results)}")
    return results


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
