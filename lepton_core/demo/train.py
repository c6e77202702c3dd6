"""Train the demo's on-prem model: a torchvision classifier fitted to the source domain only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lepton_core.demo.digits import DigitImage
from lepton_core.transfer.checkpoint import CheckpointMeta, Preprocess


@dataclass(frozen=True)
class TrainResult:
    state_dict: dict
    meta: CheckpointMeta


def train_source_model(images: list[DigitImage], *, architecture: str = "resnet18", epochs: int = 4, seed: int = 0,
                       batch_size: int = 64, lr: float = 2e-3,
                       progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Fit ``architecture`` on the source train split; report accuracy on both domains' test split.

    ``progress(epoch, epochs, loss)`` is called after each epoch.
    """
    import torch
    import torch.nn.functional as F

    from lepton_core.transfer.backbones import build_model

    torch.manual_seed(seed)
    pre = Preprocess()
    classes = tuple(str(c) for c in range(10))
    train = [d for d in images if d.split == "train"]
    test = [d for d in images if d.split == "test"]
    x = pre.tensor([d.source for d in train])  # (N, 3, 32, 32)
    y = torch.tensor([d.label for d in train])
    model = build_model(architecture, len(classes), x.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for start in range(0, len(train), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(epoch + 1, epochs, total / len(train))
    metrics = {
        "source_test_accuracy": _accuracy(model, pre.tensor([d.source for d in test]), [d.label for d in test]),
        "target_test_accuracy": _accuracy(model, pre.tensor([d.target for d in test]), [d.label for d in test]),
        "epochs": float(epochs),
    }
    meta = CheckpointMeta(architecture=architecture, classes=classes, input_size=int(x.shape[-1]), preprocess=pre, metrics=metrics)
    return TrainResult(state_dict={k: v.detach().clone() for k, v in model.state_dict().items()}, meta=meta)


def _accuracy(model, x, labels: list[int]) -> float:
    import torch

    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == torch.tensor(labels)).float().mean())
