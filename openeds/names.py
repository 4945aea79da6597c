"""Names (paths, file names, stems) as they go into the project's one-line messages.

Every error and warning is one line, and a file name may hold a newline, a tab, a terminal
escape or bytes that are not valid UTF-8 (which Python reads as lone surrogates). Printed as
they are, such names spread one message over several lines, or rewrite the terminal. So every
name goes through :func:`shown`: a name of printable characters only is shown as it is (the
common case, so messages stay readable and copyable), any other as Python's ``repr`` of it,
quoted, with every non-printable character escaped (``'000\\n12.png'``).
"""

from __future__ import annotations

import os


def shown(name: str | os.PathLike[str]) -> str:
    """``name`` as it goes into a one-line message: as it is if printable, else its quoted, escaped repr."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    return text if text.isprintable() else repr(text)


def one_line(message: str) -> str:
    """A whole message with each non-printable character escaped: the last guard where a message is printed.

    Names are put in with :func:`shown` where the message is made; this catches text that reached a
    message otherwise (a server's answer, a library's error) so that ``error: ...`` is still one line.
    """
    return message if message.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
