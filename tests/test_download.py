"""openeds.download against the real kaggle client and the local stub in kaggle_server.py.

Each download runs in a process of its own with the stub's environment (see the kaggle_server
docstring for why), forked from a zygote that has what push.py imports and kagglesdk loaded, but
not kaggle, which each run imports in its own environment (:data:`CLIENT_PRELOAD`,
tests/zygote.py); nothing in the client or the network is patched.
Short retry waits and timeouts come from ``RetryPolicy(first_delay=0.05, timeout=...)``, passed by
the runner script.
"""

from __future__ import annotations

import io
import itertools
import json
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openeds.download import DEFAULT_SLUG, MARKER_NAME, DownloadError, FileCounts, _extract
from openeds.raw import find_split_dirs
from openeds.synthetic import write_sample
from tests import zygote
from tests.hub_server import HubServer
from tests.kaggle_server import DOWNLOAD_PATH, INTROSPECT_PATH, REPO_ROOT, Credentials, KaggleStub, Target

pytestmark = pytest.mark.datasets_independent("the Kaggle client and archives; the two that build or load are marked")

SLUG = DEFAULT_SLUG
SLUG_DIR = SLUG.replace("/", "--")

#: fetch_raw in a client process; argv: slug, cache dir, retry budget, network budget and request timeout in seconds
FETCH = """\
import sys
from openeds.download import DownloadError, RetryPolicy, fetch_raw
policy = RetryPolicy(first_delay=0.05, total=float(sys.argv[3]), network_total=float(sys.argv[4]),
                     timeout=float(sys.argv[5]))
try:
    print(fetch_raw(sys.argv[1], sys.argv[2], retry=policy))
except DownloadError as e:
    sys.exit(f"error: {e}")
"""


#: what push.py imports, and kagglesdk (the kaggle client's API layer: it reads ``KAGGLE_*`` when called, not when
#: imported); not kaggle itself, which reads its environment and logs in when it is imported
CLIENT_PRELOAD = (*zygote.DATA, "kagglesdk")


def run(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, ...)`` of a client, forked from the zygote of its
    environment: one per pytest process, as the stub's port (``HTTP_PROXY``) and the run's folders are read at use."""
    return zygote.run(argv, env=env, preload=CLIENT_PRELOAD, cwd=cwd, timeout=timeout)


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _files(tree: Path) -> dict[str, bytes]:
    """A synthetic OpenEDS tree as zip members: name -> bytes."""
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def _counts(tree: Path) -> FileCounts:
    splits = tree / "openEDS" / "openEDS"
    return {
        split.name: {sub.name: len(list(sub.iterdir())) for sub in sorted(split.iterdir()) if sub.is_dir()}
        for split in splits.iterdir()
    }


@pytest.fixture(scope="session")
def sample_files(sample_dir: Path) -> dict[str, bytes]:
    """The synthetic OpenEDS tree (conftest's ``sample_dir``) as zip members: name -> bytes."""
    return _files(sample_dir)


@pytest.fixture(scope="session")
def sample_counts(sample_dir: Path) -> FileCounts:
    return _counts(sample_dir)


@pytest.fixture(scope="session")
def sample_zip(sample_files: dict[str, bytes]) -> bytes:
    return _zip(sample_files)


@pytest.fixture
def stub(sample_zip: bytes) -> Iterator[KaggleStub]:
    with KaggleStub({SLUG: sample_zip}) as server:
        yield server


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample of 2, 1 and 1 frames, for the tests that build what they download (archives above 1 MiB, which
    the resume test needs, are the default sample's)."""
    return write_sample(tmp_path_factory.mktemp("small"), {"train": 2, "validation": 1, "test": 1})


@pytest.fixture
def small_stub(small_tree: Path) -> Iterator[KaggleStub]:
    with KaggleStub({SLUG: _zip(_files(small_tree))}) as server:
        yield server


def _check_output(result: subprocess.CompletedProcess[str]) -> None:
    """No secret is printed; a failure ends with one `error:` line, not a traceback."""
    output = result.stdout + result.stderr
    assert KaggleStub.KEY not in output and KaggleStub.TOKEN not in output
    assert "Traceback" not in output, output
    if result.returncode != 0:
        assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr


def fetch(
    stub: KaggleStub,
    tmp_path: Path,
    *,
    credentials: Credentials | None = "key",
    slug: str = SLUG,
    total: float = 5.0,
    network: float = 60.0,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = stub.client_env(tmp_path / "home", credentials) | (env or {})
    argv = [sys.executable, "-c", FETCH, slug, str(tmp_path / "cache"), str(total), str(network), str(timeout)]
    result = run(argv, env)
    _check_output(result)
    return result


def _error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("credentials", ["key", "token"])
def test_first_download_then_second_run_makes_no_request(
    stub: KaggleStub, tmp_path: Path, sample_counts: FileCounts, credentials: Credentials
) -> None:
    first = fetch(stub, tmp_path, credentials=credentials)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "cache" / SLUG_DIR
    data = Path(first.stdout.strip())
    assert data == folder / "data"
    assert list(find_split_dirs(data)) == ["train", "validation", "test"]
    assert json.loads((folder / MARKER_NAME).read_text())["files"] == sample_counts
    assert f"train: {sample_counts['train']['images']} images" in first.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".openeds", "complete.json", "data"]
    assert [p.name for p in (folder / ".openeds").iterdir()] == ["lock"]  # the owner record is gone, the lock stays
    [post] = stub.requests_to("api")
    [get] = stub.requests_to("file")
    assert (post.method, post.status, post.auth) == ("POST", 302, "basic" if credentials == "key" else "bearer")
    assert (get.method, get.status, get.auth) == ("GET", 200, None)

    stub.log.clear()
    second = fetch(stub, tmp_path, credentials=credentials)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert stub.log == []
    assert "skipping" in second.stderr


def test_a_changed_tree_is_not_taken_as_complete(stub: KaggleStub, tmp_path: Path) -> None:
    assert fetch(stub, tmp_path).returncode == 0
    data = tmp_path / "cache" / SLUG_DIR / "data"
    label = next((data / "openEDS" / "openEDS" / "train" / "labels").iterdir())
    label.unlink()
    stub.log.clear()

    again = fetch(stub, tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(stub.requests_to("file")) == 1
    assert label.is_file()


def test_rate_limit_waits_for_retry_after(stub: KaggleStub, tmp_path: Path) -> None:
    stub.fail(429, headers={"Retry-After": "1"})
    result = fetch(stub, tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = stub.requests_to("api")
    assert (first.status, second.status) == (429, 302)
    assert second.time - first.time >= 0.95
    assert "HTTP 429; retrying in 1.0 s" in result.stderr


@pytest.mark.parametrize("on", ["api", "file"])
def test_server_errors_are_retried_until_the_time_limit(stub: KaggleStub, tmp_path: Path, on: Target) -> None:
    stub.fail(503, times=1000, on=on)
    error = _error(fetch(stub, tmp_path, total=0.5))
    assert error.startswith(f"error: Kaggle download of {SLUG} still fails after ")
    assert "HTTP 503" in error and "--data-dir" in error
    attempts = stub.requests_to(on)
    assert len(attempts) >= 2 and {r.status for r in attempts} == {503}
    assert attempts[-1].time - attempts[0].time < 2.0  # the limit is 0.5 s; slack for a loaded machine
    assert not (tmp_path / "cache" / SLUG_DIR / MARKER_NAME).exists()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port bound but not listening: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("failure", ["refused", "dns"])
def test_an_unreachable_network_gives_up_on_the_short_budget(
    stub: KaggleStub, tmp_path: Path, closed_port: int, failure: str
) -> None:
    # The proxy every request goes through is a closed port, or a host that does not resolve.
    proxy = f"127.0.0.1:{closed_port}" if failure == "refused" else "proxy.openeds.invalid:3128"
    started = time.monotonic()
    error = _error(fetch(stub, tmp_path, total=30, network=0.5, env={"HTTP_PROXY": f"http://{proxy}"}))
    assert time.monotonic() - started < 15  # the 30 s retry budget is not used: 0.5 s, plus the start of Python
    assert error.startswith(f"error: Kaggle download of {SLUG}: the network or the endpoint {proxy} is unreachable")
    assert "Connection refused" in error if failure == "refused" else "gaierror" in error
    assert "the network budget is 0.5 s" in error and "--data-dir" in error
    assert stub.log == []


def test_retry_after_zero_still_waits(stub: KaggleStub, tmp_path: Path) -> None:
    stub.fail(429, times=1000, headers={"Retry-After": "0"})
    argv = [sys.executable, "-m", "openeds.download", "--cache-dir", str(tmp_path / "cache"), "--retry-timeout", "1"]
    result = run(argv, stub.client_env(tmp_path / "home"))
    _check_output(result)
    assert "still fails after" in _error(result) and "HTTP 429" in _error(result)
    attempts = [r.time for r in stub.requests_to("api")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert 2 <= len(attempts) <= 5 and min(gaps) >= 0.45, gaps  # the 0.5 s floor, not a hammering loop


@pytest.mark.parametrize(
    ("credentials", "fault", "slug", "expected"),
    [
        ("wrong-key", None, SLUG, "Kaggle rejected the credentials (HTTP 401: Unauthenticated) when downloading"),
        ("key", 403, SLUG, f"https://www.kaggle.com/datasets/{SLUG} while logged in, accept its terms"),
        ("key", None, "someone/missing", "Kaggle dataset someone/missing not found (HTTP 404"),
    ],
    ids=["401", "403", "404"],
)
def test_refusals_are_reported_and_not_retried(
    stub: KaggleStub, tmp_path: Path, credentials: Credentials, fault: int | None, slug: str, expected: str
) -> None:
    if fault is not None:
        stub.fail(fault)
    error = _error(fetch(stub, tmp_path, credentials=credentials, slug=slug))
    assert expected in error and "--data-dir" in error
    assert len(stub.requests_to("api")) == 1


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def _corrupted(good: bytes) -> bytes:
    middle = len(good) // 2
    return good[:middle] + bytes(b ^ 0xFF for b in good[middle : middle + 64]) + good[middle + 64 :]


@pytest.mark.parametrize("damage", [_truncated, _corrupted], ids=["truncated", "corrupted"])
def test_damaged_archive_is_not_trusted_next_time(
    stub: KaggleStub, tmp_path: Path, sample_zip: bytes, damage: Callable[[bytes], bytes]
) -> None:
    stub.datasets[SLUG] = damage(sample_zip)
    error = _error(fetch(stub, tmp_path))
    assert "is damaged" in error and "Deleted it" in error
    folder = tmp_path / "cache" / SLUG_DIR
    assert sorted(p.name for p in folder.iterdir()) == [".openeds", "download"]
    assert list((folder / "download").iterdir()) == []

    stub.datasets[SLUG] = sample_zip
    stub.log.clear()
    assert fetch(stub, tmp_path).returncode == 0
    [get] = stub.requests_to("file")
    assert (get.status, get.range) == (200, None)


def test_member_climbing_out_is_refused(stub: KaggleStub, tmp_path: Path, sample_files: dict[str, bytes]) -> None:
    stub.datasets[SLUG] = _zip({**sample_files, "../escaped.txt": b"outside"})
    error = _error(fetch(stub, tmp_path))
    assert "member '../escaped.txt' that climbs out of the folder with '..'" in error
    folder = tmp_path / "cache" / SLUG_DIR
    assert not (folder / "escaped.txt").exists() and not (folder.parent / "escaped.txt").exists()
    assert sorted(p.name for p in folder.iterdir()) == [".openeds", "download"]


def test_an_interrupted_transfer_is_resumed_within_the_budget(
    stub: KaggleStub, tmp_path: Path, sample_zip: bytes
) -> None:
    # kaggle's own retries of the body (2**n s apart, 5 of them) are off: the retry is this
    # module's, after its own short wait, and kaggle resumes the part on disk with a Range request.
    stub.cut_next_transfer(after=len(sample_zip) - 1000)
    result = fetch(stub, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(stub.requests_to("api")) == 2  # each retry asks again, as a new run would
    gets = stub.requests_to("file")
    assert gets[0].range is None and gets[-1].range == "bytes=1048576-", gets  # kaggle writes 1 MiB chunks
    assert gets[-1].time - gets[0].time < 1.5  # not kaggle's backoff of 2 s or more
    assert "1,048,576 bytes kept, resuming; retrying in" in result.stderr


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("hang-api", f"POST http://localhost{DOWNLOAD_PATH} got no data for 0.5 s (read timeout; --timeout sets it)"),
        ("hang-file", f"GET http://storage.localhost/files/{SLUG}.zip got no data for 0.5 s (read timeout"),
        ("stall-file", f"http://storage.localhost/files/{SLUG}.zip got no data for 0.5 s (read timeout"),
        ("cut-file", "IncompleteRead(1000 bytes read, "),
    ],
)
def test_a_server_that_stops_answering_ends_within_the_budget(
    stub: KaggleStub, tmp_path: Path, sample_zip: bytes, fault: str, said: str
) -> None:
    """A hung API call, a hung or stalled archive, a connection cut on every try: retried, then one line
    naming the request, within the 1 s budget plus one 0.5 s timeout (two attempts fit in it: 0.5 s each,
    0.05 s apart)."""
    if fault == "hang-api":
        stub.hang(times=1000)
    elif fault == "hang-file":
        stub.hang(times=1000, on="file")
    elif fault == "stall-file":
        stub.stall_transfers(len(sample_zip) // 2, times=1000)
    else:
        stub.cut_transfers(1000, times=1000)
    error = _error(fetch(stub, tmp_path, total=1.0, timeout=0.5))
    assert error.startswith(f"error: Kaggle download of {SLUG} still fails after ") and said in error, error
    assert "the retry budget is 1 s" in error and "--data-dir" in error
    posts = stub.requests_to("api")
    assert len(posts) >= 2, posts
    assert posts[-1].time - posts[0].time < 1.0  # no attempt starts past the budget
    ended = max(r.time for r in stub.log)
    assert ended - posts[0].time < 1.0 + 0.5 + 1.0  # the last attempt's timeout, and slack for a loaded machine


def test_the_cli_passes_its_timeout_to_kaggle(stub: KaggleStub, tmp_path: Path) -> None:
    stub.hang(times=1000)
    argv = [
        sys.executable,
        "-m",
        "openeds.download",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--timeout",
        "0.5",
        "--retry-timeout",
        "1",
    ]
    result = run(argv, stub.client_env(tmp_path / "home"))
    _check_output(result)
    assert f"{DOWNLOAD_PATH} got no data for 0.5 s (read timeout" in _error(result)
    assert "the retry budget is 1 s" in _error(result)


def test_a_token_check_that_hangs_is_retried_then_said(stub: KaggleStub, tmp_path: Path) -> None:
    stub.hang(times=1000, on="auth")
    started = time.monotonic()
    error = _error(fetch(stub, tmp_path, credentials="token", total=1.0, timeout=0.5))
    assert time.monotonic() - started < 20  # 0.5 s at import, about 1.5 s of retries, and Python's start
    assert error.startswith("error: could not reach Kaggle to check the access token (POST http://localhost")
    assert f"{INTROSPECT_PATH} got no data for 0.5 s (read timeout" in error
    checks = [r for r in stub.log if r.path == INTROSPECT_PATH]
    assert len(checks) >= 3, checks  # one when kaggle is imported, then at least two attempts
    assert stub.requests_to("api") == []


def test_missing_credentials_cli(stub: KaggleStub, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "openeds.download", "--cache-dir", str(tmp_path / "cache")]
    env = stub.client_env(tmp_path / "home", credentials=None)
    result = run(argv, env)
    _check_output(result)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: no Kaggle credentials found")
    assert "kaggle auth login" in line and "--data-dir" in line
    assert stub.log == []


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (zipfile.ZipInfo("/tmp/absolute.txt"), "has an absolute path"),
        (zipfile.ZipInfo("C:/absolute.txt"), "has an absolute path"),
        (zipfile.ZipInfo("openEDS/link"), "is a symbolic link"),
    ],
    ids=["posix", "windows", "symlink"],
)
def test_unsafe_members_are_refused(tmp_path: Path, info: zipfile.ZipInfo, reason: str) -> None:
    if info.filename.endswith("link"):
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("openEDS/ok.txt", b"fine")
        zf.writestr(info, b"/etc/passwd")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DownloadError, match=f"member {info.filename!r} that {reason}"):
        _extract(archive, target, quiet=True)
    assert not archive.exists() and list(target.iterdir()) == []


@pytest.mark.datasets_line
def test_push_without_data_dir_downloads_from_kaggle(
    small_stub: KaggleStub, hub: HubServer, tmp_path: Path, small_tree: Path
) -> None:
    """Contract with push.py (the lead's): no --data-dir means openeds.download.fetch_raw, and no Hub request."""
    import datasets

    stub = small_stub
    out = tmp_path / "out"
    env = stub.client_env(tmp_path / "home")
    cache = tmp_path / "cache"
    argv = [
        sys.executable,
        str(REPO_ROOT / "push.py"),
        "--local-dir",
        str(out),
        "--no-upload",
        "--cache-dir",
        str(cache),
    ]
    result = run(argv, env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(stub.requests_to("api")) == 1
    assert hub.requests == []  # the session's HF_ENDPOINT is the test Hub: nothing went there

    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    counts = _counts(small_tree)
    assert {split: loaded[split].num_rows for split in loaded} == {s: c["images"] for s, c in counts.items()}


_BUILD_WITHOUT_DATA_DIR = """
import sys
from openeds_precomputed import OpenEDSPrecomputed
builder = OpenEDSPrecomputed(config_name="pupil", raw_cache_dir=sys.argv[1], cache_dir=sys.argv[2])
builder.download_and_prepare()
print(sorted((split, ds.num_rows) for split, ds in builder.as_dataset().items()))
"""


@pytest.mark.datasets_line
def test_builder_without_data_dir_downloads_from_kaggle(
    small_stub: KaggleStub, hub: HubServer, tmp_path: Path, small_tree: Path
) -> None:
    stub, sample_counts = small_stub, _counts(small_tree)
    env = stub.client_env(tmp_path / "home")
    argv = [sys.executable, "-c", _BUILD_WITHOUT_DATA_DIR, str(tmp_path / "raw-cache"), str(tmp_path / "hf-cache")]
    result = run(argv, env, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(sorted((s, c["images"]) for s, c in sample_counts.items()))
    assert len(stub.requests_to("api")) == 1
    assert hub.requests == []


def test_a_second_run_on_the_same_folders_ends_at_once_naming_the_first(
    stub: KaggleStub, hub: HubServer, tmp_path: Path
) -> None:
    """Two real push.py processes: the first holds the staging folder and the Kaggle cache while it
    retries a failing download; a second push.py and `python -m openeds.download` on the same
    folders end at once with one line naming it, and touch nothing."""
    stub.fail(503, times=10**6)
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = stub.client_env(tmp_path / "home")
    push = [sys.executable, str(REPO_ROOT / "push.py"), "--local-dir", str(out), "--no-upload"]
    first = zygote.start([*push, "--cache-dir", str(cache)], env=env, preload=CLIENT_PRELOAD, cwd=tmp_path)
    try:
        owners = [out / ".openeds" / "lock.owner", cache / SLUG_DIR / ".openeds" / "lock.owner"]
        deadline = time.monotonic() + 60
        while not (all(p.exists() for p in owners) and stub.requests_to("api")) and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended"
            time.sleep(0.1)
        assert all(p.exists() for p in owners) and stub.requests_to("api"), "the first run is not retrying yet"

        second = run([*push, "--sample"], env, cwd=tmp_path)
        third = run([sys.executable, "-m", "openeds.download", "--cache-dir", str(cache)], env, cwd=tmp_path)
        holder = f"another push.py (pid {first.pid} on "
        for result, what, option in (
            (second, f"the staging folder {out}", "--local-dir"),
            (third, f"the Kaggle cache {cache / SLUG_DIR}", "--cache-dir"),
        ):
            _check_output(result)
            assert result.returncode == 1
            [line] = result.stderr.strip().splitlines()
            assert (
                line.startswith(f"error: {holder}")
                and f"is using {what}; wait for it to finish or pass another {option}" in line
            ), line
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
        assert written == [".openeds", ".openeds/lock", ".openeds/lock.owner"], "the second run wrote into it"
        assert first.poll() is None
        assert hub.requests == []
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--kaggle-dataset", ""], "--kaggle-dataset '' is empty; expected a value, or leave --kaggle-dataset out"),
        (["--kaggle-dataset", " "], "--kaggle-dataset ' ' is empty; expected a value"),
        (["--cache-dir", ""], "argument --cache-dir: '' is empty; expected a folder path (pass . for the current"),
    ],
    ids=["slug-empty", "slug-blank", "cache-dir-empty"],
)
def test_an_empty_flag_is_refused_not_taken_for_its_default(
    stub: KaggleStub, tmp_path: Path, flags: list[str], expected: str
) -> None:
    """An unset shell variable (`--kaggle-dataset "$SLUG"`) would silently mean the default slug, or the current
    folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cache = [] if "--cache-dir" in flags else ["--cache-dir", str(tmp_path / "cache")]
    argv = [sys.executable, "-m", "openeds.download", *cache, *flags]
    result = run(argv, stub.client_env(tmp_path / "home"), cwd=cwd)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert line.startswith("python -m openeds.download: error: ") and expected in line, line
    assert stub.log == [] and list(cwd.iterdir()) == [] and not (tmp_path / "cache").exists()


def test_a_path_with_a_line_break_stays_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "cache\ndir"
    folder.mkdir()
    archive = folder / "openeds-dataset.zip"
    archive.write_bytes(b"PK\x03\x04 not a zip")
    target = folder / "extract"
    target.mkdir()
    with pytest.raises(DownloadError) as error:
        _extract(archive, target, quiet=True)
    assert "\n" not in str(error.value) and "cache\\ndir" in str(error.value), str(error.value)


def test_ctrl_c_during_the_transfer_says_what_it_stopped_and_keeps_the_part(
    stub: KaggleStub, tmp_path: Path, sample_zip: bytes
) -> None:
    """`python -m openeds.download` stopped by Ctrl-C mid-transfer (openeds/cli.py): one line naming the download,
    exit status 130, no traceback, and the part on disk kept for the next run to resume."""
    stub.stall_transfers(len(sample_zip) - 1000)  # kaggle writes 1 MiB chunks: the first is on disk
    cache, err = tmp_path / "cache", tmp_path / "stderr"
    argv = [sys.executable, "-m", "openeds.download", "--cache-dir", str(cache), "--timeout", "60"]
    download = zygote.start(argv, env=stub.client_env(tmp_path / "home"), preload=CLIENT_PRELOAD, stderr=err)
    part = cache / SLUG_DIR / "download" / "openeds-dataset.zip"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
        assert download.poll() is None, err.read_text()
        time.sleep(0.05)
    assert part.exists() and part.stat().st_size, "no part of the archive was written"
    download.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert download.wait(timeout=60) == 130, err.read_text()
    said = err.read_text()
    assert "Traceback" not in said, said
    assert said.rstrip("\n").splitlines()[-1] == (
        f"interrupted while downloading {SLUG} from Kaggle to {part}; "
        "run it again: the part of the archive already downloaded is kept and resumed"
    ), said
    assert part.stat().st_size > 0


# -- what Python's zipfile can decompress is checked before extraction (issue 22) --------------------------------


def with_entry(archive: bytes, name: str, *, method: int | None = None, flags: int = 0) -> bytes:
    """``archive`` with member ``name``'s compression method replaced and ``flags`` set, in its local header and its
    central directory entry alike (APPNOTE 4.3.7 and 4.3.12: flags at offsets 6 / 8, method at 8 / 10)."""
    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        local = zf.getinfo(name).header_offset
    central = next(
        at
        for at in _find_all(data, b"PK\x01\x02")
        if data[at + 46 : at + 46 + int.from_bytes(data[at + 28 : at + 30], "little")] == name.encode()
    )
    for flags_at, method_at in ((local + 6, local + 8), (central + 8, central + 10)):
        old_flags = int.from_bytes(data[flags_at : flags_at + 2], "little")
        data[flags_at : flags_at + 2] = (old_flags | flags).to_bytes(2, "little")
        if method is not None:
            data[method_at : method_at + 2] = method.to_bytes(2, "little")
    return bytes(data)


def _find_all(data: bytearray, needle: bytes) -> Iterator[int]:
    at = data.find(needle)
    while at != -1:
        yield at
        at = data.find(needle, at + 1)


#: members of every kind of compression Python's zipfile writes and reads (BZIP2 and LZMA are accepted)
MEMBERS = {
    "openEDS/a-stored.txt": (zipfile.ZIP_STORED, b"stored " * 50),
    "openEDS/b-deflate.txt": (zipfile.ZIP_DEFLATED, b"deflate " * 50),
    "openEDS/c-bzip2.txt": (zipfile.ZIP_BZIP2, b"bzip2 " * 50),
    "openEDS/d-lzma.txt": (zipfile.ZIP_LZMA, b"lzma " * 50),
}


def _mixed_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, (method, data) in MEMBERS.items():
            zf.writestr(name, data, compress_type=method)
    return buffer.getvalue()


def test_members_of_every_method_python_reads_are_extracted_exactly(tmp_path: Path) -> None:
    archive, target = tmp_path / "mixed.zip", tmp_path / "target"
    archive.write_bytes(_mixed_zip())
    target.mkdir()
    assert _extract(archive, target, quiet=True) == sum(len(data) for _, data in MEMBERS.values())
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*.txt")} == {
        name: data for name, (_, data) in MEMBERS.items()
    }


@pytest.mark.parametrize(
    ("method", "flags", "says"),
    [
        (9, 0, "is compressed with Deflate64 (method 9), which Python's zipfile cannot decompress"),
        (98, 0, "is compressed with PPMd (method 98), which"),
        (6, 0, "is compressed with Implode (method 6), which"),
        (95, 0, "is compressed with XZ (method 95), which"),
        (77, 0, "is compressed with a number the zip format does not define (method 77), which"),
        (None, 0x1, "is encrypted (password-protected)"),
        (99, 0x1, "is encrypted (password-protected)"),  # WinZip AES: method 99 with the encryption flag
    ],
    ids=["deflate64", "ppmd", "implode", "xz", "undefined-77", "encrypted", "aes"],
)
def test_a_member_zipfile_cannot_decompress_is_refused_before_anything_is_written(
    tmp_path: Path, method: int | None, flags: int, says: str
) -> None:
    """The member is the last one, so members before it would be on disk if extraction had begun."""
    last = list(MEMBERS)[-1]
    archive, target = tmp_path / "archive.zip", tmp_path / "target"
    archive.write_bytes(with_entry(_mixed_zip(), last, method=method, flags=flags))
    target.mkdir()
    with pytest.raises(DownloadError) as info:
        _extract(archive, target, quiet=True)
    line = str(info.value)
    assert f"has member {last!r} that {says}" in line and "expected members stored or compressed with " in line
    assert "Nothing was extracted" in line and "--data-dir" in line and "\n" not in line
    assert list(target.iterdir()) == [], "bytes were written before the refusal"
    assert archive.is_file(), "the archive is kept, for a tool that can unzip it"
