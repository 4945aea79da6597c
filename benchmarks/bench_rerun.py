"""What content hashing adds to a re-run of push.py: MB/s of input hashed, and the re-run's time.

A re-run hashes every input file (``openeds.materialize.digest_pair``) to decide which shards
are still current. This script builds a synthetic sample once, then times, in this process:

  (a) a re-run of ``materialize`` on the built folder (every shard current: hash, compare, skip);
  (b) the hashing alone, as input MB/s;
  (c) for scale, building the same rows from scratch.

Files are read from the page cache (they were just written); a cold disk adds its own read time.

    python -m benchmarks.bench_rerun [--frames 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from benchmarks._common import best_of, main_behind_the_boundary, write_results
from openeds import raw
from openeds.materialize import digest_pair, materialize
from openeds.synthetic import write_sample


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_sample(Path(tmp) / "raw", {"train": args.frames})
        pairs = raw.list_pairs(raw.find_split_dirs(root)["train"]).pairs
        input_bytes = sum(p.image.stat().st_size + p.label.stat().st_size for p in pairs)
        out = Path(tmp) / "out"
        quiet = contextlib.redirect_stdout(io.StringIO())
        start = time.perf_counter()
        with quiet:
            materialize({("pupil", "train"): pairs}, out)
        build_s = time.perf_counter() - start
        with contextlib.redirect_stdout(io.StringIO()):
            rerun_s = best_of(lambda: materialize({("pupil", "train"): pairs}, out), args.repeats)
        hash_s = best_of(lambda: [digest_pair(p) for p in pairs], args.repeats)
    results = {
        "frames": args.frames,
        "input_mb": round(input_bytes / 1e6, 1),
        "hash_s": round(hash_s, 3),
        "hash_mb_per_s": round(input_bytes / 1e6 / hash_s),
        "rerun_s": round(rerun_s, 3),
        "build_s": round(build_s, 2),
        "rerun_over_build": round(rerun_s / build_s, 4),
    }
    print(
        f"hashing {results['input_mb']} MB of inputs: {hash_s:.3f} s, {results['hash_mb_per_s']:,d} MB/s (page cache)"
    )
    print(
        f"re-run with every shard current: {rerun_s:.3f} s, {results['rerun_over_build']:.1%} of building "
        f"from scratch ({build_s:.1f} s)"
    )
    print(f"wrote {write_results('rerun', results)}")
    return results


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
