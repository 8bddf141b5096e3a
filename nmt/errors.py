"""User errors: a wrong input, setting or file, reported as one line naming it (exit status 1).

Every stage raises a subclass of :class:`UserError` for what the user can fix; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix; the message says what and where."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(error: BaseException) -> str:
    """An exception's whole message on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
