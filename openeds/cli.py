"""The one error boundary of every command the README and the docs name.

``push.py``, ``python -m openeds.download``, ``python -m openeds.synthetic``, ``examples/train_tiny.py``
and the benchmarks (``python -m benchmarks.X``) run their work through :func:`run`, as pip's
``Command.main`` wraps its ``run``. Classified errors stay where they are raised; this is the net
under them:

* a classified error of the command (``RawDataError``, ``DownloadError``, ``PublishError``,
  ``MaterializeError``, a command's own: :attr:`Command.known`) prints its own one line, as it is:
  ``error: ...``, exit status 1;
* any other exception that reaches the boundary becomes one line too::

      error: while <stage>: <Type>: <message> (<file or URL>); <what that means>. Fix: <what to do>;
      <how a re-run goes on> (<where the traceback is>)

  exit status 1. The stage is what the command said it was doing (:mod:`openeds.stages`), the
  message is the exception's with the secrets removed, whitespace folded, non-printable characters
  escaped and a URL's query (which may hold a signature) cut; the file is the ``OSError``'s, the
  URL the failed request's. What it means and what to do follow from the family of the error: a
  full disk (the temporary folder's named as such), a file-size limit (``ulimit -f``), a read-only
  file system, a permission, a missing file or folder, memory, the network, a server refusing the
  credentials; any other is unexpected: a bug, or a case no one has handled yet, to report with
  its traceback;
* ``--traceback`` (:func:`add_traceback_argument`) or ``OPENEDS_TRACEBACK=1`` prints the full
  traceback first, for a bug report, and the line says it is above (otherwise, how to get it);
* Ctrl-C (``KeyboardInterrupt``) ends with one line saying what was interrupted and how a re-run
  goes on, exit status 130;
* progress bars (tqdm's, those of datasets and huggingface_hub included, in any thread) are closed
  before that line, and nothing printed after it reaches the terminal: a bar a thread still drives
  writes to a sealed sink, and :func:`exit` (a command's ``__main__``) seals the process's streams
  and logging handlers again until it ends, so a thread's late warning or a message at exit is not
  seen either. A caller of a command's ``main()`` in its own process gets its streams back.

For the time of the run, the standard streams and the logging handlers that write to them go
through a sink (:class:`_Sink`):

* every text is redacted of the secrets in play (:func:`secrets_in_play`: the Hugging Face token
  of ``HF_TOKEN`` or of ``hf auth login``, the Kaggle key, its Basic-auth form and the Kaggle access
  token) before it reaches the terminal, whoever prints it: a server's error message that echoes
  the token, a library's warning, a traceback;
* a character the stream's encoding cannot write is written escaped (``LANG=C``,
  ``PYTHONIOENCODING=ascii``, a file name that is not UTF-8): no message fails to print;
* a reader that went away (``push.py ... | head -1``) is no error: the stream's descriptor is
  pointed at ``/dev/null``, as Python's documentation advises for SIGPIPE, so the run finishes its
  work without printing and exits as its work ended: 0 if it succeeded.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import errno
import json
import logging
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from openeds import stages
from openeds.names import one_line, shown
from openeds.retry import error_chain

#: set to 1 (or anything but 0): every failure shows its full traceback, as ``--traceback`` does
TRACEBACK_ENV = "OPENEDS_TRACEBACK"
#: the exit status of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
INTERRUPTED = 130
#: the longest part of an exception's message the line shows (a server may answer with a whole page)
MESSAGE_LIMIT = 400
#: secrets shorter than this are not looked for: no real token is, and a short one would redact ordinary words
MIN_SECRET = 8


@dataclass(frozen=True)
class Command:
    """A command line run through the boundary, as its messages name it."""

    #: how the command is typed, e.g. ``python push.py``
    name: str
    #: how a re-run goes on after a failure, e.g. ``run the same command again: finished shards are kept``
    again: str
    #: the command's classified errors: their message is the line, as it is
    known: tuple[type[Exception], ...] = ()
    #: whether the command's parser takes ``--traceback`` (:func:`add_traceback_argument`); else only the variable
    traceback_flag: bool = True
    #: what the run is doing before the command says anything (:func:`openeds.stages.now`)
    start: str = "starting"


class _Settings:
    traceback = False


_settings = _Settings()


class _ShowTraceback(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: object) -> None:
        setattr(namespace, self.dest, True)
        _settings.traceback = True  # from here on, whatever fails after the parsing


def add_traceback_argument(parser: argparse.ArgumentParser) -> None:
    """``--traceback``: a failure shows its full traceback before its one line (for a bug report)."""
    parser.add_argument(
        "--traceback",
        action=_ShowTraceback,
        help=f"on a failure, print the full traceback before the one error line, for a bug report "
        f"(also {TRACEBACK_ENV}=1)",
    )


def run(command: Command, main: Callable[[], int | None]) -> int:
    """Run ``main()`` behind the boundary (module docstring); its exit status, or the failure's.

    ``SystemExit`` (argparse's usage errors, ``--help``) passes through, as it ends a run already.
    """
    _settings.traceback = os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")
    stages.reset(command.start)
    hide(secrets_in_play())
    output = _Output()
    failed = False
    try:
        code = main()
        return 0 if code is None else code
    except KeyboardInterrupt as error:
        failed = True
        output.last(error, f"interrupted while {_doing(error)}; {command.again}")
        return INTERRUPTED
    except Exception as error:
        failed = True
        output.last(error, _line(error, command))
        return 1
    finally:
        output.restore()
        _Last.failed = output if failed else None


class _Last:
    """The output of the last run, if it failed: :func:`exit` seals the process's streams with it."""

    failed: _Output | None = None


def exit(code: int) -> NoReturn:
    """End the process with ``code`` (a command's ``__main__``: ``cli.exit(main())``), printing nothing more.

    After a failure, its last line printed, the standard streams and the logging handlers write to the
    run's sealed sinks until the process ends: a thread that logs or prints on, an atexit handler, are not
    seen after the line.
    """
    if _Last.failed is not None:
        _Last.failed.seal()
    sys.exit(code)


def end_now(line: str) -> NoReturn:
    """End the process at once, exit status 1, with ``line`` as its last line: the last resort of a thread that
    finds the run's work will not return (``openeds.hub.xet``'s watchdog, when an upload call ignores its abort).

    As at the end of :func:`run`, the progress bars are closed first and the line goes through the run's sinks
    (redacted, escaped); ``os._exit`` then ends the process, so nothing is printed after it.
    """
    _close_progress_bars()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a reader gone, a stream closed: the line is still tried
            pass
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    finally:
        os._exit(1)


def _line(error: Exception, command: Command) -> str:
    try:
        return f"error: {one_line(str(error))}" if isinstance(error, command.known) else describe(error, command)
    except Exception:  # an exception whose text cannot be made: its type still says something
        return f"error: while {_doing(error)}: {type(error).__name__}; {_BUG[0]}. Fix: {_BUG[1]}; {command.again}"


def describe(error: BaseException, command: Command) -> str:
    """The one line for an exception no one classified (module docstring)."""
    cause = _cause(error)
    meaning, fix = _advice(error)
    if _settings.traceback:
        where = "the full traceback is above"
    elif command.traceback_flag:
        where = f"--traceback or {TRACEBACK_ENV}=1 shows the full traceback"
    else:
        where = f"{TRACEBACK_ENV}=1 shows the full traceback"
    concerning = _concerning(error, cause)
    return f"error: while {_doing(error)}: {cause}{concerning}; {meaning}. Fix: {fix}; {command.again} ({where})"


def _doing(error: BaseException) -> str:
    return one_line(stages.of(error) or stages.current() or "starting")


#: a URL's query and fragment: a signed upload URL carries its signature there
_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*", re.IGNORECASE)


def _clean(text: str) -> str:
    """A text from outside as it goes into the line: one line, secrets removed, escaped, queries cut, bounded."""
    text = redact(" ".join(text.split()))
    text = _QUERY.sub(r"\1?...", one_line(text))
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _cause(error: BaseException) -> str:
    """``Type: message``, and the error it was raised from when that says something more."""
    text = f"{type(error).__name__}: {_clean(str(error))}" if str(error).strip() else type(error).__name__
    cause = error.__cause__
    if cause is not None and str(cause).strip() and _clean(str(cause)) not in text:
        text += f" (from {type(cause).__name__}: {_clean(str(cause))})"
    return text


def _concerning(error: BaseException, said: str) -> str:
    """The files and the URL the error concerns, where its message does not name them already."""
    named = []
    for link in error_chain(error):
        if isinstance(link, OSError):
            for name in (link.filename, link.filename2):
                if isinstance(name, bytes):
                    name = os.fsdecode(name)
                if isinstance(name, (str, os.PathLike)) and shown(name) not in said and str(name) not in said:
                    named.append(f"file {shown(name)}")
        url = _url(link)
        if url and url.split("?")[0] not in said:
            named.append(f"URL {url}")
    return f" ({', '.join(dict.fromkeys(named))})" if named else ""


def _url(error: BaseException) -> str | None:
    """The URL of the request that failed, for an error of httpx or requests (without its query)."""
    for holder in (error, getattr(error, "response", None)):
        try:
            request = getattr(holder, "request", None)  # httpx raises RuntimeError when it has none
            url = getattr(request, "url", None)
        except Exception:
            continue
        if url:
            return _clean(str(url)).replace("?...", "")
    return None


_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM}
_NETWORK = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EPIPE,
}
#: exception classes of the HTTP clients (httpx, requests, urllib3) that are a network failure, by name
_NETWORK_CLASSES = {"TransportError", "TimeoutException", "ConnectionError", "Timeout", "ProtocolError", "NetworkError"}
#: what NumPy's ``tofile`` (``np.save`` to a file) says when a write is cut short, without an errno
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_BUG = (
    "this is an error the tool does not explain (a bug, or a case no one has handled yet)",
    "report it, with its full traceback",
)


def _advice(error: BaseException) -> tuple[str, str]:
    """What the error means and what to do, from its family (the first link of its chain that has one)."""
    for link in error_chain(error):
        if isinstance(link, MemoryError) or (isinstance(link, OSError) and link.errno == errno.ENOMEM):
            return (
                "the machine ran out of memory",
                "close other programs, or run with fewer processes or smaller batches",
            )
        if isinstance(link, OSError) and link.errno is not None:
            advice = _os_advice(link)
            if advice is not None:
                return advice
        if isinstance(link, OSError) and _SHORT_WRITE.search(str(link)):  # NumPy's tofile, which has no errno
            return "a write was cut short: the disk is full, or a file reached its size limit", (
                "free some space (TMPDIR for the temporary folder), or raise the limit (ulimit -f)"
            )
        if isinstance(link, (ConnectionError, TimeoutError)) or _NETWORK_CLASSES & {
            cls.__name__ for cls in type(link).__mro__
        }:
            return (
                "a network connection failed or timed out",
                "check the network connection, the proxy settings and the endpoint (HF_ENDPOINT)",
            )
        if isinstance(link, UnicodeError):
            return (
                "a name or a text is not valid in its encoding (a file name of bytes that are not UTF-8, for one)",
                "rename the file or folder to a name of UTF-8 characters",
            )
        if isinstance(link, PermissionError):  # no errno: a server refused the credentials (hf_xet's, for one)
            return (
                "access was refused",
                "check the token (HF_TOKEN or `hf auth login`) and its rights, and the permissions of the files",
            )
    return _BUG


def _os_advice(error: OSError) -> tuple[str, str] | None:
    code = error.errno
    name = error.filename if isinstance(error.filename, (str, os.PathLike)) else None
    file = shown(name) if name is not None else "a file the run writes"
    if code in _FULL:
        temporary = name is not None and _inside(Path(name), Path(tempfile.gettempdir()))
        where = f"the temporary folder ({shown(tempfile.gettempdir())})" if temporary else f"the disk holding {file}"
        fix = "free some space, or set TMPDIR to a folder on a larger disk" if temporary else "free some space"
        return f"{where} is full", fix
    if code == errno.EFBIG:
        return f"{file} reached the largest size this process may write ({_size_limit()})", (
            "raise the limit (ulimit -f unlimited) or write to a file system that takes larger files"
        )
    if code == errno.EROFS:
        return f"{file} is on a read-only file system", "use a folder on a writable disk"
    if code in _DENIED:
        return f"access to {file} was refused", (
            "check the permissions of the file and of its folder (and an immutable flag: lsattr), or use another folder"
        )
    if code == errno.ENOENT:
        return f"{file} does not exist (removed during the run, or a path that was never there)", "check the path"
    if code == errno.EISDIR:
        return f"{file} is a folder, where a file was expected", "move the folder away, or name another path"
    if code == errno.ENOTDIR:
        return f"a part of the path {file} is a file, where a folder was expected", (
            "move the file away, or name another path"
        )
    if code == errno.EIO:
        return f"the disk holding {file} reported an input/output error", "check the disk (dmesg), or use another"
    if code in (errno.EMFILE, errno.ENFILE):
        return "the run has too many files open", "raise the limit (ulimit -n)"
    if code in _NETWORK:
        return "a network connection failed or timed out", (
            "check the network connection, the proxy settings and the endpoint (HF_ENDPOINT)"
        )
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))
    except (OSError, ValueError):
        return False


def _size_limit() -> str:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return "the file system's largest file"
    if soft == resource.RLIM_INFINITY:
        return "the file system's largest file"
    return f"the file-size limit, ulimit -f, is {soft:,} bytes"


# -- the secrets in play --------------------------------------------------------------------------------


def secrets_in_play(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every secret this run may send or be answered with, each with what replaces it in output.

    The Hugging Face token (``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``, the token file of ``hf auth
    login`` and its stored tokens); the Kaggle key (``KAGGLE_KEY``, ``kaggle.json``) and its
    Basic-auth form (base64 of ``user:key``), the Kaggle access token (``KAGGLE_API_TOKEN``, a
    value or a file, ``~/.kaggle/access_token``) and the OAuth tokens of ``credentials.json``. Read
    from where the clients read them; a file that cannot be read holds no secret for this run.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    found: dict[str, str] = {}

    def add(value: object, label: str) -> None:
        if isinstance(value, str) and len(value.strip()) >= MIN_SECRET:
            found.setdefault(value.strip(), f"[hidden: {label}]")

    hf_home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "huggingface")
    token_files = {Path(env.get("HF_TOKEN_PATH") or hf_home / "token")}
    constants = sys.modules.get("huggingface_hub.constants")  # its paths, as it read them when imported
    if constants is not None:
        token_files.add(Path(constants.HF_TOKEN_PATH))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        add(env.get(name), "Hugging Face token")
    for path in token_files:
        add(_read(path), "Hugging Face token")
        stored = configparser.ConfigParser(interpolation=None)
        try:
            stored.read(path.parent / "stored_tokens", encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in stored.sections():
            add(stored.get(section, "hf_token", fallback=None), "Hugging Face token")
            add(stored.get(section, "refresh_token", fallback=None), "Hugging Face token")

    kaggle_dirs = [Path(d) for d in (env.get("KAGGLE_CONFIG_DIR"),) if d]
    kaggle_dirs += [home / ".kaggle", Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    users = {env.get("KAGGLE_USERNAME") or ""}
    keys = {env.get("KAGGLE_KEY") or ""}
    for folder in kaggle_dirs:
        config = _read_json(folder / "kaggle.json")
        users.add(str(config.get("username") or ""))
        keys.add(str(config.get("key") or ""))
        credentials = _read_json(folder / "credentials.json")
        for field in ("refresh_token", "access_token"):
            add(credentials.get(field), "Kaggle token")
        for name in ("access_token", "access_token.txt"):
            add(_read(folder / name), "Kaggle access token")
    api_token = env.get("KAGGLE_API_TOKEN") or ""
    add(_read(Path(api_token)) if api_token and os.path.isfile(api_token) else api_token, "Kaggle access token")
    for key in keys - {""}:
        add(key, "Kaggle key")
        for user in users:
            encoded = base64.b64encode(f"{user}:{key}".encode()).decode()
            add(encoded, "Kaggle key")
            add(encoded.rstrip("="), "Kaggle key")
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(_read(path) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _Redaction:
    """The secrets of the run in progress, longest first (so that no part of one is left), and their stand-ins."""

    secrets: dict[str, str] = {}
    ordered: list[str] = []


def hide(secrets: Mapping[str, str]) -> None:
    """From now on :func:`redact` removes these secrets (:func:`run` calls it with :func:`secrets_in_play`)."""
    _Redaction.secrets = dict(secrets)
    _Redaction.ordered = sorted(secrets, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` without the secrets of the run in progress: the one redaction of every output."""
    for secret in _Redaction.ordered:
        if secret in text:
            text = text.replace(secret, _Redaction.secrets[secret])
    return text


# -- the standard streams of the run ----------------------------------------------------------------------


class _Sink:
    """A standard stream as the run writes to it (module docstring): redacted, never failing to encode, quiet
    once its reader is gone, silent once sealed (after the last line). Anything else is the stream's."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.gone = stream is None  # the reader went away (or there was no stream)
        self.sealed = False

    def write(self, text: str) -> int:
        if self.gone or self.sealed:
            return len(text)
        written = redact(text) if isinstance(text, str) else text  # anything else: the stream's TypeError
        try:
            try:
                self.stream.write(written)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                self.stream.write(written.encode(encoding, "backslashreplace").decode(encoding, "replace"))
        except OSError as error:
            self._went_away(error)
        return len(text)

    def writelines(self, lines: Iterator[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.gone:
            return
        try:
            self.stream.flush()
        except OSError as error:
            self._went_away(error)

    def isatty(self) -> bool:
        return not self.gone and self.stream.isatty()

    def _went_away(self, error: OSError) -> None:
        """A reader that closed its end: the descriptor writes to /dev/null from now on. Anything else raises."""
        if error.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise error
        self.gone = True
        try:
            descriptor = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, descriptor)
        finally:
            os.close(devnull)
        try:
            self.stream.flush()  # what it still holds goes to /dev/null, so that the flush at exit succeeds
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _inner(stream: object) -> object:
    while isinstance(stream, _Sink):
        stream = stream.stream
    return stream


class _Output:
    """The run's sinks: installed for its time, over ``sys.stdout``, ``sys.stderr`` and the logging handlers."""

    def __init__(self) -> None:
        self.saved = (sys.stdout, sys.stderr)
        self.out = _Sink(_inner(sys.stdout))
        self.err = _Sink(_inner(sys.stderr))
        sys.stdout, sys.stderr = self.out, self.err
        self.handlers: list[tuple[logging.StreamHandler, object]] = []
        targets = {id(self.out.stream): self.out, id(self.err.stream): self.err}
        targets.setdefault(id(sys.__stdout__), self.out)
        targets.setdefault(id(sys.__stderr__), self.err)
        for handler in _stream_handlers():
            sink = targets.get(id(_inner(handler.stream)))
            if sink is not None:
                self.handlers.append((handler, handler.stream))
                handler.setStream(sink)

    def last(self, error: BaseException, line: str) -> None:
        """Close the progress bars, print the traceback if asked, then ``line``: nothing is printed after it."""
        _close_progress_bars()
        self.out.flush()
        if _settings.traceback:
            traceback.print_exception(error, file=self.err)
        self.err.write(line + "\n")
        self.err.flush()
        self.out.sealed = self.err.sealed = True

    def restore(self) -> None:
        """Give the streams and the handlers back (a sink an earlier run left sealed is unwrapped too)."""
        for sink in (self.out, self.err):
            try:
                sink.flush()
            except (OSError, ValueError):
                pass
        if sys.stdout is self.out and sys.stderr is self.err:
            sys.stdout, sys.stderr = (_inner(stream) for stream in self.saved)
        for handler, stream in self.handlers:
            if handler.stream in (self.out, self.err):
                handler.setStream(_inner(stream))

    def seal(self) -> None:
        """From now on the process's standard streams and those handlers write to this run's sealed sinks."""
        sys.stdout, sys.stderr = self.out, self.err
        for handler, _ in self.handlers:
            handler.setStream(self.err if _inner(handler.stream) is self.err.stream else self.out)


def _stream_handlers() -> Iterator[logging.StreamHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                yield handler


def _close_progress_bars() -> None:
    """Close every open tqdm bar, whichever thread drives it: a closed bar prints nothing more."""
    std = sys.modules.get("tqdm.std")
    if std is None:
        return
    for bar in list(getattr(std.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half made or half gone: it prints nothing more either way
            pass
