"""torchvision architectures with a classification head sized for the spec's classes, split into a
``backbone`` (blocks from input to features, in order) and a ``head`` (the classifier torchvision
names ``fc`` or ``classifier``), and torchvision's pretrained weights from local files only.

Small inputs (64 px or less, such as the demo's 32x32 digits) get a 3x3 stride-1 first convolution on
ResNets (the max-pool stays), so a 32x32 image keeps a 4x4 map at the last stage instead of 1x1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lepton_core.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0")
SMALL_INPUT = 64
# The architectures whose training is faster in bf16-mixed than in fp32 where the hardware has bf16:
# the ResNets' dense convolutions. The depthwise convolutions of mobilenet_v3_small and
# efficientnet_b0 train slower in bf16 on both machines measured (an H200 at 224x224; a 2-core
# AVX512-BF16 CPU at 32x32 and 224x224, 1.3-1.7x the fp32 step): benchmarks/RESULTS.md.
BF16_TRAINS_FASTER = frozenset({"resnet18", "resnet50"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_model(architecture: str, num_classes: int, input_size: int) -> nn.Module:
    """A randomly initialised ``architecture`` with ``num_classes`` outputs for square inputs."""
    import torch.nn as nn
    import torchvision.models as tvm

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (known: {', '.join(ARCHITECTURES)})")
    model = getattr(tvm, architecture)(weights=None)
    if architecture.startswith("resnet"):
        if input_size <= SMALL_INPUT:
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model


def backbone_blocks(model: nn.Module, architecture: str) -> list[nn.Module]:
    """The backbone's blocks from the input up (what gradual unfreezing thaws from the top down):
    a ResNet's stem and its four stages; the feature stages of the others."""
    import torch.nn as nn

    if architecture.startswith("resnet"):
        stem = nn.ModuleList([model.conv1, model.bn1])
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return list(model.features)


def head_of(model: nn.Module, architecture: str) -> nn.Module:
    """The classification head: everything after the pooled features."""
    return model.fc if architecture.startswith("resnet") else model.classifier


def pretrained_file(architecture: str) -> Path:
    """Where torch keeps torchvision's default ImageNet weights for ``architecture``
    (``$TORCH_HOME/hub/checkpoints/<file>``); lepton reads them there and never downloads."""
    import torch.hub
    import torchvision.models as tvm

    url = tvm.get_model_weights(architecture).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def pretrained_path(architecture: str, path: str | os.PathLike | None = None) -> Path:
    """``path``, else torch's cache file for ``architecture``; a UsageError when the file is not there."""
    file = Path(path) if path else pretrained_file(architecture)
    if not file.is_file():
        raise UsageError(f"{file}: no pretrained {architecture} weights there (lepton never downloads; "
                         f"copy the file there or set TORCH_HOME to a folder that has hub/checkpoints/{file.name})")
    return file


def load_pretrained(model: nn.Module, architecture: str, path: str | os.PathLike | None = None) -> list[str]:
    """Load ImageNet weights (from ``path``, else from torch's cache folder) into ``model``, except
    tensors whose shape differs (the head, a small-input first convolution); the names skipped."""
    import torch

    from lepton_core.transfer.checkpoint import FORMAT
    from lepton_core.weights import load_weights

    file = pretrained_path(architecture, path)
    state = load_weights(file, "weights file")
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise UsageError(f"{file}: a lepton model checkpoint, not ImageNet weights (a spec's model.checkpoint starts "
                         "from it with init 'onprem')")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UsageError(f"{file}: not {architecture} weights (not a state dict of named tensors)")
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise UsageError(f"{file}: not {architecture} weights (unexpected tensors such as {unknown[0]!r})")
    skipped = sorted(k for k in own if k not in state or state[k].shape != own[k].shape)
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def checked_pretrained(architecture: str, num_classes: int, input_size: int, path: str | os.PathLike | None = None) -> Path:
    """The ImageNet weights file ``load_pretrained`` would read, loaded once into a throwaway
    ``architecture`` to prove it can be: a UsageError now (missing, unreadable, another
    architecture's), before a run gathers its images and starts training."""
    file = pretrained_path(architecture, path)
    load_pretrained(build_model(architecture, num_classes, input_size), architecture, file)
    return file
