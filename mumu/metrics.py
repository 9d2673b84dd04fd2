"""Classification metrics, computed once over a whole evaluation set (all DDP ranks together).

F1 is always **macro-F1**: the unweighted mean of the per-class F1 scores over the whole set, never
an average of per-batch scores (see ../shared/docs/reference-code.md §5). Accuracy is top-1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class ActivityMetrics(nn.Module):
    """Accumulates activity and group predictions; `compute()` syncs across processes."""

    def __init__(self, num_classes: int, num_groups: int, with_groups: bool = True):
        super().__init__()
        self.with_groups = with_groups  # baselines have no auxiliary group head
        self.macro_f1 = MulticlassF1Score(num_classes, average="macro")
        self.per_class_f1 = MulticlassF1Score(num_classes, average="none")
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")  # top-1
        self.group_accuracy = MulticlassAccuracy(num_groups, average="micro")
        self.count = SumMetric()
        self.loss = MeanMetric()
        self.nll = MeanMetric()  # activity cross-entropy without label smoothing: a smooth selection score

    def update(self, logits: torch.Tensor, label: torch.Tensor, group_logits: torch.Tensor | None,
               group: torch.Tensor, loss: torch.Tensor) -> None:
        pred = logits.argmax(-1)  # (B,)
        self.macro_f1.update(pred, label)
        self.per_class_f1.update(pred, label)
        self.accuracy.update(pred, label)
        if self.with_groups:
            self.group_accuracy.update(group_logits.argmax(-1), group)
        self.count.update(torch.tensor(float(label.numel()), device=label.device))
        self.loss.update(loss.detach(), weight=label.numel())
        self.nll.update(F.cross_entropy(logits.detach().float(), label, reduction="none"))

    def compute(self) -> dict[str, float | list[float] | int | None]:
        """Synced over all ranks (every rank must call it)."""
        return {
            "macro_f1": float(self.macro_f1.compute()),
            "accuracy": float(self.accuracy.compute()),
            "group_accuracy": float(self.group_accuracy.compute()) if self.with_groups else None,
            "per_class_f1": [float(v) for v in self.per_class_f1.compute()],
            "loss": float(self.loss.compute()),
            "nll": float(self.nll.compute()),
            "n_samples": int(self.count.compute()),
        }

    def reset(self) -> None:
        for metric in self.children():
            metric.reset()


def summarize_folds(fold_metrics: dict[str, dict]) -> dict:
    """Mean and (population) std over folds of every scalar metric, plus the per-fold values."""
    counts = ("n_samples", "world_size")
    names = [n for n, v in next(iter(fold_metrics.values())).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and n not in counts]
    summary: dict = {"folds": fold_metrics}
    for name in names:
        values = [m[name] for m in fold_metrics.values() if m.get(name) is not None]
        if not values:
            continue
        mean = sum(values) / len(values)
        summary[name] = mean
        summary[f"{name}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    summary["n_samples"] = sum(m["n_samples"] for m in fold_metrics.values())
    return summary


def headline(metrics: dict) -> str:
    """One line with the numbers people compare: macro-F1 and top-1 accuracy (± std over folds)."""
    def fmt(name: str) -> str:
        value = f"{100 * metrics[name]:.2f}"
        if f"{name}_std" in metrics:
            value += f" ± {100 * metrics[f'{name}_std']:.2f}"
        return value
    line = f"macro-F1 {fmt('macro_f1')} %, accuracy {fmt('accuracy')} %"
    if metrics.get("group_accuracy") is not None:
        line += f", group accuracy {fmt('group_accuracy')} %"
    return line + f" (n={metrics['n_samples']} test samples)"
