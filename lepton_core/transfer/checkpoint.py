"""lepton's checkpoint format: the weights plus what is needed to use them (architecture, classes,
input size, preprocessing), loadable with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from lepton_core.errors import UsageError
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
    """The state dict and metadata of a lepton checkpoint (``weights_only=True``); a UsageError
    naming the file when it is not one."""
    from lepton_core.weights import load_weights

    return _unpack(load_weights(path, "model checkpoint"), path)


def _unpack(payload: Any, path: str | os.PathLike) -> tuple[dict, CheckpointMeta]:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path}: not a lepton model checkpoint (no format {FORMAT!r} in it)")
    pre = payload["preprocess"]
    meta = CheckpointMeta(
        architecture=payload["architecture"],
        classes=tuple(payload["classes"]),
        input_size=int(payload["input_size"]),
        preprocess=Preprocess(mode=pre["mode"], mean=tuple(pre["mean"]), std=tuple(pre["std"])),
        metrics=dict(payload.get("metrics", {})),
    )
    return payload["state_dict"], meta


def load_network(path: str | os.PathLike):
    """``(net, meta)``: the checkpoint's network built and loaded, in eval mode, on the CPU."""
    from lepton_core.transfer.backbones import build_model

    state, meta = load_checkpoint(path)
    net = build_model(meta.architecture, len(meta.classes), meta.input_size)
    net.load_state_dict(state)
    return net.eval(), meta


def onprem_weights(path: str | os.PathLike, architecture: str, classes: tuple[str, ...], input_size: int) -> tuple[dict, Preprocess]:
    """The weights of the on-prem checkpoint at ``path`` for a ``architecture`` model over ``classes``, and
    the preprocessing it was trained with. A lepton checkpoint must name the same architecture and
    classes; a plain state dict must fit the architecture tensor by tensor. Anything else: a UsageError
    that names the file and the mismatch."""
    import torch

    from lepton_core.transfer.backbones import build_model
    from lepton_core.weights import load_weights

    payload = load_weights(path, "checkpoint")
    preprocess = Preprocess()
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        state, meta = _unpack(payload, path)  # (read once)
        if meta.architecture != architecture:
            raise UsageError(f"{path}: a {meta.architecture} checkpoint, but the spec's model is {architecture}")
        if tuple(meta.classes) != tuple(classes):
            raise UsageError(f"{path}: trained for {len(meta.classes)} classes ({_show(meta.classes)}), but the spec's "
                             f"model has {len(classes)} ({_show(classes)})")
        preprocess = meta.preprocess
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = payload
    else:
        raise UsageError(f"{path}: neither a lepton checkpoint nor a state dict of tensors")
    own = build_model(architecture, len(classes), input_size).state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise UsageError(f"{path}: does not fit {architecture} ({len(missing)} tensors missing, e.g. {(missing or ['-'])[0]!r}; "
                         f"{len(extra)} unexpected, e.g. {(extra or ['-'])[0]!r})")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise UsageError(f"{path}: tensor {k!r} is {tuple(state[k].shape)}, {architecture} over {len(classes)} classes "
                             f"at {input_size} px needs {tuple(v.shape)}")
    return state, preprocess


def _show(names: tuple[str, ...] | list[str], most: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")
