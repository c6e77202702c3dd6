"""lepton's checkpoint format: the weights plus what is needed to use them (architecture, classes,
input size, preprocessing), loadable with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from lepton_core.fsutil import atomic_path

FORMAT = "lepton-checkpoint/1"


@dataclass(frozen=True)
class Preprocess:
    """How images become tensors: PIL mode, then per-channel normalisation of [0, 1] values."""

    mode: str = "L"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def tensor(self, images: list) -> torch.Tensor:
        """PIL images -> a float batch ``(N, 3, H, W)``; one-channel images are repeated to three."""
        import numpy as np
        import torch

        arr = np.stack([np.asarray(img.convert(self.mode), dtype=np.float32) / 255.0 for img in images])
        x = torch.from_numpy(arr)
        x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)[:, :3]
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()


@dataclass(frozen=True)
class CheckpointMeta:
    architecture: str
    classes: tuple[str, ...]
    input_size: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    metrics: dict[str, float] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: CheckpointMeta) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint under ``path``."""
    import torch

    payload: dict[str, Any] = {
        "format": FORMAT,
        "architecture": meta.architecture,
        "classes": list(meta.classes),
        "input_size": meta.input_size,
        "preprocess": {"mode": meta.preprocess.mode, "mean": list(meta.preprocess.mean), "std": list(meta.preprocess.std)},
        "metrics": dict(meta.metrics),
        "state_dict": state_dict,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, CheckpointMeta]:
    """The state dict and metadata of a lepton checkpoint (``weights_only=True``)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a lepton checkpoint (expected format {FORMAT!r})")
    pre = payload["preprocess"]
    meta = CheckpointMeta(
        architecture=payload["architecture"],
        classes=tuple(payload["classes"]),
        input_size=int(payload["input_size"]),
        preprocess=Preprocess(mode=pre["mode"], mean=tuple(pre["mean"]), std=tuple(pre["std"])),
        metrics=dict(payload.get("metrics", {})),
    )
    return payload["state_dict"], meta
