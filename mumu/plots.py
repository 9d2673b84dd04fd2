"""The evaluation figures, drawn from plain arrays so they can be tested without a model.

Every plotting function writes one PNG and returns its path (`tsne_2d` only computes the embedding).
Figures grow with the number of classes / modalities so that labels stay readable; activity and modality
names always label the axes.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 120
FUSION_COLORS = {"SM-Fusion": "#4C72B0", "GM-Fusion": "#DD8452"}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true activity, columns: predicted), counts in cells.

    confusion: (K, K) counts.
    """
    k = len(class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    recall = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    side = max(5.0, 0.42 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8 if k > 20 else 9)
    ax.set_yticks(range(k), class_names, fontsize=8 if k > 20 else 9)
    ax.set_xlabel("predicted activity")
    ax.set_ylabel("true activity")
    ax.set_title(title)
    if k <= 40:  # counts stay legible up to about 40 classes
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if recall[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true activity")
    return _save(fig, path)


def plot_per_class_f1(
    f1: np.ndarray, class_names: list[str], class_groups: list[str], path: str | Path, title: str, macro_f1: float,
) -> Path:
    """Horizontal bars of per-class F1 (K,), coloured by activity group, `macro_f1` (metrics.json's: over the classes
    in the labels or the predictions, which the mean of all K bars is not when a class is in neither) as a dashed
    line."""
    k = len(class_names)
    groups = list(dict.fromkeys(class_groups))
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.28 * k + 1.2)))
    y = np.arange(k)
    ax.barh(y, f1, color=[colors(groups.index(g) % 10) for g in class_groups])
    for i, value in enumerate(f1):
        ax.text(value + 0.01, i, f"{value:.2f}", va="center", fontsize=8)
    ax.axvline(macro_f1, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, class_names, fontsize=8 if k > 20 else 9)
    ax.invert_yaxis()  # first class on top, as in the tables
    ax.set_xlim(0, 1.08)  # room for the value labels
    ax.set_xlabel("F1 (per class)")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % 10)) for i in range(len(groups))]
    handles.append(plt.Line2D([], [], color="black", linestyle="--"))
    ax.legend(handles, groups + [f"macro-F1 {macro_f1:.3f}"], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, title="activity group", title_fontsize=8)
    return _save(fig, path)


def plot_per_subject(subjects: list[str], accuracy: dict[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Grouped bars of each test subject's top-1 accuracy under each input condition ({condition label: (S,)},
    the first clean), the mean of the first condition's bars as a dashed line."""
    s, conditions = len(subjects), list(accuracy)
    fig, ax = plt.subplots(figsize=(max(6.0, s * (0.45 + 0.13 * len(conditions)) + 2.5), 4.2))
    x = np.arange(s)
    width = 0.8 / len(conditions)
    for c, condition in enumerate(conditions):
        bars = ax.bar(x + (c - (len(conditions) - 1) / 2) * width, accuracy[condition], width, label=condition,
                      color=f"C{c}")
        if c == 0 and s <= 12:  # the clean bars differ by a point or two: print them
            ax.bar_label(bars, [f"{100 * v:.1f}" for v in accuracy[condition]], fontsize=7, padding=2)
    overall = float(np.mean(accuracy[conditions[0]]))
    ax.axhline(overall, color="black", linestyle="--", linewidth=1, label=f"{conditions[0]}: mean over subjects "
                                                                           f"{overall:.3f}")
    ax.set_xticks(x, subjects, rotation=30 if s > 10 else 0, fontsize=8 if s > 10 else 9)
    ax.set_ylim(0, 1.06)  # room for the labels
    ax.set_xlabel("test subject")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_attention(
    activities: list[str], modality_names: list[str],
    conditions: list[tuple[str, dict[str, np.ndarray], list[str]]], path: str | Path, title: str,
) -> Path:
    """Modality weights per activity under each input condition, side by side (paper Figs. 1 and 4).

    conditions: (column title, {fusion name: (A, M) weights averaged over the test samples of each of
    the A activities}, names of the modalities corrupted in that column, shown in red).
    """
    num_acts, m = len(activities), len(modality_names)
    cols = len(conditions)
    fig, axes = plt.subplots(num_acts, cols, figsize=(max(4.0, 0.8 * m + 1.6) * cols, 2.5 * num_acts + 0.9),
                             sharey=True, squeeze=False)
    x = np.arange(m)
    # one y scale for every panel, so heights compare across activities and conditions
    top = min(1.0, max(0.3, 1.15 * max(float(np.max(w)) for _, ws, _ in conditions for w in ws.values())))
    for col, (label, weights, corrupted) in enumerate(conditions):
        fusions = list(weights)
        width = 0.8 / max(1, len(fusions))
        for row, activity in enumerate(activities):
            ax = axes[row, col]
            for f, fusion in enumerate(fusions):
                ax.bar(x + (f - (len(fusions) - 1) / 2) * width, weights[fusion][row], width,
                       color=FUSION_COLORS.get(fusion, f"C{f + 2}"), label=fusion)
            ax.set_xticks(x, modality_names, rotation=30, ha="right", fontsize=8)
            for tick, name in zip(ax.get_xticklabels(), modality_names):
                if name in corrupted:
                    tick.set_color("red")
                    tick.set_fontweight("bold")
            ax.set_ylim(0, top)
            ax.set_title(f"{activity}\n{label}", fontsize=9)
            if col == 0:
                ax.set_ylabel("modality weight")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
    fig.suptitle(f"{title}\nmodalities in red are corrupted in that column", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) t-SNE; perplexity shrinks for small N so tiny test sets still work. One thread: the
    gradient's sums (OpenMP) and the PCA start (BLAS) came out otherwise with the machine's core count, and so
    did the committed plot (a fresh `dvc repro` changed tsne.png)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(features)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            features.astype(np.float32))


def class_styles(n_classes: int) -> list[tuple[tuple, str]]:
    """A (colour, marker) per class, no two alike: tab10 / tab20's colours, then the same colours with the next
    marker once they run out (UTD-MHAD has 27 activities, MMAct 37)."""
    cmap = plt.get_cmap("tab20" if n_classes > 10 else "tab10")
    markers = "o^sDvP*X"
    return [(cmap(k % cmap.N), markers[(k // cmap.N) % len(markers)]) for k in range(n_classes)]


def plot_tsne(
    embeddings: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str], path: str | Path,
    title: str, seed: int = 0,
) -> Path:
    """t-SNE of each unimodal embedding and of the fused one (paper Fig. 3), coloured by activity.

    embeddings: {representation name: (N, D)}, e.g. one per modality plus "fused"; labels: (N,).
    All representations are embedded in one t-SNE run so the panels share one map.
    """
    names = list(embeddings)
    n = len(labels)
    points = tsne_2d(np.concatenate([embeddings[k] for k in names]), seed=seed)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 2.5, 4.0 * rows), squeeze=False)
    styles = class_styles(len(class_names))
    for i, name in enumerate(names):
        ax = axes[i // cols, i % cols]
        xy = points[i * n:(i + 1) * n]
        for k in np.unique(labels):
            color, marker = styles[int(k)]
            ax.scatter(*xy[labels == k].T, s=12, color=color, marker=marker, label=class_names[int(k)])
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(len(names), rows * cols):
        axes[j // cols, j % cols].axis("off")
    handles, labels_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="activity", markerscale=1.5)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
