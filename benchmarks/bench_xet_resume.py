"""What a Xet publication sends again: push.py SIGKILLed mid-upload then re-run, and a re-run after a fixed label.

Renders a synthetic sample (``--frames`` train frames, ``--config all``: a few hundred MB, so that
hf_xet cuts several xorbs of its 64 MiB), builds it once (push.py's ``push(upload=False)``), then
runs push.py as a user does (a process of its own, default settings, through hf_xet) against the
test Hub and its Xet storage service (tests/hub_server.py, tests/xet_server.py; the test extra's
pytest and PyYAML), counting the bytes the service receives:

* **reference**: a whole publication, uninterrupted, into an empty service with an empty
  ``HF_XET_CACHE``, its xorb uploads through a slow uplink (the files' bytes over ``--seconds`` a
  second, all connections together: ``XetServer.limit_xorb_rate``): the xorb bytes ``T`` of the
  data (those stored), the bytes received (more where hf_xet's read timeout, ``--timeout``, cut an
  upload not answered within it, however its body moved: ``openeds.hub.xet``), the uploads cut,
  the time against ``--seconds``, the run's CPU seconds, and the records hf_xet leaves under
  ``HF_XET_CACHE`` (``.../staging/shard-session/xorb_metadata``);
* **killed, then re-run**: the same publication into an empty service through the slow uplink,
  SIGKILLed once the service has received a fraction
  (``--at``) of ``T``; then the same command again, at full speed, with the same
  ``HF_XET_CACHE``, as a user re-runs it. Reported: the bytes the service received in each run;
  the xorbs the first run completed (stored by the service) and those hf_xet had recorded in
  its cache; the re-sent bytes against what the first run had not finished (``T`` less the
  completed xorbs). What a killed process had left in its sockets still reaches the service (the
  kernel sends it): a xorb may complete there after the kill, unknown to hf_xet, one of the
  xorbs in flight. The re-run must end well: exit status 0, and every shard stored bit for bit;
* **fixed label**: after the kills, one train label changed in the raw data (a 20x20 block), then
  push.py again on each reference publication, with its cache and its service: the bytes sent
  against the sizes of the shards that changed.

Each kill is measured for every ``--variants`` (``hf_xet``: hf_xet 1.8's own recording of
uploaded xorbs, every 20 s or 64 xorbs, set explicitly; ``push.py``: what push.py gives hf_xet,
``openeds.hub.xet``) and every ``--grants`` (``never``: the grant route answers no xorb as
stored, so every xorb hf_xet does not know is uploaded is sent, as the documented protocol does;
``stored``: the test service's default, a xorb stored already is not sent again, which helps only
where a re-run packs the very same xorb). Prints the figures with the load average, and writes
them as JSON.

    python -m benchmarks.bench_xet_resume [--frames 300] [--seconds 60] [--at 0.3 0.6 0.9]
        [--variants hf_xet push.py] [--grants never stored] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, write_results
from openeds.synthetic import write_sample
from push import push
from tests.hub_server import HubServer
from tests.xet_server import XetServer, parse_shard

TOKEN = "hf_bench_xet_resume"
USER = "bench"
#: hf_xet's settings of when it records the xorbs it uploaded (xet-core: xet_runtime config group `data`)
FLUSH_COUNT = "HF_XET_DATA_SESSION_XORB_METADATA_FLUSH_MAX_COUNT"
FLUSH_INTERVAL = "HF_XET_DATA_SESSION_XORB_METADATA_FLUSH_INTERVAL"
#: what each variant sets in the run's environment
VARIANTS = {"hf_xet": {FLUSH_COUNT: "64", FLUSH_INTERVAL: "20s"}, "push.py": {}}
MB = 1e6


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Bench:
    """The test Hub and Xet service, the built sample, and push.py runs against them."""

    def __init__(self, work: Path, raw: Path, out: Path, timeout: float | None, variants: list[str]) -> None:
        self.work, self.raw, self.out, self.timeout = work, raw, out, timeout
        #: a service for each variant's reference publication (kept for its fixed label's re-run), and the kills'
        self.services = {name: XetServer().start() for name in (*variants, "scratch")}
        self.hub = HubServer()
        self.hub.start()
        self.hub.add_token(TOKEN, USER)
        self.use("scratch")

    @property
    def xet(self) -> XetServer:
        return self.hub.xet  # type: ignore[return-value]

    def use(self, name: str) -> None:
        """The service the Hub's token routes hand out from now on (a repo keeps the one it was created with)."""
        self.hub.xet = self.services[name]

    def close(self) -> None:
        self.hub.stop()
        for service in self.services.values():
            service.stop()

    def fresh(self, *, grants: str = "stored") -> None:
        """An empty service (nothing stored: a first publication), counters and request log at zero."""
        self.xet.forget_storage()
        self.reset(grants=grants)

    def reset(self, *, grants: str = "stored") -> None:
        self.xet.reset_faults_and_log()  # also the uplink's rate and the grants' answers
        self.xet.grants_for_stored = grants == "stored"

    def env(self, cache: Path, variant: str) -> dict[str, str]:
        """A user's environment: no HF_* setting of this process, the test Hub, a token, this cache."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
        env.update(
            {
                "HF_ENDPOINT": self.hub.url,
                "HF_TOKEN": TOKEN,
                "HF_HOME": str(self.work / "hf-home"),
                "HF_XET_CACHE": str(cache),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"])),
                **VARIANTS[variant],
            }
        )
        return env

    def command(self, repo_id: str) -> list[str]:
        args = ["--data-dir", str(self.raw), "--local-dir", str(self.out), "--repo-id", repo_id, "--config", "all"]
        return [sys.executable, "push.py", *args, *([] if self.timeout is None else ["--timeout", str(self.timeout)])]

    def run(self, repo_id: str, cache: Path, variant: str, *, kill_at: float | None = None) -> dict:
        """push.py to its end, or SIGKILLed once the service has received `kill_at` xorb bytes; what it cost."""
        log = self.work / f"push-{uuid.uuid4().hex[:8]}.log"
        before, load = resource.getrusage(resource.RUSAGE_CHILDREN), load_average()
        start, first_byte, killed = time.perf_counter(), None, None
        with log.open("w") as output:
            process = subprocess.Popen(
                self.command(repo_id), cwd=REPO, env=self.env(cache, variant), stdout=output, stderr=output
            )
            while process.poll() is None:
                received = self.xet.counters.received["xorb"]
                if first_byte is None and received:
                    first_byte = time.perf_counter()
                if kill_at is not None and received >= kill_at:
                    process.send_signal(signal.SIGKILL)
                    killed = time.perf_counter()
                    break
                time.sleep(0.01)
            status = process.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if killed is None and status != 0:
            raise RuntimeError(f"push.py ended with status {status}: {log.read_text()[-3000:]}")
        if killed is None and kill_at is not None:
            raise RuntimeError(f"push.py ended before the service received {kill_at / MB:.1f} MB; raise --seconds")
        if killed is not None:
            settled(self.xet)  # what the killed run's connections still held reaches the service
        counters = self.xet.counters
        grants = [r for r in self.xet.requests if "/xorb-grants/" in r.path]
        posts = [r for r in self.xet.requests if "/v1/xorbs/" in r.path]
        return {
            "status": "killed" if killed is not None else status,
            "wall_s": round(time.perf_counter() - start, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "upload_s_before_kill": None if killed is None or first_byte is None else round(killed - first_byte, 2),
            "received": {"xorb": counters.received["xorb"], "shard": counters.received["shard"]},
            "xorbs_stored": [n for _, n in counters.xorbs],  # the bytes of each, in the order stored
            "xorbs_stored_bytes": sum(n for _, n in counters.xorbs),
            "grants_answered_stored": sum(1 for r in grants if r.status == 200),
            "grants": len(grants),
            "xorb_uploads": len(posts),
            "xorb_uploads_cut": sum(1 for r in posts if r.status is None),  # the connection ended mid-body
            "load_average": [*load, *load_average()],
        }

    def recorded(self, cache: Path) -> dict:
        """The xorbs hf_xet recorded as uploaded under `cache` (its staged session shards), and their bytes here."""
        files = sorted(cache.glob("*/staging/shard-session/xorb_metadata/*.mdb"))
        hashes = {xorb.hash for path in files for xorb in parse_shard(path.read_bytes())[1]}
        stored = {h: len(self.xet.xorb_bytes(h)) for h in hashes if self.xet.has_xorb(h)}
        return {
            "files": len(files),
            "file_bytes": sum(path.stat().st_size for path in files),
            "xorbs": len(hashes),
            "xorbs_not_stored": len(hashes) - len(stored),
            "xorb_bytes": sum(stored.values()),
        }

    def check_stored(self) -> None:
        """Every shard of the local folder is in the service, bit for bit."""
        for path in sorted(self.out.glob("*/*.parquet")):
            content = path.read_bytes()
            stored = self.xet.file_by_sha256(hashlib.sha256(content).hexdigest())
            if stored is None or self.xet.read(stored.hash) != content:
                raise RuntimeError(f"{path.relative_to(self.out)}: the service does not hold its bytes")


def settled(xet: XetServer, quiet: float = 0.2) -> None:
    """Wait until the service's byte counters stop moving (the handlers of a killed run's uploads see the end)."""
    last, since = None, time.perf_counter()
    while time.perf_counter() - since < quiet:
        now = dict(xet.counters.received)
        if now != last:
            last, since = now, time.perf_counter()
        time.sleep(0.05)


def build(work: Path, frames: int) -> tuple[Path, Path]:
    """The raw sample and push.py's local folder of it (both configs), built once, here."""
    raw = write_sample(work / "raw", {"train": frames, "validation": 1, "test": 1}, seed=2311)
    with contextlib.redirect_stdout(io.StringIO()):
        push(data_dir=raw, local_dir=work / "out", upload=False, config="all")
    return raw, work / "out"


def fix_a_label(raw: Path, frames: int) -> str:
    """Change a 20x20 block of the label of the middle train frame, as a corrected label would; its file name."""
    labels = sorted((raw / "openEDS" / "openEDS" / "train" / "labels").glob("*.npy"))
    path = labels[min(frames // 2, len(labels) - 1)]
    label = np.load(path)
    block = label[190:210, 310:330]
    block[...] = np.where(block == 3, 2, 3)
    np.save(path, label)
    return path.name


def digests(out: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(out)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
        for p in sorted(out.glob("*/*.parquet"))
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="train frames of the sample (default 300: ~520 MB)")
    parser.add_argument("--seconds", type=float, default=60, help="a whole upload's length at the slow uplink")
    parser.add_argument("--at", type=float, nargs="+", default=[0.3, 0.6, 0.9], help="kill points, fractions of T")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--grants", nargs="+", choices=["never", "stored"], default=["never", "stored"])
    parser.add_argument("--timeout", type=float, help="push.py's --timeout (default: push.py's own)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-xet-resume-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        raw, out = build(work, args.frames)
        build_s = time.perf_counter() - started
        bench = Bench(work, raw, out, args.timeout, args.variants)
        try:
            results = measure(bench, args)
        finally:
            bench.close()
            shutil.rmtree(work, ignore_errors=True)
    results["build_s"] = round(build_s, 1)
    return report(results, args)


def measure(bench: Bench, args: argparse.Namespace) -> dict:
    shards = digests(bench.out)
    references, caches = {}, {}
    rate = sum(p.stat().st_size for p in bench.out.glob("[!.]*/*")) / args.seconds  # what push.py uploads
    for variant in args.variants:  # each into an empty service of its own, kept for its fixed label
        bench.use(variant)
        bench.reset()
        bench.xet.limit_xorb_rate(rate)
        cache, repo_id = bench.work / f"cache-reference-{variant}", f"{USER}/reference-{uuid.uuid4().hex[:6]}"
        run = bench.run(repo_id, cache, variant)
        bench.check_stored()
        references[variant] = {**run, "recorded_after": bench.recorded(cache), "repo_id": repo_id}
        caches[variant] = cache
        print(reference_line(variant, references[variant], args.seconds), flush=True)
    total = max(ref["xorbs_stored_bytes"] for ref in references.values())
    bench.use("scratch")
    kills = []
    for variant in args.variants:
        for grants in args.grants:
            for at in args.at:
                bench.fresh(grants=grants)
                bench.xet.limit_xorb_rate(rate)
                cache, repo_id = bench.work / f"cache-{uuid.uuid4().hex[:8]}", f"{USER}/killed-{uuid.uuid4().hex[:6]}"
                first = bench.run(repo_id, cache, variant, kill_at=at * total)
                recorded = bench.recorded(cache)
                bench.reset(grants=grants)
                again = bench.run(repo_id, cache, variant)
                bench.check_stored()
                completed = first["xorbs_stored_bytes"]
                unfinished = total - completed
                resent = again["received"]["xorb"]
                kills.append(
                    {
                        "variant": variant,
                        "grants": grants,
                        "at": at,
                        "first": first,
                        "recorded_at_kill": recorded,
                        "rerun": again,
                        "completed_bytes": completed,
                        "unfinished_bytes": unfinished,
                        "resent_bytes": resent,
                        "resent_over_unfinished": round(resent / unfinished, 3) if unfinished > 0 else None,
                        "excess_bytes": resent - unfinished,
                        "completed_not_recorded_bytes": completed - recorded["xorb_bytes"],
                    }
                )
                print(kill_line(kills[-1]), flush=True)
    # the fixed label: each reference publication re-run with its cache after one label changed (the first re-run
    # rebuilds the shards it changed), into the service that holds what the reference stored
    label, fixed = fix_a_label(bench.raw, args.frames), {}
    for variant in args.variants:
        bench.use(variant)
        bench.reset()
        again = bench.run(references[variant]["repo_id"], caches[variant], variant)
        bench.check_stored()
        now = digests(bench.out)
        changed = {path: size for path, (digest, size) in now.items() if shards.get(path, ("", 0))[0] != digest}
        sent = again["received"]["xorb"] + again["received"]["shard"]
        fixed[variant] = {
            "label": label,
            "changed_shards": changed,
            "changed_bytes": sum(changed.values()),
            "run": again,
            "sent_bytes": sent,
            "sent_over_changed": round(sent / sum(changed.values()), 4) if changed else None,
        }
    return {
        "frames": args.frames,
        "shards": {path: size for path, (_digest, size) in shards.items()},
        "total_xorb_bytes": total,
        "uplink_bytes_per_s": round(rate),
        "references": references,
        "kills": kills,
        "fixed_label": fixed,
    }


def reference_line(variant: str, run: dict, seconds: float) -> str:
    rec = run["recorded_after"]
    return (
        f"reference, {variant}: {run['xorbs_stored_bytes'] / MB:.1f} MB of xorbs ({len(run['xorbs_stored'])}), "
        f"{run['received']['xorb'] / MB:.1f} MB received; {run['xorb_uploads_cut']} of {run['xorb_uploads']} xorb "
        f"uploads cut; {run['wall_s']:.0f} s for a {seconds:.0f} s upload, {run['cpu_s']:.1f} CPU s; records left "
        f"in HF_XET_CACHE: {rec['files']} files, {rec['file_bytes'] / 1e3:.0f} kB; "
        f"load {'/'.join(f'{x:.2f}' for x in run['load_average'][:3])}"
    )


def kill_line(kill: dict) -> str:
    first, again, recorded = kill["first"], kill["rerun"], kill["recorded_at_kill"]
    ratio = kill["resent_over_unfinished"]
    return (
        f"{kill['variant']:7s} grants {kill['grants']:6s} killed {first['upload_s_before_kill']:5.1f} s into the "
        f"upload: run 1 received {first['received']['xorb'] / MB:6.1f} MB (xorbs completed "
        f"{kill['completed_bytes'] / MB:6.1f} MB, recorded by hf_xet {recorded['xorb_bytes'] / MB:6.1f} MB in "
        f"{recorded['files']} files); re-run sent {kill['resent_bytes'] / MB:6.1f} MB = "
        f"{'-' if ratio is None else f'{ratio:.2f}x'} the {kill['unfinished_bytes'] / MB:.1f} MB unfinished "
        f"(grants answered stored: {again['grants_answered_stored']}/{again['grants']}); "
        f"load {'/'.join(f'{x:.2f}' for x in first['load_average'][:3])}"
    )


def report(results: dict, args: argparse.Namespace) -> dict:
    total = results["total_xorb_bytes"]
    print(
        f"sample: {results['frames']} train frames, {len(results['shards'])} shards, "
        f"{sum(results['shards'].values()) / MB:.1f} MB; xorbs of a whole publication T = {total / MB:.1f} MB; "
        f"slow uplink {results['uplink_bytes_per_s'] / MB:.2f} MB/s"
    )
    for variant, fixed in results["fixed_label"].items():
        changed = ", ".join(f"{path} {size / MB:.1f} MB" for path, size in fixed["changed_shards"].items())
        print(
            f"fixed label ({fixed['label']}), {variant}: sent {fixed['sent_bytes'] / MB:.2f} MB (xorbs "
            f"{fixed['run']['received']['xorb'] / MB:.2f} MB, shard {fixed['run']['received']['shard'] / 1e3:.0f} kB) "
            f"for {fixed['changed_bytes'] / MB:.1f} MB of changed shards ({changed}): "
            f"{fixed['sent_over_changed']:.3f}x; "
            f"load {'/'.join(f'{x:.2f}' for x in fixed['run']['load_average'][:3])}"
        )
    settings = {"seconds": args.seconds, "push_timeout": args.timeout, "cpus": os.cpu_count()}
    path = write_results("xet_resume", {**results, **settings})
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
