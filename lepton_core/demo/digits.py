"""Two image domains from scikit-learn's bundled digits (1,797 images of 8x8 pixels, 16 levels).

Source (on-prem): each digit upscaled to 32x32, dark background, bright strokes.
Target (the cloud's data): the same digits as another sensor would see them: inverted contrast,
rotated by 15-25 degrees either way, resampled 32 -> 16 -> 32 (lost resolution), lower contrast and
Gaussian noise. A model trained on the source scores near chance on the target until adapted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SIZE = 32
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}


@dataclass(frozen=True)
class DigitImage:
    index: int
    label: int
    split: str
    source: Image.Image
    target: Image.Image


def split_indices(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A stratified split of sample indices into train/val/test (60/20/20 of every class)."""
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_train = round(len(idx) * SPLITS["train"])
        n_val = round(len(idx) * SPLITS["val"])
        out["train"] += idx[:n_train].tolist()
        out["val"] += idx[n_train:n_train + n_val].tolist()
        out["test"] += idx[n_train + n_val:].tolist()
    return {name: np.sort(np.array(v, dtype=np.int64)) for name, v in out.items()}


def render_source(pixels: np.ndarray) -> Image.Image:
    """8x8 values in 0..16 -> a 32x32 grayscale image."""
    img = Image.fromarray(np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8), mode="L")
    return img.resize((SIZE, SIZE), Image.Resampling.BICUBIC)


def render_target(source: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The source image as the cloud's sensor sees it (see the module docstring)."""
    angle = float(rng.uniform(15, 25) * rng.choice([-1, 1]))
    img = source.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)
    img = img.resize((SIZE // 2, SIZE // 2), Image.Resampling.BILINEAR).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    x = 255.0 - np.asarray(img, dtype=np.float64)  # inverted: dark strokes on a bright background
    x = 40.0 + x * 0.7  # lower contrast
    x += rng.normal(0.0, 12.0, size=x.shape)
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), mode="L")


def digit_images(seed: int) -> list[DigitImage]:
    """Every digit in both domains, with its split; deterministic for a seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    splits = split_indices(digits.target, rng)
    split_of = {int(i): name for name, idx in splits.items() for i in idx}
    out = []
    for i in range(len(digits.target)):
        src = render_source(digits.images[i])
        out.append(DigitImage(i, int(digits.target[i]), split_of[i], src, render_target(src, rng)))
    return out
