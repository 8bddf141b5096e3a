"""Attention heatmaps: source pieces on the x axis, target pieces on the y axis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_attention(weights: Tensor, src_pieces: list[str], tgt_pieces: list[str],
                   path: str | Path, title: str = "") -> Path:  # fmt: skip
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
