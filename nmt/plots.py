"""Every figure nmt draws: attention heatmaps, and the ablation report's validation curves, BLEU
by source length and gate activations. Files only (the Agg backend, set once here). Runs are
drawn in the order they are given (the report sorts them)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
from typing import TYPE_CHECKING  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

if TYPE_CHECKING:
    from nmt.runs import Run

PLOTS = ("curves_updates.png", "curves_seconds.png", "bleu_by_length.png", "gates.png")
COLORS = {"tanh": "tab:red", "gru": "tab:blue", "gru_cho": "tab:cyan", "lstm": "tab:green"}
STYLES = {"none": ":", "bahdanau": "-", "luong_dot": "--", "luong_general": "-."}
GATE_ORDER = ("update", "reset", "forget", "input", "output")


def gates_by_layer(gates: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"<layer>.<gate>": mean} as {layer: {gate: mean}}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in gates.items():
        layer, gate = key.rsplit(".", 1)
        out.setdefault(layer, {})[gate] = value
    return out


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


def _style(run: Run) -> dict:
    return {"color": COLORS.get(run.cell, "black"), "linestyle": STYLES.get(run.attention, "-")}


def plot_curves(runs: list[Run], x_key: str, path: Path) -> None:
    """Validation BLEU and loss against updates (x_key=step) or wall-clock minutes (seconds)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labelled = set()
    for run in runs:
        if not run.metrics:
            continue
        xs = [m[x_key] / (60 if x_key == "seconds" else 1) for m in run.metrics]
        label = None if run.label in labelled else run.label
        labelled.add(run.label)
        for ax, metric in zip(axes, ("bleu", "loss"), strict=True):
            ax.plot(xs, [m.get(metric, math.nan) for m in run.metrics], label=label, **_style(run))
    xlabel = "updates" if x_key == "step" else "wall-clock minutes (validation included)"
    for ax, title in zip(
        axes, ("validation BLEU (greedy)", "validation loss (nats/token)"), strict=True
    ):
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bleu_by_length(runs: list[Run], path: Path) -> None:
    """Test BLEU per source-length bucket, one panel per attention type, a line per cell."""
    analysed = [r for r in runs if r.analysis]
    kinds = list(dict.fromkeys(r.attention for r in analysed))
    fig, axes = plt.subplots(
        1, max(len(kinds), 1), figsize=(5.5 * max(len(kinds), 1), 4.2), squeeze=False, sharey=True
    )
    labelled = set()
    for ax, kind in zip(axes[0], kinds, strict=False):
        for run in (r for r in analysed if r.attention == kind):
            buckets = run.analysis["bleu_by_length"]
            names = [f"{b['bucket']}\n({b['sentences']})" for b in buckets]
            label = None if run.label in labelled else run.cell
            labelled.add(run.label)
            ax.plot(
                names,
                [b.get("bleu", math.nan) for b in buckets],
                marker="o",
                label=label,
                **_style(run),
            )
        ax.set_title(f"attention: {kind}")
        ax.set_xlabel("source length in words (sentences)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test BLEU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gates(runs: list[Run], path: Path) -> None:
    """Mean gate activations on the validation set: a panel per layer, bars per gate and run."""
    chosen, seen = [], set()
    for run in runs:
        if run.analysis and run.analysis["gates"] and run.label not in seen:
            seen.add(run.label)
            chosen.append(run)
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
            ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:gray"),
            strict=True,
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
        ax.set_xticks(
            range(len(chosen)), [r.label for r in chosen], rotation=35, ha="right", fontsize=8
        )
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


def plot_report(runs: list[Run], out: Path) -> None:
    """The report's four figures (PLOTS) into out."""
    plot_curves(runs, "step", out / PLOTS[0])
    plot_curves(runs, "seconds", out / PLOTS[1])
    plot_bleu_by_length(runs, out / PLOTS[2])
    plot_gates(runs, out / PLOTS[3])
