"""torchvision architectures with a classification head sized for the spec's classes.

Small inputs (64 px or less, such as the demo's 32x32 digits) get a 3x3 stride-1 first convolution on
ResNets (the max-pool stays), so a 32x32 image keeps a 4x4 map at the last stage instead of 1x1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0")
SMALL_INPUT = 64


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
