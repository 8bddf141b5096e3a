"""The decoding-backend and load figures of docs/serving.md, from ``make bench`` artifacts only.

    python scripts/serving_figures.py runs/bench/backends.json   # take its backends/serve sections
    python scripts/serving_figures.py                            # rewrite the page from the JSON

The sections (``--what backends`` and ``--what serve`` of scripts/bench.py) are kept in
docs/serving.json with the command, commit, machine and date of the sitting they came from; the
block between the markers of docs/serving.md is written from that file alone.
tests/test_serving_figures.py fails when the block is not what this script writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "serving.json"
PAGE = ROOT / "docs" / "serving.md"
BEGIN = "<!-- figures: begin (written by scripts/serving_figures.py from docs/serving.json) -->"
END = "<!-- figures: end -->"
NAMES = {
    "torch_fp32": "PyTorch fp32",
    "torch_bf16": "PyTorch bf16",
    "onnxruntime_fp32": "onnxruntime fp32",
    "onnxruntime_int8": "onnxruntime int8",
}


def _sitting(report: dict) -> str:
    p = report["provenance"]
    return (
        f"`{p['command']}` at commit `{p['commit']}`, {p['date'][:10]}, on {report['cpu']} "
        f"({report['cpu_kind']}, {report['cpu_threads']} thread{'s' if report['cpu_threads'] != 1 else ''}, torch {report['torch']})"
    )


def backends_block(report: dict) -> list[str]:
    b = report["backends"]
    lines = [
        f"Measured in one sitting: {_sitting(report)}, on `{Path(b['run_dir']).name}`. Speed at",
        "equal work: every output forced to 20 steps (`min_len` 19, `max_len_a` 0, `max_len_b`",
        "20), batches of 64 sentences, the median of the repeats; BLEU and chrF: beam 5 on the",
        f"whole test splits, `{b['bleu_signature']}`.",
        "",
        "| backend | greedy sent/s | greedy tok/s | beam 5 sent/s | beam 5 tok/s "
        "| test 2016 BLEU / chrF | test 2017 BLEU / chrF |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in b["variants"].items():
        if "skipped" in f:
            lines.append(f"| {NAMES[name]} | {f['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {NAMES[name]} | {f['forced20_greedy_sentences_per_s']:.1f} "
            f"| {f['forced20_greedy_generated_tokens_per_s']:,.0f} "
            f"| {f['forced20_beam5_sentences_per_s']:.1f} "
            f"| {f['forced20_beam5_generated_tokens_per_s']:,.0f} "
            f"| {f['test_2016_flickr_bleu']:.2f} / {f['test_2016_flickr_chrf']:.2f} "
            f"| {f['test_2017_flickr_bleu']:.2f} / {f['test_2017_flickr_chrf']:.2f} |"
        )
    return lines


def _answers(load: dict) -> str:
    """The normal clients' answers by status (an older sitting recorded none: all 200)."""
    statuses = load.get("statuses", {"200": load["requests"]})
    return ", ".join(f"{n:,} × {code}" for code, n in statuses.items())


def serve_block(report: dict) -> list[str]:
    s = report["serve"]
    lines = [
        f"Load: {_sitting(report)}. {s['clients']} clients for {s['seconds']:.0f} s, "
        f"{s['sentences_per_request']} sentences per request, server settings: {s['settings']}.",
        "",
    ]
    if "with_hostile" not in s:
        return [
            *lines,
            "| requests | requests/s | sentences/s | p50 ms | p99 ms | server peak RSS MiB |",
            "|---|---|---|---|---|---|",
            f"| {s['requests']} | {s['requests_per_s']:.2f} | {s['sentences_per_s']:.1f} "
            f"| {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['server_peak_rss_mib']:.0f} |",
        ]
    h, limits = s["with_hostile"], s["limits"]
    lines += [
        f"Three phases on one server, one after another: the clients alone; the same clients "
        f"beside one hostile client sending, over and over, the costliest request the limits "
        f"allow ({h['hostile_lines']} lines of {limits['max_chars']} characters, the most "
        f"`max_work` {limits.get('max_work', 'none')} takes, beam {limits['max_beam']}, "
        f"`max_len_a` {limits['max_output_ratio']}, `max_len_b` and `min_len` "
        f"{limits['max_output_len']}; `timeout_s` {limits['timeout_s']}, `max_decode_s` "
        f"{limits.get('max_decode_s', 'none')}): "
        f"{h['hostile_requests']} such requests, answered {', '.join(h['hostile_statuses'])}, "
        f"the longest after {h['hostile_max_s']} s; then the clients alone again. "
        f"Server peak RSS {s['server_peak_rss_mib']:.0f} MiB.",
        "",
        "| phase | requests | answers | sentences/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, load in (
        ("alone", s),
        ("beside the hostile client", h),
        ("alone again", s["after_hostile"]),
    ):
        lines.append(
            f"| {name} | {load['requests']:,} | {_answers(load)} | {load['sentences_per_s']:.1f} "
            f"| {load['p50_ms']:.0f} | {load['p99_ms']:.0f} |"
        )
    return lines


def block(figures: dict) -> str:
    lines = [BEGIN]
    for key, write in (("backends", backends_block), ("serve", serve_block)):
        if key in figures:
            lines += ["", *write(figures[key]), ""]
    return "\n".join([*lines, END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", nargs="*", type=Path, help="bench.json files to take sections of")
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--page", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    figures = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for path in args.bench:
        report = json.loads(path.read_text())
        common = {k: report[k] for k in ("provenance", "cpu", "cpu_threads", "torch")}
        common["cpu_kind"] = report.get("cpu_kind", "unknown")
        for key in ("backends", "serve"):
            if key in report:
                figures[key] = {**common, key: report[key]}
    if not figures:
        print(f"no figures: give a bench.json, or keep {args.json}", file=sys.stderr)
        return 1
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    page = args.page.read_text()
    if BEGIN not in page or END not in page:
        print(f"{args.page}: no figures block ({BEGIN} ... {END})", file=sys.stderr)
        return 1
    before, rest = page.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    args.page.write_text(before + block(figures) + after)
    print(f"wrote {args.json} and the figures of {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
