"""Per-sample precompute time: the fast pipeline against the plain v1 reference.

Both run in this process, on one core (OpenCV threads off), over the same synthetic
frames read from disk. The reference is what the v1 script did: decode, gamma +
CLAHE through a float64 table, v1's weights, and a SciPy EDT per class (two per
channel). The fast pipeline is ``openeds.rows.make_row``, the code the builder runs.
The outputs are checked equal before anything is timed.

    python -m benchmarks.bench_preprocess [--frames 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import cv2
import numpy as np

from benchmarks._common import best_of, main_behind_the_boundary, write_results
from openeds import raw
from openeds.rows import make_row
from openeds.synthetic import write_sample
from tests import reference


def reference_row(pair: raw.Pair, config: str) -> dict:
    image = cv2.imread(str(pair.image), cv2.IMREAD_UNCHANGED)
    raw_label = np.load(pair.label)
    label, weights, dist = reference.targets(raw_label, config)
    return {
        "image": reference.image(image),
        "label": label,
        "spatial_weights": weights,
        "dist_map": dist.astype(np.float32),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="train frames (edge cases included)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    results = {"frames": args.frames, "opencv": cv2.__version__, "load_average": os.getloadavg(), "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        write_sample(tmp, {"train": args.frames})
        pairs = raw.list_pairs(raw.find_split_dirs(tmp)["train"]).pairs
        for config in ("pupil", "full"):
            for pair in pairs:  # same numbers first, then time
                fast, ref = make_row(pair, config), reference_row(pair, config)
                assert np.array_equal(fast["image"], ref["image"]), pair.stem
                assert np.array_equal(fast["spatial_weights"], ref["spatial_weights"]), pair.stem
                assert np.array_equal(fast["dist_map"].view(np.uint32), ref["dist_map"].view(np.uint32)), pair.stem
            t_ref = best_of(lambda config=config: [reference_row(p, config) for p in pairs], args.repeats) / len(pairs)
            t_fast = best_of(lambda config=config: [make_row(p, config) for p in pairs], args.repeats) / len(pairs)
            results["configs"][config] = {
                "reference_ms_per_sample": round(t_ref * 1e3, 2),
                "fast_ms_per_sample": round(t_fast * 1e3, 2),
                "speedup": round(t_ref / t_fast, 2),
            }
            print(
                f"{config:5s}: reference {t_ref * 1e3:6.1f} ms/sample, fast {t_fast * 1e3:5.1f} ms/sample, "
                f"speed-up {t_ref / t_fast:.1f}x per core (goal >= 5x)"
            )
    results["load_average_after"] = os.getloadavg()
    print(f"load average {results['load_average'][0]:.2f} before, {results['load_average_after'][0]:.2f} after")
    print(f"wrote {write_results('preprocess', results)}")
    return results


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
