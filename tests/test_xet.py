"""Publishing and reading through Xet, as every real publication goes: the real hf_xet client against the
local Xet storage service (tests/xet_server.py) and the local Hub's token routes (tests/hub_server.py).

What the service stores is read back from its xorbs, as its shards say, and compared with the staged
files byte for byte; what a client downloads through hf_xet is compared with them too.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download

from openeds.hub.xet import FLUSH_MAX_COUNT, _retries, resume_settings, xet_settings
from openeds.retry import RetryPolicy
from openeds.synthetic import write_sample
from tests.hub_server import HubServer
from tests.push_runner import run_push
from tests.xet_server import Chunk, XetServer, _lz4_block, _ungroup4, decode_chunk, hash_hex, parse_xorb

pytestmark = pytest.mark.datasets_independent("the Xet protocol and hf_xet decide these; datasets reads nothing")

WRITE = "hf_xet_test_write"


@pytest.fixture
def hub(hub: HubServer) -> HubServer:
    hub.add_token(WRITE, "xavier")
    return hub


@pytest.fixture
def xet(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub takes the Xet path in this process (it reads the switch at each call)."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)


def staged(folder: Path) -> dict[str, bytes]:
    """Files as a publication stages them: random bytes (stored as they are), zeros and a repeated
    pattern (LZ4-compressed), and a run of small floats (byte-grouped, then LZ4)."""
    rng = np.random.default_rng(0)
    files = {
        "data/train-00000-of-00001.parquet": rng.bytes(300_000) + bytes(200_000) + b"openeds " * 20_000,
        "data/test-00000-of-00001.parquet": np.linspace(0, 1, 100_000, dtype=np.float32).tobytes(),
    }
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(content)
    return files


def uploaded(folder: Path) -> tuple[str, dict[str, bytes], HfApi]:
    """The files of `staged(folder)` uploaded (through hf_xet) to a new repo: its id, the files, the client."""
    repo_id = f"xavier/xet-{uuid.uuid4().hex[:8]}"
    files = staged(folder)
    api = HfApi(token=WRITE)
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset")
    return repo_id, files, api


def test_the_service_stores_what_hf_xet_uploads_and_serves_it_back(hub, xet, tmp_path):
    repo_id, files, api = uploaded(tmp_path)

    counters = hub.xet.counters
    assert counters.xorbs and counters.shards, "nothing reached the Xet service"
    assert not hub.lfs_uploads(repo_id), "a file went through LFS"
    tree = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True) if f.path in files}
    for path, content in files.items():
        stored = hub.xet.file_by_sha256(hashlib.sha256(content).hexdigest())
        assert stored is not None, f"{path}: no file of its sha256 in the service"
        assert hub.xet.read(stored.hash) == content, f"{path}: the service's xorbs do not hold the staged bytes"
        assert tree[path].xet_hash == stored.hash, f"{path}: the tree does not list its xetHash"

        downloaded = hf_hub_download(repo_id, path, repo_type="dataset", cache_dir=tmp_path / "cache")
        assert Path(downloaded).read_bytes() == content, f"{path}: hf_xet downloaded other bytes"
        assert stored.hash in counters.reconstructions, f"{path}: not downloaded through a reconstruction"
    schemes = {chunk.scheme for data, _ in counters.xorbs for chunk in parse_xorb(hub.xet.xorb_bytes(data))}
    assert schemes == {0, 1, 2}, f"the staged files should exercise every chunk compression, got {schemes}"


def test_a_ranged_read_of_a_xet_file_is_served_from_its_reconstruction(hub, xet, tmp_path):
    repo_id, files, api = uploaded(tmp_path)
    content = files["data/train-00000-of-00001.parquet"]
    stored = hub.xet.file_by_sha256(hashlib.sha256(content).hexdigest())
    for first, last in [(0, 10), (131_000, 262_200), (len(content) - 8, len(content) - 1)]:
        answer = hub.xet.reconstruction(stored.hash, f"bytes={first}-{last}")
        pieces = []
        for term in answer["terms"]:
            [fetch] = [f for f in answer["fetch_info"][term["hash"]] if f["range"] == term["range"]]
            data = hub.xet.xorb_bytes(term["hash"])[fetch["url_range"]["start"] : fetch["url_range"]["end"] + 1]
            chunks = parse_xorb(data)[: term["range"]["end"] - term["range"]["start"]]
            pieces += [decode_chunk(data, chunk) for chunk in chunks]
        got = b"".join(pieces)[answer["offset_into_first_range"] :][: last - first + 1]
        assert got == content[first : last + 1], f"bytes {first}-{last}"


def test_the_comparison_sees_a_changed_byte(hub, xet, tmp_path):
    """The check above can fail: a byte changed in a stored xorb changes what the service reads back."""
    repo_id, files, api = uploaded(tmp_path)
    content = files["data/train-00000-of-00001.parquet"]
    stored = hub.xet.file_by_sha256(hashlib.sha256(content).hexdigest())
    xorb, first = stored.terms[0].xorb, stored.terms[0].start
    data = bytearray(hub.xet._xorbs[xorb])
    data[hub.xet._chunks[xorb][first].offset + 100] ^= 1  # inside the file's first chunk (random: stored as is)
    hub.xet._xorbs[xorb] = bytes(data)
    assert hub.xet.read(stored.hash) != content


def test_hash_strings_lz4_and_byte_grouping_as_the_docs_give_them():
    # the CAS API docs' example (their string drops the byte 0x10: 62 hex digits)
    assert hash_hex(bytes(range(32))) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    out = bytearray(b"x")
    # 1 literal, a match of 15 + 0 + 4 bytes at offset 1 (overlapping), then 5 literals and the end
    _lz4_block(bytes([0x1F, ord("a"), 1, 0, 0, 0x50]) + b"bcdef", out)
    assert bytes(out) == b"x" + b"a" * 20 + b"bcdef"
    original = bytes(range(11))  # not a multiple of 4: the first groups are one longer
    assert _ungroup4(b"".join(original[i::4] for i in range(4))) == original
    with pytest.raises(ValueError, match="not an LZ4 frame"):
        decode_chunk(b"\0" * 8 + original, Chunk(0, 11, 1, 11))


def test_the_slow_uplink_counts_what_arrives_as_it_arrives():
    """The yardstick of benchmarks/bench_xet_resume.py: a xorb's body is read at the uplink's rate and counted as it
    arrives, so a client gone halfway leaves counted what reached the service, and nothing stored."""
    service = XetServer().start()
    try:
        service.limit_xorb_rate(1_000_000)
        token, _ = service.issue_token(write=True)
        data = np.random.default_rng(0).bytes(300_000)
        xorb = bytes([0]) + len(data).to_bytes(3, "little") + bytes([0]) + len(data).to_bytes(3, "little") + data
        head = f"POST /v1/xorbs/default/{'ab' * 32} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        with socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1]))) as cut:
            cut.sendall(f"{head}Content-Length: {len(xorb)}\r\n\r\n".encode() + xorb[:100_000])
        deadline = time.monotonic() + 5
        while service.counters.received["xorb"] < 100_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert service.counters.received["xorb"] == 100_000 and not service.counters.xorbs
        start = time.perf_counter()
        request = urllib.request.Request(f"{service.url}/v1/xorbs/default/{'cd' * 32}", data=xorb, method="POST")
        request.add_header("Authorization", f"Bearer {token}")
        assert json.loads(urllib.request.urlopen(request).read()) == {"was_inserted": True}
        assert time.perf_counter() - start >= 0.9 * len(xorb) / 1_000_000, "the body came faster than the uplink"
        assert service.counters.received["xorb"] == 100_000 + len(xorb)
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("policy", "retries"),
    [
        (RetryPolicy(timeout=1, total=2), 0),  # 1 s + a 2 s wait + 1 s is past 2 s + 1 s
        (RetryPolicy(timeout=1, total=6), 1),
        (RetryPolicy(), 9),  # 30 s timeouts, waits of 2, 4, 8, 16, 32, then 60 s: 9 retries fit in 600 s
    ],
)
def test_hf_xet_retries_fit_in_the_retry_budget(policy, retries):
    assert _retries(policy) == retries
    settings = xet_settings(policy)
    # a xorb upload hears nothing until its whole body is sent: 64 MiB at 256 KiB/s on top of the timeout
    assert settings["HF_XET_CLIENT_READ_TIMEOUT"] == f"{int((policy.timeout + 256) * 1000)}ms"
    assert settings["HF_XET_CLIENT_RETRY_MAX_ATTEMPTS"] == str(retries)


def test_hf_xet_reads_the_settings_as_given(monkeypatch):
    """hf_xet ignores a duration without a unit (its default stays): the settings carry one, and it reads them."""
    import hf_xet

    for name, value in xet_settings(RetryPolicy(timeout=1.5, total=20)).items():
        monkeypatch.setenv(name, value)
    config = hf_xet.XetConfig()
    assert config["client.read_timeout"].total_seconds() == 1.5 + 256
    assert config["client.connect_timeout"].total_seconds() == 1.5
    assert config["client.retry_base_delay"].total_seconds() == 2
    assert config["client.retry_max_duration"].total_seconds() == 60
    assert config["client.retry_max_attempts"] == _retries(RetryPolicy(timeout=1.5, total=20))
    # fewer parallel xorb uploads than hf_xet's own targets (60 and 90 s) would keep in flight
    assert config["client.ac_target_rtt"].total_seconds() == 15
    assert config["client.ac_max_healthy_rtt"].total_seconds() == 24


def test_hf_xet_records_each_uploaded_xorb_unless_the_user_chose(monkeypatch):
    """push.py has hf_xet record every xorb it uploaded as soon as it is (a re-run after a kill then sends only what
    was not uploaded; benchmarks/bench_xet_resume.py), and hf_xet reads it; a value the user set, under either of
    the setting's names, is left as it is."""
    import hf_xet

    alias = "HF_XET_SESSION_XORB_METADATA_FLUSH_MAX_COUNT"
    for name in (FLUSH_MAX_COUNT, alias):
        monkeypatch.delenv(name, raising=False)
    assert hf_xet.XetConfig()["data.session_xorb_metadata_flush_max_count"] == 64  # hf_xet's own
    for name, value in resume_settings(os.environ).items():
        monkeypatch.setenv(name, value)
    assert hf_xet.XetConfig()["data.session_xorb_metadata_flush_max_count"] == 1
    for name, value in ((FLUSH_MAX_COUNT, "8"), (alias, "5")):
        with monkeypatch.context() as user:
            user.delenv(FLUSH_MAX_COUNT)
            user.setenv(name, value)
            assert resume_settings(os.environ) == {}
            assert hf_xet.XetConfig()["data.session_xorb_metadata_flush_max_count"] == int(value)


@pytest.mark.datasets_line
def test_push_publishes_through_xet_and_datasets_reads_back_the_staged_bytes(hub, tmp_path):
    """What a user does with default settings: push.py publishes through hf_xet (no LFS upload), and
    `load_dataset` reads back, map-style through hf_xet's reconstructions and streamed through the Hub's
    ranged reads of the Xet files, exactly the staged shards.

    The raw sample is this test's own (a seed no other test uses): after a test of this process has downloaded a
    shard of the same bytes (the docs' blocks load the default sample), hf_xet reads it back without asking the
    service for its reconstruction, even from a new session with an empty cache folder (seen, not documented)."""
    import datasets
    import pyarrow.parquet as pq

    sample_dir = write_sample(tmp_path / "raw", {"train": 2}, seed=2301)
    repo_id = f"xavier/openeds-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    args = ["--data-dir", str(sample_dir), "--local-dir", str(out), "--repo-id", repo_id, "--splits", "train"]
    result = run_push(args, env={**os.environ, "HF_TOKEN": WRITE})
    assert result.returncode == 0, result.stderr[-3000:]
    shard = out / "data" / "train-00000-of-00001.parquet"
    stored = hub.xet.file_by_sha256(hashlib.sha256(shard.read_bytes()).hexdigest())
    assert stored is not None and hub.xet.read(stored.hash) == shard.read_bytes()
    assert not hub.lfs_uploads(repo_id) and [r for r in hub.requests if "/xet-write-token/" in r.path]
    logs = "".join(path.read_text() for path in Path(os.environ["HF_XET_CACHE"]).glob("logs/*.log"))
    assert "session_xorb_metadata_flush_max_count = 1 (user set)" in logs, "hf_xet did not get push.py's setting"

    staged_rows = pq.read_table(shard).to_pylist()
    loaded = datasets.load_dataset(repo_id, split="train", cache_dir=str(tmp_path / "cache"))
    assert stored.hash in hub.xet.counters.reconstructions, "the shard was not downloaded through hf_xet"
    assert loaded.data.table.to_pylist() == staged_rows
    streamed = datasets.load_dataset(repo_id, split="train", streaming=True)
    assert list(streamed.with_format("arrow").iter(batch_size=1000))[0].to_pylist() == staged_rows
    assert stored.hash in hub.xet.counters.bridged, "the stream did not read the Xet file"


_IGNORES_ITS_ABORT = """
import time

import tqdm

from openeds import cli
from openeds.hub import xet
from openeds.retry import RetryPolicy

xet.GRACE = 0.3


def main():
    tqdm.tqdm(total=10, desc="an upload bar", mininterval=0).update(3)  # left open, as hf_xet's progress is
    with xet.watch(RetryPolicy(timeout=0.2, total=0.3), lambda idle: f"no byte moved for {idle:.1f} s; give up"):
        time.sleep(30)  # a call that neither moves a byte nor returns when its session is aborted


cli.exit(cli.run(cli.Command("python upload.py", "run it again"), main))
"""


def test_the_watchdog_ends_a_call_that_ignores_its_abort_with_the_last_line(tmp_path):
    """The last resort: an upload call that moves nothing and does not return once its session is aborted ends
    the process within the budget plus the grace, exit 1, the one error line last (its progress bar closed
    before it), no traceback."""
    script = tmp_path / "upload.py"
    script.write_text(_IGNORES_ITS_ABORT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=25)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("error: no byte moved for ") and lines[-1].endswith("; give up"), lines[-3:]
    assert "an upload bar" in result.stderr and "Traceback" not in result.stderr
    assert took < 10, f"took {took:.1f} s: the watchdog should end it after 0.5 s + 0.3 s of grace"
