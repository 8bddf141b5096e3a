"""Decoding backends and the HTTP service under load, for ``make bench`` (``--what backends,serve``).

backends: one trained run decoded by each backend (PyTorch fp32 and bf16, onnxruntime fp32 and
int8) in one sitting: speed at equal work (every output forced to 20 steps, greedy and beam 5:
sentences/s and generated tokens/s) and the BLEU / chrF each costs on the test splits (beam 5, the
same settings as ``make eval``), with sacreBLEU's signature.

serve: ``nmt-serve`` started on loopback, N clients sending requests of a few sentences each for M
seconds: requests/s, sentences/s, p50 / p99 latency, and the server's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nmt  # noqa: F401 - first, as in nmt's commands: it sets how torch allocates
from nmt.core.overrides import quoted

VARIANTS = {  # name: Translator settings
    "torch_fp32": {"backend": "torch", "quantize": "none", "precision": "fp32"},
    "torch_bf16": {"backend": "torch", "quantize": "none", "precision": "bf16"},
    "onnxruntime_fp32": {"backend": "onnxruntime", "quantize": "none"},
    "onnxruntime_int8": {"backend": "onnxruntime", "quantize": "int8"},
}
FORCED20 = {"min_len": 19, "max_len_a": 0.0, "max_len_b": 20}


def bench_backends(run_dir: Path, splits: list[str], repeats: int, speed_sentences: int) -> dict:
    import torch

    from nmt.core.compose import compose
    from nmt.core.runtime import autocast, pick_precision
    from nmt.core.search_options import SearchOptions
    from nmt.decoding.decode import decode_corpus
    from nmt.scoring.evaluate import split_pairs
    from nmt.scoring.metrics import score
    from nmt.translate import Translator

    result: dict = {"run_dir": str(run_dir), "threads": torch.get_num_threads(), "variants": {}}
    native_bf16 = pick_precision("auto", torch.device("cpu")) == torch.bfloat16
    for name, settings in VARIANTS.items():
        if settings.get("precision") == "bf16" and not native_bf16:
            # Emulated bf16 multiplies ~100x slower than fp32: nothing anyone would decode with.
            result["variants"][name] = {"skipped": "bf16 is not native on this CPU"}
            print(f"backends.{name}: skipped (bf16 is not native on this CPU)", flush=True)
            continue
        translator = Translator.from_run_dir(run_dir, device="cpu", **settings)
        figures: dict = {}
        sources = split_pairs(run_dir, splits[0])[0][:speed_sentences]
        src = translator.tokenizer.encode_src(sources)
        for search in ("greedy", "beam5"):
            preset = compose("translate", [f"search={search}"]).search
            options = SearchOptions.from_config(preset).replace(**FORCED20)

            def decode(batch, options=options, translator=translator):
                with autocast(translator.device, translator.precision):
                    return decode_corpus(
                        translator.model,
                        batch,
                        options,
                        device=translator.device,
                        max_sentences=64,
                        max_tokens=None,
                    )

            decode(src[:64])  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                found = decode(src)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            tokens = sum(len(h[0].tokens) + 1 for h in found)
            figures[f"forced20_{search}_sentences_per_s"] = round(len(src) / seconds, 1)
            figures[f"forced20_{search}_generated_tokens_per_s"] = round(tokens / seconds, 1)
        for split in splits:
            sources, refs = split_pairs(run_dir, split)
            start = time.perf_counter()
            hyps = translator.translate(sources)
            seconds = time.perf_counter() - start
            scores = score(hyps, refs)
            figures[f"{split}_bleu"] = round(scores["bleu"], 2)
            figures[f"{split}_chrf"] = round(scores["chrf"], 2)
            figures[f"{split}_beam5_sentences_per_s"] = round(len(sources) / seconds, 1)
            result["bleu_signature"] = scores["bleu_signature"]
        result["variants"][name] = figures
        for key, value in figures.items():
            print(f"backends.{name}.{key}: {value}", flush=True)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile_body(limits: dict, line: str) -> dict:
    """The costliest request the service takes (its GET /model limits): max_lines lines of
    max_chars characters, the widest beam, outputs as long as allowed and no end before."""
    long = ((line + " ") * (limits["max_chars"] // (len(line) + 1) + 1))[: limits["max_chars"]]
    return {
        "text": [long] * limits["max_lines"],
        "search": {
            "beam_size": limits["max_beam"],
            "max_len_a": limits["max_output_ratio"],
            "max_len_b": limits["max_output_len"],
            "min_len": limits["max_output_len"],
        },
    }


async def _load(
    url: str,
    lines: list[str],
    clients: int,
    seconds: float,
    per_request: int,
    hostile: dict | None = None,
):
    """``clients`` clients sending ``per_request`` lines each, one request after another, for
    ``seconds``; with ``hostile``, one more client sending that body over and over beside them,
    halving its lines while the service refuses it as too costly (413: max_work), so that it
    sends the costliest request the service takes (its last one is waited for, so the next
    phase starts on an idle server)."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    hostile_seen: list[tuple[int, float]] = []
    hostile_lines: list[int] = []
    sentences = 0
    stop = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal sentences
        k = i * per_request
        while time.perf_counter() < stop:
            text = [lines[(k + j) % len(lines)] for j in range(per_request)]
            k += per_request * clients
            start = time.perf_counter()
            response = await http.post(url, json={"text": text})
            latencies.append(time.perf_counter() - start)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                sentences += len(response.json()["translations"])

    async def attacker(http: httpx.AsyncClient) -> None:
        body = dict(hostile)
        while time.perf_counter() < stop:
            start = time.perf_counter()
            response = await http.post(url, json=body)
            if response.status_code == 413 and len(body["text"]) > 1:  # past max_work: fewer
                body["text"] = body["text"][: len(body["text"]) // 2]
                continue
            hostile_seen.append((response.status_code, time.perf_counter() - start))
        hostile_lines.append(len(body["text"]))

    async with httpx.AsyncClient(timeout=600) as http:
        began = time.perf_counter()
        tasks = [client(i, http) for i in range(clients)]
        await asyncio.gather(*tasks, *([attacker(http)] if hostile else []))
        elapsed = time.perf_counter() - began
    latencies.sort()
    result = {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "sentences_per_s": round(sentences / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }
    if hostile:
        result["hostile_lines"] = hostile_lines[0]  # the most the service's max_work took
        result["hostile_requests"] = len(hostile_seen)
        result["hostile_statuses"] = sorted({str(code) for code, _ in hostile_seen})
        result["hostile_max_s"] = round(max(t for _, t in hostile_seen), 1)
    return result


def bench_serve(
    run_dir: Path,
    split: str,
    clients: int,
    seconds: float,
    per_request: int,
    extra: list[str],
    hostile: bool = False,
) -> dict:
    """Start nmt-serve on the run, drive it with ``clients`` concurrent clients, stop it. With
    ``hostile``: then the same clients beside one sending the costliest request the service
    allows, then the same clients alone again; the normal clients' latency in each phase."""
    import httpx

    from nmt.scoring.evaluate import split_pairs

    lines = split_pairs(run_dir, split)[0]
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "nmt-serve"),
        f"run_dir={quoted(str(run_dir))}",
        f"port={port}",
    ]
    # The server's log goes to a file: a pipe nobody reads fills up (64 KiB: a line per request)
    # and then blocks the server mid-request.
    log_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed with the server, below
    server = subprocess.Popen([*command, *extra], stdout=log_file, stderr=log_file, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.time() > deadline:
                log_file.seek(0)
                raise SystemExit(f"bench: nmt-serve did not start:\n{log_file.read()[-2000:]}")
            time.sleep(0.2)
        url = f"{base}/translate"
        result = asyncio.run(_load(url, lines, clients, seconds, per_request))
        if hostile:
            limits = httpx.get(f"{base}/model", timeout=10).json()["limits"]
            body = hostile_body(limits, max(lines, key=len))
            result["with_hostile"] = asyncio.run(
                _load(url, lines, clients, seconds, per_request, body)
            )
            result["after_hostile"] = asyncio.run(_load(url, lines, clients, seconds, per_request))
            result["limits"] = limits
        result.update(
            clients=clients,
            seconds=seconds,
            sentences_per_request=per_request,
            settings=" ".join(extra) or "defaults",
            server_peak_rss_mib=round(_peak_rss_mib(server.pid), 1),
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()
    for key, value in result.items():
        print(f"serve.{key}: {value}", flush=True)
    return result


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    for flag in ("amx_bf16", "avx512_bf16", "avx2"):
        if f" {flag}" in flags:
            return flag
    return "other"


if __name__ == "__main__":  # a quick look: python scripts/bench_backends.py RUN_DIR
    print(json.dumps(bench_backends(Path(sys.argv[1]), ["test_2016_flickr"], 1, 200), indent=2))
