"""How errors become one line (nmt.core.errors): an exception's message, the operating system's
refusals with what to do, a missing extra with what to install."""

from __future__ import annotations

import errno
import sys

import pytest

from nmt.core.errors import MissingExtra, has_extra, one_line, os_error_line, require_extra


def test_one_line_joins_a_message_of_several():
    assert one_line(ValueError("first\n\n  second  \nthird")) == "first second third"


def test_an_operating_system_refusal_names_the_path_and_the_remedy(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    assert os_error_line(full) == (
        f"{tmp_path / 'x'}: No space left on device; free some space and run the command again"
    )
    odd = OSError(errno.EIO, "Input/output error")
    assert os_error_line(odd) == "Input/output error"


def test_a_missing_extra_says_what_to_install(monkeypatch):
    assert has_extra("report") and has_extra("tb")
    require_extra("report", "the report")  # installed: nothing happens
    monkeypatch.setitem(sys.modules, "scipy", None)  # an import of it fails, as when missing
    assert not has_extra("report")
    with pytest.raises(MissingExtra) as caught:
        require_extra("report", "the report")
    assert str(caught.value) == (
        "the report needs the [report] extra, which is not installed: "
        "pip install 'nmt-cells[report]' (make install installs every extra)"
    )


def test_an_extra_is_looked_for_without_importing_it():
    """Whether onnx is installed is asked on every nmt-translate (backend=auto): importing it to
    know took 1.3 s. A module that is not there at all, nor its package, is missing too."""
    import subprocess

    code = (
        "import sys; from nmt.core.errors import has_extra; "
        "print(has_extra('onnx'), has_extra('x', ('no_such_module_nmt',)), "
        "has_extra('x', ('no_such_package_nmt.child',)), 'onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False", "False"]
