"""User errors: a wrong input, setting or file, reported as one line naming it (exit status 1).

Every stage raises a subclass of :class:`UserError` for what the user can fix; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import re
import shutil


class UserError(ValueError):
    """Something the user can fix; the message says what and where."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(error: BaseException) -> str:
    """An exception's whole message on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


# What to do about the operating system's refusals a user can fix.
_REMEDY = {
    errno.ENOSPC: "free some space and run the command again",
    errno.EDQUOT: "free some space (or raise the quota) and run the command again",
    errno.EFBIG: "the file grew past a size limit (ulimit -f, a quota); free or raise it",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "the file system is read-only; choose a path elsewhere",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; check the path",
    errno.EISDIR: "it is a directory; name a file",
}


def _copy_failure(error: shutil.Error) -> str | None:
    """The first failure of a shutil.copytree, whose error holds a list of (source, destination,
    reason) instead of one path and errno: as os_error_line says one."""
    failures = error.args[0] if error.args and isinstance(error.args[0], list) else []
    if not failures or not isinstance(failures[0], tuple) or len(failures[0]) != 3:
        return None
    _, where, reason = failures[0]
    found = re.match(r"\[Errno (\d+)\] (.*)", str(reason))
    code, what = (int(found[1]), found[2]) if found else (None, str(reason))
    what = what.split(": '", 1)[0]  # the path is said first
    remedy = _REMEDY.get(code)
    more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
    return f"{where}: {what}{more}" + (f"; {remedy}" if remedy else "")


def os_error_line(error: OSError) -> str:
    """An operating-system error as one line: the path, what went wrong and what to do."""
    if isinstance(error, shutil.Error) and (line := _copy_failure(error)):
        return line
    where = f"{error.filename}: " if error.filename is not None else ""
    what = error.strerror or first_line(error)
    remedy = _REMEDY.get(error.errno)
    return f"{where}{what}" + (f"; {remedy}" if remedy else "")


# The optional parts of the package (pyproject's extras) and a module each one brings.
EXTRAS = {
    "report": ("matplotlib", "scipy"),
    "tb": ("tensorboard",),
    "launchers": ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher"),
    "serve": ("fastapi", "uvicorn"),
    "onnx": ("onnx", "onnxruntime"),
}


class MissingExtra(UserError):
    """An optional part of the package that a command needs is not installed."""


def has_extra(extra: str, modules: tuple[str, ...] | None = None) -> bool:
    """Whether the modules of ``extra`` (or the given ones of it) are installed: found, not
    imported (importing onnx to learn that it is there took 1.3 s of every nmt-translate)."""
    for module in modules or EXTRAS[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # a parent package missing, or a broken entry
            return False
    return True


def require_extra(extra: str, needed_by: str, modules: tuple[str, ...] | None = None) -> None:
    """Refuse, in one line that says what to install, when ``extra`` is missing."""
    if not has_extra(extra, modules):
        raise MissingExtra(
            f"{needed_by} needs the [{extra}] extra, which is not installed: "
            f"pip install 'nmt-cells[{extra}]' (make install installs every extra)"
        )
