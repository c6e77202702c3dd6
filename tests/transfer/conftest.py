"""Small image folders the transfer tests train on in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("a", "b", "c")


def write_images(root: Path, splits: tuple[str, ...] = ("train", "val", "test"), per_class: int = 6, size: int = 32,
                 classes: tuple[str, ...] = CLASSES, seed: int = 0) -> Path:
    """An ImageFolder tree of grey images whose class sets their brightness (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for k, cls in enumerate(classes):
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(rng.normal(40 + 80 * k, 20, (size, size)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images")
