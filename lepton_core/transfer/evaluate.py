"""Side-by-side evaluation on the target's test split: accuracy, macro-F1, expected calibration
error (15 bins) and the confusion matrix (torchmetrics), a markdown table and a learning-curve PNG."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lepton_core.fsutil import write_figure_png

if TYPE_CHECKING:
    import torch
    from torch import nn

CALIBRATION_BINS = 15


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    macro_f1: float
    calibration_error: float
    confusion: list[list[int]] = field(repr=False)  # rows: true class, columns: predicted
    images: int

    def record(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "calibration_error": self.calibration_error,
                "images": self.images, "confusion": self.confusion}


def predict(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities ``(N, C)`` and labels ``(N,)`` of every batch, in eval mode."""
    import torch

    model.eval().to(device)
    probs, labels = [], []
    with torch.inference_mode():
        for x, y in batches:
            probs.append(torch.softmax(model(x.to(device)).float(), dim=1).cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(probs), torch.cat(labels)


def metrics(probs: torch.Tensor, labels: torch.Tensor) -> Metrics:
    from torchmetrics.functional.classification import (multiclass_accuracy, multiclass_calibration_error,
                                                        multiclass_confusion_matrix, multiclass_f1_score)

    n = probs.shape[1]
    return Metrics(
        accuracy=float(multiclass_accuracy(probs, labels, num_classes=n, average="micro")),
        macro_f1=float(multiclass_f1_score(probs, labels, num_classes=n, average="macro")),
        calibration_error=float(multiclass_calibration_error(probs, labels, num_classes=n, n_bins=CALIBRATION_BINS, norm="l1")),
        confusion=multiclass_confusion_matrix(probs, labels, num_classes=n).tolist(),
        images=int(labels.numel()),
    )


def comparison_table(results: dict[str, Metrics]) -> str:
    """A markdown table, one row per model."""
    lines = ["| model | accuracy | macro-F1 | calibration error | test images |", "|---|---:|---:|---:|---:|"]
    for name, m in results.items():
        lines.append(f"| {name} | {m.accuracy:.1%} | {m.macro_f1:.3f} | {m.calibration_error:.3f} | {m.images:,} |")
    return "\n".join(lines)


def confusion_text(m: Metrics, classes: tuple[str, ...]) -> str:
    """The confusion matrix as aligned text (rows: true class)."""
    width = max(4, *(len(c) for c in classes), *(len(str(v)) for row in m.confusion for v in row))
    head = " " * width + " " + " ".join(c.rjust(width) for c in classes)
    rows = [c.rjust(width) + " " + " ".join(str(v).rjust(width) for v in row) for c, row in zip(classes, m.confusion, strict=True)]
    return "\n".join([head, *rows])


def learning_curve_png(histories: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Validation accuracy against fitting time, one line per model (each point an epoch)."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe in worker threads

    fig = Figure(figsize=(7, 3.6), dpi=110)
    ax = fig.add_subplot()
    for name, rows in histories.items():
        rows = [r for r in rows if "val_acc" in r]
        ax.plot([r["seconds"] for r in rows], [100 * r["val_acc"] for r in rows], marker="o", markersize=3, label=name)
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return write_figure_png(fig, path)


def time_to_reach(history: list[dict], accuracy: float) -> float | None:
    """Seconds of training until validation accuracy first reached ``accuracy`` (None if never)."""
    return next((r["seconds"] for r in history if r.get("val_acc", -1.0) >= accuracy), None)
