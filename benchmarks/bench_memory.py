"""Peak memory of building v2: the builder and push.py, against datasets' default writer buffer.

Each variant runs in a fresh child process on the same synthetic frames; the peak resident
set size (``ru_maxrss``) of that child is reported. The baseline is the builder with
``datasets``' default writer batch (1000 rows buffered before a write), which is what the
builder would do without its ``DEFAULT_WRITER_BATCH_SIZE = 16``. With ``OPENEDS_BENCH_IN_PROCESS=1``
(the smoke test, which keeps the script running, not its figures) each variant runs in this process
instead, and its "peak" is this process's (``VmHWM``).

    python -m benchmarks.bench_memory [--frames 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import in_process, main_behind_the_boundary, run_python_here, status_mb, write_results
from openeds.synthetic import write_sample

REPO = Path(__file__).resolve().parents[1]

_BUILDER = """
import sys
from openeds_precomputed import OpenEDSPrecomputed
builder = OpenEDSPrecomputed(config_name=sys.argv[2], data_dir=sys.argv[1], cache_dir=sys.argv[3],
                             writer_batch_size=int(sys.argv[4]) or None)
builder.download_and_prepare()
"""


_MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_mb(argv: list[str]) -> float:
    """Peak RSS in MB of ``argv`` and its own children (spawned workers), in a fresh process.

    A wrapper process runs the command, so the peak is that of this command alone
    (Linux reports ``ru_maxrss`` in KiB, the max over the finished children).
    """
    if in_process():  # the smoke test: the same code, without a start-up of datasets for every variant
        run_python_here(argv[1:])
        return status_mb("VmHWM")
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], check=True, cwd=REPO, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args(argv)
    results: dict = {"frames": args.frames}
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_sample(Path(tmp) / "raw", {"train": args.frames})
        variants = [
            ("builder_pupil_batch16", [sys.executable, "-c", _BUILDER, str(raw), "pupil", f"{tmp}/c1", "16"]),
            (
                "push_all_configs",
                [
                    sys.executable,
                    "push.py",
                    "--data-dir",
                    str(raw),
                    "--local-dir",
                    f"{tmp}/out",
                    "--no-upload",
                    "--config",
                    "all",
                ],
            ),
            ("builder_full_batch16", [sys.executable, "-c", _BUILDER, str(raw), "full", f"{tmp}/c2", "16"]),
            (
                "baseline_builder_pupil_batch1000",
                [sys.executable, "-c", _BUILDER, str(raw), "pupil", f"{tmp}/c3", "1000"],
            ),
        ]
        for name, command in variants:
            results[name + "_peak_mb"] = round(_peak_mb(command))
            print(f"{name:34s} peak RSS {results[name + '_peak_mb']:6,d} MB")
    base = results["baseline_builder_pupil_batch1000_peak_mb"]
    results["builder_pupil_ratio_to_baseline"] = round(results["builder_pupil_batch16_peak_mb"] / base, 3)
    print(
        f"builder (batch 16) / default writer batch: {results['builder_pupil_ratio_to_baseline']:.2f}x; "
        f"goal: every variant <= 1024 MB"
    )
    print(f"wrote {write_results('memory', results)}")
    return results


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
