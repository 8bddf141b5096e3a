"""The one-file model format at the level of its archive: packed, checked, unpacked."""

from __future__ import annotations

import json
import zipfile

import pytest

from nmt.serving.bundle import FORMAT, MANIFEST, BundleError, extract, pack, read_manifest


@pytest.fixture
def packed(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "meta.json").write_text('{"step": 3}')
    files = {"config.yaml": tmp_path / "config.yaml", "best/meta.json": tmp_path / "meta.json"}
    out = tmp_path / "model.nmt"
    pack(files, {"pair": "en-de"}, out)
    return out


def test_a_packed_file_unpacks_to_the_same_files(packed, tmp_path):
    manifest = read_manifest(packed)
    assert manifest["format"] == FORMAT and manifest["pair"] == "en-de"
    assert set(manifest["sha256"]) == {"config.yaml", "best/meta.json"}
    assert extract(packed, tmp_path / "out") == manifest
    assert (tmp_path / "out" / "config.yaml").read_text() == "seed: 1\n"
    assert (tmp_path / "out" / "best" / "meta.json").read_text() == '{"step": 3}'
    assert not (tmp_path / "out" / MANIFEST).exists()
    assert [p.name for p in tmp_path.glob(".*")] == []  # no temporary left beside it


def rewrite(packed, out, edit):
    """A copy of the archive with edit(name, data) -> data (None drops the member)."""
    with zipfile.ZipFile(packed) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info, data)
    return out


def test_each_kind_of_damage_is_named(packed, tmp_path):
    def manifest_edit(change):
        def edit(name, data):
            return json.dumps(change(json.loads(data))).encode() if name == MANIFEST else data

        return edit

    newer = rewrite(packed, tmp_path / "v2.nmt", manifest_edit(lambda m: {**m, "version": 2}))
    with pytest.raises(BundleError, match="bundle version 2; this nmt reads version 1"):
        read_manifest(newer)
    foreign = rewrite(packed, tmp_path / "f.nmt", manifest_edit(lambda m: {**m, "format": "x"}))
    with pytest.raises(BundleError, match="not an nmt model file .format 'x'"):
        read_manifest(foreign)
    short = rewrite(packed, tmp_path / "s.nmt", lambda n, d: None if n == "config.yaml" else d)
    with pytest.raises(BundleError, match="holds 'config.yaml', which its manifest does not list"):
        read_manifest(short)  # listed, not held: named the same way
    edited = rewrite(packed, tmp_path / "e.nmt", lambda n, d: d + b"x" if n == "config.yaml" else d)
    with pytest.raises(BundleError, match="config.yaml is damaged .its sha256"):
        extract(edited, tmp_path / "out")


def test_a_member_no_model_holds_is_refused_even_when_listed(tmp_path):
    (tmp_path / "run.py").write_text("print('no')")
    pack({"run.py": tmp_path / "run.py"}, {}, tmp_path / "m.nmt")
    with pytest.raises(BundleError, match="holds 'run.py', which no nmt model file holds"):
        extract(tmp_path / "m.nmt", tmp_path / "out")
    assert not (tmp_path / "out" / "run.py").exists()
