"""A model in one file (nmt-export format=bundle, nmt.serving.bundle): it translates exactly as its run
directory did, without the run directory; a damaged or foreign file is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import greedy_alike, invoke, multi30k_lines

from nmt.serving.bundle import BundleError, read_manifest
from nmt.translate import Translator

BIN = Path(sys.executable).parent
LINES = ["A dog runs in the park.", "", "Two men talk.", "A woman reads a book."]


def run(tool: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return invoke(tool, *args, stdin=stdin)  # in this process: the commands' words and files


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "model.nmt"
    made = run("nmt-export", f"run_dir={tiny_run}", f"out={out}")
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stdout.startswith(f"wrote {out} (") and f"nmt-translate model={out}" in made.stdout
    return out


def test_the_file_translates_as_its_run_directory(bundle, tiny_run, caplog):
    manifest = read_manifest(bundle)
    done = json.loads((tiny_run / "done.json").read_text())
    assert (manifest["src"], manifest["tgt"], manifest["cell"]) == ("en", "de", "gru")
    assert manifest["parameters"] == done["parameters"] and manifest["steps"] == [done["best_step"]]
    assert manifest["valid"]["bleu_signature"] == done["bleu_signature"]
    expected = Translator.from_run_dir(tiny_run).translate(LINES)
    with caplog.at_level("INFO", logger="nmt.model.restore"):
        loaded = Translator.from_file(bundle)
    assert ", gru en->de)" in caplog.text  # the cell a served bundle logs (was None)
    assert loaded.translate(LINES) == expected
    assert loaded.sources[0]["model"] == str(bundle) and loaded.manifest["format"] == "nmt-model"
    cli = run("nmt-translate", f"model={bundle}", stdin="".join(f"{t}\n" for t in LINES))
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert cli.stdout.split("\n")[:-1] == expected


def test_averaged_weights_travel_as_one(tiny_run_b, tmp_path):
    out = tmp_path / "avg.nmt"
    made = run("nmt-export", f"run_dir={tiny_run_b}", f"out={out}", "checkpoint=avg-last-3")
    assert made.returncode == 0, made.stderr[-2000:]
    assert len(read_manifest(out)["steps"]) == 3
    expected = Translator.from_run_dir(tiny_run_b, checkpoint="avg-last-3").translate(LINES)
    assert Translator.from_file(out).translate(LINES) == expected


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, (
        result.stderr[-2000:]
    )
    return lines[0]


def test_a_damaged_or_foreign_file_is_one_line(bundle, tmp_path):
    cut = tmp_path / "cut.nmt"
    cut.write_bytes(bundle.read_bytes()[:5000])
    assert "not an nmt model file" in one_line_error(
        run("nmt-translate", f"model={cut}", stdin="x\n")
    )
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert "no manifest.json" in one_line_error(run("nmt-translate", f"model={other}", stdin="x\n"))
    tampered = tmp_path / "tampered.nmt"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + b"\n# edited\n" if info.filename == "config.yaml" else data)
    with pytest.raises(BundleError, match="config.yaml is damaged .its sha256"):
        Translator.from_file(tampered)
    stray = tmp_path / "stray.nmt"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(stray, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../evil.py", "print('no')")
    with pytest.raises(BundleError, match="holds '../evil.py', which its manifest does not list"):
        Translator.from_file(stray)
    missing = one_line_error(run("nmt-translate", f"model={tmp_path / 'none.nmt'}", stdin="x\n"))
    assert missing == f"error: {tmp_path / 'none.nmt'}: no such file"


def test_commands_that_read_a_corpus_want_the_run_directory(bundle, tiny_run):
    refused = one_line_error(run("nmt-eval", f"model={bundle}", "split=val"))
    assert "nmt-eval reads the splits of a run directory's corpus" in refused
    both = one_line_error(run("nmt-translate", f"model={bundle}", f"run_dir={tiny_run}"))
    assert "name one model" in both
    none = one_line_error(run("nmt-translate", stdin="x\n"))
    assert "name a run directory (run_dir=runs/X) or a file (model=FILE)" in none


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def onnx_dir(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model"
    made = run("nmt-export", f"run_dir={tiny_run}", "format=onnx", f"out={out}")
    assert made.returncode == 0, made.stderr[-2000:]
    assert f"nmt-translate model={out} backend=onnxruntime" in made.stdout
    return out


def test_onnx_export_decodes_a_test_split_as_pytorch(onnx_dir, tiny_run):
    """Greedy and beam 5 on test_2016_flickr's first 40 sources: the exported directory under
    onnxruntime gives the run directory's translations under PyTorch, line for line."""
    lines = multi30k_lines("test_2016_flickr", "en", 40)
    stdin = "".join(f"{t}\n" for t in lines)
    for search in ("greedy", "beam5"):
        expected = Translator.from_run_dir(tiny_run, search=search, precision="fp32")
        want = expected.translate(lines)
        cli = run(
            "nmt-translate",
            f"model={onnx_dir}",
            "backend=onnxruntime",
            f"search={search}",
            stdin=stdin,
        )
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert cli.stdout.split("\n")[:-1] == want
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"encoder", "step", "encoder.int8", "step.int8"}
    int8 = Translator.from_file(onnx_dir, backend="onnxruntime", quantize="int8")
    assert int8.backend == ("onnxruntime", "int8") and len(int8.translate(lines)) == 40
    # Exported as it loads, from a run directory: the same translations again, wherever the
    # model's choice is not a near tie that the two backends' kernels may break either way.
    direct = Translator.from_run_dir(tiny_run, search="greedy", backend="onnxruntime")
    reference = Translator.from_run_dir(tiny_run, search="greedy", precision="fp32")
    src = reference.tokenizer.encode_src(lines)
    pairs = zip(src, reference.translate_full(lines), direct.translate_full(lines), strict=True)
    same = [
        greedy_alike(reference.model, s, a.hyps[0].tokens, b.hyps[0].tokens) for s, a, b in pairs
    ]
    assert sum(same) >= len(lines) // 2


def test_a_damaged_graph_is_one_line(onnx_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(onnx_dir, copy)
    with open(copy / "onnx" / "step.onnx", "ab") as f:
        f.write(b"\0")
    error = one_line_error(
        run("nmt-translate", f"model={copy}", "backend=onnxruntime", stdin="x\n")
    )
    assert error.endswith("step.onnx: damaged (its sha256 is not the manifest's)")
    (copy / "manifest.json").unlink()
    error = one_line_error(run("nmt-translate", f"model={copy}", stdin="x\n"))
    assert "not an nmt model directory (no manifest.json)" in error


def test_export_never_replaces_a_file_unasked_nor_writes_into_a_run(tiny_run, bundle, tmp_path):
    import hashlib
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    for out, extra, says in (
        (run_dir / "config.yaml", [], f"lies inside the run directory {run_dir}"),
        (run_dir / "best" / "model.safetensors", ["overwrite=true"], "lies inside the run dir"),
        (run_dir / "new.nmt", [], "lies inside the run directory"),
        (run_dir, ["format=onnx", "overwrite=true"], f"out={run_dir} is a run directory"),
    ):
        made = run("nmt-export", f"run_dir={run_dir}", f"out={out}", *extra)
        assert made.returncode == 1, made.stderr[-2000:]
        (line,) = made.stderr.strip().splitlines()
        assert says in line, line
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == before
    assert not (run_dir / "new.nmt").exists()
    out = tmp_path / "model.nmt"
    shutil.copy(bundle, out)
    kept = out.read_bytes()
    refused = run("nmt-export", f"run_dir={run_dir}", f"out={out}")
    assert refused.returncode == 1 and "exists; add overwrite=true" in refused.stderr
    assert out.read_bytes() == kept
    replaced = run("nmt-export", f"run_dir={run_dir}", f"out={out}", "overwrite=true")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert read_manifest(out)["source"] == str(run_dir.resolve())
