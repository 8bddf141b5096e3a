"""Atomic writes and the cache lock: a reader sees the old artifact or the new one, never half."""

from __future__ import annotations

import json

import pytest
from filelock import Timeout

from nmt.core import rundir
from nmt.core.rundir import building_dir, cache_lock, copy_dir, write_json, write_text


def test_a_write_that_dies_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "scores.json"
    write_json(target, {"bleu": 1.0})

    def dying_fsync(fd):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(rundir.os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"bleu": 2.0})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"bleu": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]
    write_text(target, "new\n")
    assert target.read_bytes() == b"new\n"


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "stage"
    with building_dir(target) as build:
        (build / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), building_dir(target) as build:
        (build / "a.txt").write_text("half")
        raise RuntimeError("the stage failed")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "b.txt").write_text("second")
    copy_dir(tmp_path / "src", target)
    assert [p.name for p in target.iterdir()] == ["b.txt"]  # the old content went


def test_a_cache_entry_is_locked_beside_it(tmp_path):
    entry = tmp_path / "cache" / "data-abc"
    with cache_lock(entry):
        assert (tmp_path / "cache" / "data-abc.lock").exists()
        with pytest.raises(Timeout):
            cache_lock(entry).acquire(timeout=0.05)  # another holder waits
    with cache_lock(entry).acquire(timeout=0.05):
        pass


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_artifacts_have_the_permissions_of_a_plain_write(tmp_path, mask):
    """Atomic writes go through mkstemp (0600) and mkdtemp (0700): the artifacts get what open()
    and mkdir() would give under the umask, so others on the machine read them when it says so."""
    import os
    import stat

    from nmt.core.rundir import building_dir, copy_file, umask, write_json

    old = os.umask(mask)
    try:
        assert umask() == mask
        write_json(tmp_path / "done.json", {"bleu": 1.0})
        copy_file(tmp_path / "done.json", tmp_path / "copy.json")
        with building_dir(tmp_path / "stage") as stage:
            (stage / "x").write_text("x")
    finally:
        os.umask(old)
    for name, full in (("done.json", 0o666), ("copy.json", 0o666), ("stage", 0o777)):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == full & ~mask, name
