"""Every figure nmt draws: attention heatmaps, and the ablation report's validation curves, BLEU
by source length and gate activations. Files only (the Agg backend, set once here). Runs are
drawn in the order they are given (the report sorts them)."""

from __future__ import annotations

import math
import os
import statistics
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
from typing import TYPE_CHECKING  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from nmt.model.attention import ATTENTIONS  # noqa: E402
from nmt.model.cells import CELLS, gate_names  # noqa: E402
from nmt.scoring.stats import summarize  # noqa: E402
from nmt.scoring.tuning import bracket  # noqa: E402

if TYPE_CHECKING:
    from nmt.report.runs import Run

PLOTS = ("curves_updates.png", "curves_seconds.png", "bleu_by_length.png", "gates.png")
TUNING_PLOT = "lr_search.png"  # drawn when the sweep tuned its learning rates
# A colour per cell of the cell table, in its order (a cell added to it gets the next one).
PALETTE = (
    "tab:red", "tab:blue", "tab:cyan", "tab:olive", "tab:green", "tab:purple", "tab:brown",
    "tab:pink", "tab:orange", "tab:gray", "black", "gold",
)  # fmt: skip
COLORS = dict(zip(CELLS, PALETTE, strict=False))
STYLES = {row.name: row.style for row in ATTENTIONS}  # the attention table's line styles
GATE_ORDER = gate_names()  # every gate the cell table names


def gates_by_layer(gates: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"<layer>.<gate>": mean} as {layer: {gate: mean}}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in gates.items():
        layer, gate = key.rsplit(".", 1)
        out.setdefault(layer, {})[gate] = value
    return out


def attention_heatmaps(translations: list, target_pieces, out_dir: Path) -> list[Path]:
    """A heatmap per translation (``nmt.decoding.translator.Translation``, its best hypothesis) that has
    attention: ``out_dir/0000.png``, ... ``target_pieces(hyp)``: the pieces of its rows."""
    drawn = []
    for i, result in enumerate(translations):
        hyp = result.hyps[0]
        if hyp.attn is not None:
            drawn.append(
                plot_attention(
                    hyp.attn,
                    result.src_pieces,
                    target_pieces(hyp),
                    out_dir / f"{i:04d}.png",
                    title=result.texts[0][:80],
                )
            )
    return drawn


def plot_attention(
    weights: Tensor, src_pieces: list[str], tgt_pieces: list[str], path: str | Path, title: str = ""
) -> Path:
    """Save weights [T, S] (rows: target pieces, columns: source pieces + </s>) as a PNG."""
    weights = weights.detach().float().cpu().numpy()
    rows, cols = weights.shape
    src = (src_pieces + ["</s>"])[:cols]
    tgt = tgt_pieces[:rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * cols + 2), max(3, 0.35 * rows + 1.5)))
    ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src)), labels=src, rotation=75, fontsize=8)
    ax.set_yticks(range(len(tgt)), labels=tgt, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def piece_labels(pieces: list[str]) -> tuple[list[str], list[int]]:
    """SentencePiece pieces as text: the "▁" that starts a word dropped, and the positions where
    a word starts after the first (where a figure draws a boundary)."""
    labels = [p[1:] or "␣" if p.startswith("▁") else p for p in pieces]
    starts = [i for i, p in enumerate(pieces) if i > 0 and p.startswith("▁")]
    return labels, starts


def plot_token_gates(trace: dict, path: str | Path, title: str = "") -> Path:
    """A translation's gates (``GateTrace.as_dict()``) as a PNG: a panel per recurrent layer, a
    row per token (source pieces for the encoder's, output pieces for the decoder's), a column per
    gate, each cell the gate's mean over units; white lines where words start; one colour scale
    for every panel, from the smallest value drawn to the largest."""
    layers = trace["layers"]
    values = [g["mean"] for layer in layers for g in layer["gates"].values()]
    low, high = min(map(min, values)), max(map(max, values))
    rows = max(len(trace["source"]), len(trace["target"]))
    fig, axes = plt.subplots(
        1,
        len(layers),
        figsize=(1.5 + 2.6 * len(layers), max(3.0, 0.3 * rows + 1.6)),
        squeeze=False,
        layout="constrained",  # room for each panel's token labels
    )
    image = None
    for ax, layer in zip(axes[0], layers, strict=True):
        pieces = trace["source"] if layer["side"] == "encoder" else trace["target"]
        names = list(layer["gates"])
        grid = [[layer["gates"][n]["mean"][i] for n in names] for i in range(len(pieces))]
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        labels, starts = piece_labels(pieces)
        ax.set_yticks(range(len(labels)), labels=labels, fontsize=8)
        for start in starts:
            ax.axhline(start - 0.5, color="white", linewidth=1.2)
        ax.set_xticks(range(len(names)), labels=names, fontsize=8)
        ax.set_title(layer["name"], fontsize=8)
        ax.set_xlabel("gate (mean over units)", fontsize=8)
    axes[0][0].set_ylabel("token", fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), label=f"{trace['cell']} gate activation")
    if title:
        width = 30 + 25 * len(layers)
        fig.suptitle("\n".join(textwrap.fill(t, width) for t in title.split("\n")), fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    try:
        fig.savefig(part, dpi=110, bbox_inches="tight", format="png")
        os.replace(part, path)  # a figure appears whole or not at all
    finally:
        plt.close(fig)
        part.unlink(missing_ok=True)
    return path


Group = tuple[str, list["Run"]]  # a label and the runs (seeds) of one row of the report


def _style(run: Run) -> dict:
    return {"color": COLORS.get(run.cell, "black"), "linestyle": STYLES.get(run.attention, "-")}


def _over_seeds(runs: list[Run], metric: str, x_key: str) -> tuple[list, list, list]:
    """Per validation step present in any run: x (the seeds' mean of x_key), the mean of metric
    over the seeds that reached that step, and its standard deviation (0 for one seed)."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for run in runs:
        for m in run.metrics:
            value = m.get(metric, math.nan)
            if not math.isnan(value):
                by_step.setdefault(int(m["step"]), []).append((m[x_key], value))
    xs, means, stds = [], [], []
    for step in sorted(by_step):
        pairs = by_step[step]
        xs.append(statistics.fmean(x for x, _ in pairs) / (60 if x_key == "seconds" else 1))
        values = [v for _, v in pairs]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return xs, means, stds


def plot_curves(groups: list[Group], x_key: str, path: Path) -> None:
    """Validation BLEU and loss against updates (x_key=step) or wall-clock minutes (seconds):
    the mean over each row's seeds, with a band of ± one standard deviation where it has several."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, runs in groups:
        runs = [r for r in runs if r.metrics]
        if not runs:
            continue
        name = label if len(runs) == 1 else f"{label} ({len(runs)} seeds)"
        for ax, metric in zip(axes, ("bleu", "loss"), strict=True):
            xs, mean, std = _over_seeds(runs, metric, x_key)
            ax.plot(xs, mean, label=name, **_style(runs[0]))
            if len(runs) > 1:
                low = [m - s for m, s in zip(mean, std, strict=True)]
                high = [m + s for m, s in zip(mean, std, strict=True)]
                ax.fill_between(xs, low, high, alpha=0.15, color=_style(runs[0])["color"])
    xlabel = "updates" if x_key == "step" else "wall-clock minutes (validation included)"
    for ax, title in zip(
        axes, ("validation BLEU (greedy)", "validation loss (nats/token)"), strict=True
    ):
        ax.set_xlabel(xlabel)
        ax.set_title(title + " — mean ± sd over seeds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bleu_by_length_rows(groups: list[Group]) -> list[dict]:
    """Per row and source-length bucket: test BLEU over the seeds (mean, sd, 95 % t-interval)."""
    rows = []
    for label, runs in groups:
        analysed = [r for r in runs if r.analysis]
        if not analysed:
            continue
        buckets = analysed[0].analysis["bleu_by_length"]
        cells = []
        for i, bucket in enumerate(buckets):
            values = [r.analysis["bleu_by_length"][i].get("bleu", math.nan) for r in analysed]
            values = [v for v in values if not math.isnan(v)]
            summary = summarize(values).as_dict() if values else None
            cells.append(
                {"bucket": bucket["bucket"], "sentences": bucket["sentences"], "bleu": summary}
            )
        rows.append({"label": label, "run": analysed[0], "buckets": cells})
    return rows


def plot_bleu_by_length(groups: list[Group], path: Path) -> None:
    """Test BLEU per source-length bucket, one panel per attention type, a line per row: the mean
    over seeds, with its 95 % t-interval as error bars where a row has several seeds."""
    rows = bleu_by_length_rows(groups)
    kinds = list(dict.fromkeys(r["run"].attention for r in rows))
    fig, axes = plt.subplots(
        1, max(len(kinds), 1), figsize=(5.5 * max(len(kinds), 1), 4.2), squeeze=False, sharey=True
    )
    for ax, kind in zip(axes[0], kinds, strict=False):
        for row in (r for r in rows if r["run"].attention == kind):
            names = [f"{b['bucket']}\n({b['sentences']})" for b in row["buckets"]]
            summaries = [b["bleu"] for b in row["buckets"]]
            mean = [s["mean"] if s else math.nan for s in summaries]
            errors = [
                [s["mean"] - s["ci"][0] if s and s["ci"][0] is not None else 0 for s in summaries],
                [s["ci"][1] - s["mean"] if s and s["ci"][1] is not None else 0 for s in summaries],
            ]
            n = max((s["n"] for s in summaries if s), default=1)
            ax.errorbar(
                names,
                mean,
                yerr=errors if n > 1 else None,
                marker="o",
                capsize=3,
                label=row["label"] if n == 1 else f"{row['label']} ({n} seeds)",
                **_style(row["run"]),
            )
        ax.set_title(f"attention: {kind}")
        ax.set_xlabel("source length in words (sentences)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test BLEU (mean, 95 % interval over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gates(groups: list[Group], path: Path) -> None:
    """Mean gate activations on the validation set: a panel per layer, bars per gate and row
    (its first seed)."""
    chosen = [
        runs[0] for _, runs in groups if runs and runs[0].analysis and runs[0].analysis["gates"]
    ]
    labels = [
        label for label, runs in groups if runs and runs[0].analysis and runs[0].analysis["gates"]
    ]
    layers = sorted(
        {layer for r in chosen for layer in gates_by_layer(r.analysis["gates"])},
        key=lambda name: (name.startswith("decoder"), name.replace("fwd", "0").replace("bwd", "1")),
    )  # encoder layers first, forward before backward
    fig, axes = plt.subplots(
        1, max(len(layers), 1), figsize=(4.8 * max(len(layers), 1), 4.5), squeeze=False, sharey=True
    )
    width = 0.8 / len(GATE_ORDER)
    gate_colors = dict(
        zip(
            GATE_ORDER,
            ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:gray", "tab:olive") * 2,
            strict=False,
        )
    )
    for ax, layer in zip(axes[0], layers, strict=False):
        for j, gate in enumerate(GATE_ORDER):
            values = [
                gates_by_layer(r.analysis["gates"]).get(layer, {}).get(gate, math.nan)
                for r in chosen
            ]
            if all(math.isnan(v) for v in values):
                continue
            xs = [i + (j - len(GATE_ORDER) / 2 + 0.5) * width for i in range(len(chosen))]
            ax.bar(xs, values, width=width, label=gate, color=gate_colors[gate])
        ax.set_xticks(range(len(chosen)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(layer)
        ax.grid(alpha=0.3, axis="y")
    if not layers:
        axes[0][0].text(0.5, 0.5, "no gated cells", ha="center", va="center")
    axes[0][0].set_ylabel("mean activation (validation tokens)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("update (GRU z) and forget (LSTM f): share of the previous state kept")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_report(groups: list[Group], out: Path) -> None:
    """The report's four figures (PLOTS) into out, a line (or bars) per row of the report."""
    plot_curves(groups, "step", out / PLOTS[0])
    plot_curves(groups, "seconds", out / PLOTS[1])
    plot_bleu_by_length(groups, out / PLOTS[2])
    plot_gates(groups, out / PLOTS[3])


def plot_tuning(tuning: dict, path: Path) -> None:
    """The learning-rate search: validation BLEU against the rate (log axis), a line per cell and
    tuned attention; the chosen rate filled, an optimum still at an edge of the rates tried
    drawn as a cross and named in the legend. A failed run is left out of its line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    scores: dict[tuple[str, str], dict[float, float | None]] = {}
    for run in tuning["runs"]:
        scores.setdefault((run["cell"], run["attention"]), {})[run["lr"]] = run["valid_bleu"]
    for (cell, attention), by_rate in scores.items():
        chosen, beyond = bracket(by_rate, tuning.get("factor", 2.0))
        rates = sorted(r for r, v in by_rate.items() if v is not None)
        style = {"color": COLORS.get(cell, "black"), "linestyle": STYLES.get(attention, "-")}
        label = cell if len(scores) == len({c for c, _ in scores}) else f"{cell}+{attention}"
        if beyond is not None:
            label += " (at an edge: not tuned)"
        ax.plot(
            rates, [by_rate[r] for r in rates], marker="o", fillstyle="none", label=label, **style
        )
        ax.plot(
            [chosen],
            [by_rate[chosen]],
            marker="X" if beyond is not None else "o",
            markersize=9,
            color=style["color"],
            linestyle="none",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("best validation BLEU (greedy)")
    ax.set_title(
        f"Learning-rate search: {tuning['max_steps']} updates a rate, seed {tuning['seed']}"
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
