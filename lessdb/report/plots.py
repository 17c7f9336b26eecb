"""The audit pictures as matplotlib figures (each function returns a Figure; nothing is shown or saved here).

No pyplot and no GUI backend: figures are plain `matplotlib.figure.Figure` objects, which render on a headless
machine (`fig.savefig`) and display inline in Jupyter.
"""
from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .data import SelectionData, checkpoint_contributions, source_mix

SELECTED = "#d62728"
POOL = "#7f7f7f"
PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
# One colour per method in every comparison plot (LESS in the "selected" red of the single-selection plots).
METHOD_COLORS = {"less": SELECTED, "random": "#1f77b4", "bm25": "#2ca02c", "rds": "#9467bd", "unnormalized": "#ff7f0e",
                 "sgd": "#8c564b", "sign": "#e377c2", "dsir": "#17becf", "rds+": "#bcbd22"}


def method_color(method: str | None, i: int = 0) -> str:
    return METHOD_COLORS.get(method or "", PALETTE[i % len(PALETTE)])


def _figure(width: float = 8.0, height: float = 4.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def score_distribution(data: SelectionData, bins: int = 30) -> Figure:
    """Histogram of the scores of every scored pool candidate, selected ones stacked in colour, and the
    cut-off (the k-th score) as a dashed line: the paper's Figure 9 shape."""
    sel = data.selection
    fig, ax = _figure()
    if data.pool_scores is not None:
        ps = data.pool_scores
        scores = ps.score[ps.valid]
        members = {r["candidate_id"] for r in data.members}
        chosen = np.array([c in members for c, ok in zip(ps.ids, ps.valid) if ok])
        edges = np.histogram_bin_edges(scores, bins=bins)
        ax.hist([scores[~chosen], scores[chosen]], bins=edges, stacked=True, color=[POOL, SELECTED],
                label=[f"not selected ({int((~chosen).sum()):,})", f"selected ({int(chosen.sum()):,})"])
    elif data.histogram:
        h = data.histogram
        edges = np.asarray(h["edges"])
        counts = np.asarray(h["counts"])
        above = edges[:-1] >= h["threshold"]
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=np.where(above, SELECTED, POOL),
               edgecolor="white", linewidth=0.5)
        ax.bar([], [], color=POOL, label="bins below the cut-off")
        ax.bar([], [], color=SELECTED, label="bins at or above the cut-off")
    ax.axvline(data.threshold, color="black", linestyle="--", linewidth=1.2,
               label=f"cut-off: k = {sel['k']:,} of {sel['n_scored']:,}, score ≥ {data.threshold:.4g}")
    ax.set_xlabel(f"{sel['method']} score (max over subtasks)")
    ax.set_ylabel("candidates")
    ax.set_title(f"Scores of the {sel['n_scored']:,} scored candidates — {data.label} (task {sel['task']})")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return fig


def source_mix_plot(data: SelectionData) -> Figure:
    """Share of each source dataset in the pool and in the selection (the paper's Figure 10)."""
    rows = source_mix(data)
    fig, ax = _figure(8.0, max(2.6, 0.55 * len(rows) + 1.4))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [100 * r["share_pool"] for r in rows], height=0.4, color=POOL, label="filtered pool")
    ax.barh(y + 0.2, [100 * r["share_selected"] for r in rows], height=0.4, color=SELECTED, label="selection")
    for yi, r in zip(y, rows):
        ax.text(100 * r["share_selected"] + 0.5, yi + 0.2, f"{r['n_selected']:,}", va="center", fontsize=8)
        ax.text(100 * r["share_pool"] + 0.5, yi - 0.2, f"{r['n_pool']:,}", va="center", fontsize=8, color="#444")
    ax.set_yticks(y, [r["source_dataset"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("share of examples (%)")
    ax.set_ylabel("source dataset")
    ax.set_xlim(0, max([100 * max(r["share_pool"], r["share_selected"]) for r in rows] + [1]) * 1.15)
    ax.set_title(f"Source-dataset mix: selection vs pool — {data.label}")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def completion_lengths_plot(lengths: dict[str, list[int]], title: str | None = None,
                            methods: dict[str, str] | None = None) -> Figure:
    """Box plots of completion length (characters of assistant text) per selection, with the mean marked
    (the paper's Table 12 effect: unnormalized gradients favour short completions). `methods` maps a label to
    its method, for the colours; labels starting with "pool" are drawn grey."""
    labels = list(lengths)
    fig, ax = _figure(8.0, max(2.6, 0.6 * len(labels) + 1.4))
    data = [np.asarray(lengths[k], dtype=float) if lengths[k] else np.array([np.nan]) for k in labels]
    bp = ax.boxplot(data, orientation="horizontal", showmeans=True, widths=0.55, patch_artist=True,
                    meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"})
    for i, box in enumerate(bp["boxes"]):
        box.set_facecolor(POOL if labels[i].startswith("pool") else method_color((methods or {}).get(labels[i]), i))
        box.set_alpha(0.75)
    ax.set_yticks(np.arange(1, len(labels) + 1),
                  [f"{k}\n(n={len(lengths[k]):,}, mean {np.mean(lengths[k]) if lengths[k] else 0:,.0f})"
                   for k in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("completion length (characters of assistant text)")
    ax.set_title(title or "Completion length of the selected examples")
    return fig


def jaccard_plot(labels: list[str], matrix: np.ndarray, title: str | None = None) -> Figure:
    """Heatmap of pairwise Jaccard overlap of the selections' member sets."""
    n = len(labels)
    fig, ax = _figure(1.1 * n + 3.4, 0.8 * n + 1.9)
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if matrix[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    fig.colorbar(im, ax=ax, label="Jaccard |A∩B| / |A∪B|", shrink=0.8)
    ax.set_title(title or "Overlap of selected examples (Jaccard)")
    return fig


def subtask_counts_plot(labels: list[str], subtasks: list[str], counts: np.ndarray, title: str | None = None,
                        methods: list[str] | None = None) -> Figure:
    """Grouped bars: how many members each selection has per best subtask (`methods`: for the colours)."""
    fig, ax = _figure(max(6.0, 1.1 * len(subtasks) * max(1, len(labels)) / 2 + 3), 4.2)
    x = np.arange(len(subtasks))
    w = 0.8 / max(1, len(labels))
    for i, lab in enumerate(labels):
        ax.bar(x + (i - (len(labels) - 1) / 2) * w, counts[i], width=w, label=lab,
               color=method_color(methods[i] if methods else None, i))
    ax.set_xticks(x, subtasks, rotation=30 if len(subtasks) > 4 else 0, ha="right" if len(subtasks) > 4 else "center")
    ax.set_xlabel("best-matching subtask of the selected example (random has none)")
    ax.set_ylabel("selected examples")
    ax.set_title(title or "Selected examples per subtask")
    ax.legend(fontsize=8, frameon=False)
    return fig


def checkpoint_plot(data: SelectionData) -> Figure | None:
    """Per checkpoint: the mean term η̄ᵢ·cos for selected members vs the scored pool (bars), with each
    checkpoint's share of the members' total score and its η̄ in the tick labels."""
    rows = checkpoint_contributions(data)
    if not rows:
        return None
    fig, ax = _figure(8.0, 4.0)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["mean_term_pool"] for r in rows], width=0.4, color=POOL, label="scored pool (mean)")
    ax.bar(x + 0.2, [r["mean_term_selected"] for r in rows], width=0.4, color=SELECTED, label="selected (mean)")
    ax.set_xticks(x, [f"epoch {r['checkpoint']}\n$\\bar{{\\eta}}$ = {r['eta_bar']:.2e}\n{100 * (r['share_of_selected_score'] or 0):.0f}% "
                      f"of score, top-k alone: {r['top_k_overlap']}/{data.selection['k']}" for r in rows], fontsize=8)
    ax.set_ylabel(r"checkpoint term  $\bar{\eta}_i \cdot \cos$(candidate, subtask)")
    ax.set_xlabel("warmup checkpoint")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_title(f"Which checkpoints drive the scores — {data.label}")
    ax.legend(fontsize=8, frameon=False)
    return fig


def validation_plot(results: list[dict], title: str | None = None) -> Figure:
    """`lessdb validate`'s verdicts as intervals: per comparison and metric, the selection's improvement over it
    (positive = the selection is better; loss in nats, accuracy as a fraction) with its 95% interval."""
    metrics = sorted({r["metric"] for r in results})
    fig = Figure(figsize=(8.0, 1.2 + 0.45 * max(len(results), 1)), layout="constrained")
    for j, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        rows = [r for r in results if r["metric"] == metric]
        ys = np.arange(len(rows))[::-1]
        for y, r in zip(ys, rows):
            color = SELECTED if r["verdict"] == "better" else POOL if r["verdict"] == "indistinguishable" else \
                "#1f77b4"
            ax.plot([r["low"], r["high"]], [y, y], color=color, linewidth=2)
            ax.plot([r["improvement"]], [y], "o", color=color)
        ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks(ys, [r["comparison"] for r in rows])
        ax.set_title(metric.replace("_", " ") + (" (nats)" if metric == "answer_loss" else ""), fontsize=10)
        ax.set_xlabel("selection better →")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
