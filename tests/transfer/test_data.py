"""The transfer DataModule: the split, the labelled subset, transforms and bad images."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lepton_core.errors import UsageError
from lepton_core.transfer.checkpoint import Preprocess
from lepton_core.transfer.data import ImageDataModule, index_splits, labelled_subset
from tests.transfer.conftest import CLASSES, write_images


def test_split_folders_are_used_as_they_are(tiny_images: Path) -> None:
    splits = index_splits(tiny_images, CLASSES)
    assert {k: len(v) for k, v in splits.items()} == {"train": 18, "val": 18, "test": 18}
    assert all(i.rel.startswith("test/") for i in splits["test"])
    assert sorted({i.label for i in splits["train"]}) == [0, 1, 2]


def test_a_flat_folder_is_split_the_same_way_every_time_and_without_overlap(tmp_path: Path) -> None:
    root = write_images(tmp_path / "flat", splits=(), per_class=40)
    first, second = index_splits(root, CLASSES), index_splits(root, CLASSES)
    assert first == second
    parts = [{i.rel for i in first[p]} for p in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 120 and len(set().union(*parts)) == 120
    assert 60 <= len(parts[0]) <= 100  # about 70% train


def test_the_labelled_subset_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = write_images(tmp_path / "imgs", splits=("train", "test"), per_class=25)
    train = index_splits(root, CLASSES)["train"]  # val carved out of train: fewer than 25 a class
    per_class = {c: sum(1 for i in train if i.label == c) for c in range(3)}
    subset = labelled_subset(train, 0.1, seed=3)
    assert {c: sum(1 for i in subset if i.label == c) for c in range(3)} == {c: math.ceil(0.1 * n) for c, n in per_class.items()}
    assert subset == labelled_subset(train, 0.1, seed=3)
    assert subset != labelled_subset(train, 0.1, seed=4)
    assert labelled_subset(train, 1.0, seed=0) == train


def test_a_class_the_model_does_not_know_is_refused(tiny_images: Path) -> None:
    with pytest.raises(UsageError, match=r"digits \(train/\): class folders the model does not know: c"):
        index_splits(tiny_images, ("a", "b"), "digits")


def test_batches_have_the_backbones_shape_and_normalisation(tiny_images: Path) -> None:
    data = ImageDataModule(tiny_images, CLASSES, 48, Preprocess(mode="L", mean=(0.5,) * 3, std=(0.25,) * 3),
                           labelled_fraction=0.5, batch_size=4)
    x, y = next(iter(data.test_dataloader()))
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1])  # a grey image repeated over three channels
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6  # (v - 0.5) / 0.25 for v in [0, 1]
    assert data.counts() == {"train": 9, "val": 18, "test": 18}


def test_an_unreadable_image_is_named(tiny_images: Path) -> None:
    bad = tiny_images / "val" / "b" / "001.png"
    bad.write_bytes(b"not a png")
    data = ImageDataModule(tiny_images, CLASSES, 32, Preprocess(), batch_size=64)
    with pytest.raises(UsageError, match=rf"{bad}: unreadable image"):
        list(data.val_dataloader())


def test_each_epoch_replays_a_fresh_stratified_share_of_the_source_images(tmp_path: Path) -> None:
    from types import SimpleNamespace

    target = write_images(tmp_path / "target")
    source = write_images(tmp_path / "source", per_class=10, seed=1)
    data = ImageDataModule(target, CLASSES, 32, Preprocess(), labelled_fraction=0.5, replay=source, replay_fraction=0.3)
    drawn = []
    for epoch in range(4):
        data.trainer = SimpleNamespace(current_epoch=epoch)  # what Lightning sets while it trains
        replayed = [path for path, _ in data.dataset("train", train=True).samples if path.is_relative_to(source)]
        labels = [label for path, label in data.dataset("train", train=True).samples if path.is_relative_to(source)]
        assert sorted(labels) == [0] * 3 + [1] * 3 + [2] * 3  # ceil(0.3 * 10) of each class's 10
        drawn.append(set(replayed))
    assert drawn[0] != drawn[1] and len(set().union(*drawn)) > 9  # another draw each epoch, more images over the run
    data.trainer = SimpleNamespace(current_epoch=1)
    assert {p for p, _ in data.dataset("train", train=True).samples if p.is_relative_to(source)} == drawn[1]  # seeded


def test_a_drawn_epoch_gives_the_labelled_images_their_share_in_whole_rounds(tmp_path: Path) -> None:
    from types import SimpleNamespace

    target = write_images(tmp_path / "target", per_class=40)
    source = write_images(tmp_path / "source", per_class=40, seed=1)
    data = ImageDataModule(target, CLASSES, 32, Preprocess(), labelled_fraction=0.1, batch_size=8, replay=source,
                           labelled_share=0.4, round_steps=3)
    labelled = len(data.dataset("train").items)  # 4 a class
    plain = data.dataset("train", train=True)
    assert labelled == 12 and len(plain) == 12 + 120  # one in eleven of the epoch's images has its label
    draws = []
    for epoch in range(3):
        data.trainer = SimpleNamespace(current_epoch=epoch)
        sampler = data.train_dataloader().sampler
        drawn = list(sampler)
        assert len(drawn) % (3 * 8) == 0 and abs(len(drawn) - len(plain)) <= 12  # whole rounds, about the same length
        draws.append(drawn)
    everything = [i for d in draws for i in d]
    share = sum(1 for i in everything if i < labelled) / len(everything)
    assert 0.33 < share < 0.47  # 0.4 asked, against 0.09 in a plain epoch
    assert draws[0] != draws[1]  # a new draw each epoch ...
    data.trainer = SimpleNamespace(current_epoch=1)
    assert list(data.train_dataloader().sampler) == draws[1]  # ... the same on a resumed run
    # a share below the labelled images' own keeps theirs; without a share every image comes once
    few = ImageDataModule(target, CLASSES, 32, Preprocess(), labelled_fraction=0.9, batch_size=8, labelled_share=0.05)
    weights = few.drawn_epoch(few.dataset("train", train=True)).weights
    assert torch.allclose(weights, torch.full_like(weights, weights[0]))
    assert ImageDataModule(target, CLASSES, 32, Preprocess()).drawn_epoch(plain) is None
    with pytest.raises(UsageError, match="labelled share 1.0: must be in"):
        ImageDataModule(target, CLASSES, 32, Preprocess(), labelled_share=1.0)


def test_the_training_order_depends_on_the_seed_and_epoch_alone_and_lightning_shuffles_it_across_gpus(tiny_images: Path) -> None:
    """Each epoch's order is a function of (seed, epoch), whatever was drawn before; and Lightning
    takes the loader for a shuffled one, so that on several GPUs it gives it a DistributedSampler
    that shuffles by epoch (a sampler it did not recognise would get a wrapper that never reshuffles)."""
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
    from lightning.pytorch.utilities.data import _is_dataloader_shuffled
    from torch.utils.data import DistributedSampler

    def loader(seed: int):
        return ImageDataModule(tiny_images, CLASSES, 32, Preprocess(), batch_size=4, seed=seed).train_dataloader()

    def order(train, epoch: int) -> list[int]:
        train.sampler.set_epoch(epoch)
        return list(train.sampler)

    first, again = loader(3), loader(3)
    torch.rand(7)  # the global generator moved: the order does not
    assert order(first, 2) == order(again, 2) and sorted(order(first, 2)) == list(range(len(first.dataset)))
    assert order(first, 1) != order(first, 2) and order(loader(4), 2) != order(first, 2)
    assert _is_dataloader_shuffled(first)
    across = _get_distributed_sampler(first, shuffle=True, overfit_batches=0, num_replicas=2, rank=0)
    assert type(across) is DistributedSampler and across.shuffle
