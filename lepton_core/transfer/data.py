"""Image data for adaptation: an ImageFolder tree (local, or a verified local copy of a cloud copy)
as a LightningDataModule with the backbone's transforms, a deterministic train/val/test split and a
labelled fraction of the training split.

The split comes from the dataset's own ``train``/``val``/``test`` folders when it has them; missing
parts are carved out by a hash of each file's path (70/15/15 of a flat folder, 15% of train for
val), so every run, machine and seed sees the same split. The labelled subset is stratified: each
class keeps ``ceil(fraction x its images)`` (at least one), chosen by a seeded hash.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lepton_core.errors import UsageError
from lepton_core.transfer.checkpoint import Preprocess
from lepton_core.validation.manifest import IMAGE_SUFFIXES

SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
CARVE_VAL = 0.15
CARVE_TEST = 0.15


@dataclass(frozen=True)
class Item:
    rel: str  # path under the dataset root, '/'-separated
    label: int


# the streams a training epoch draws from, each seeded by ``epoch_seed``: apart from one another
DRAW, SHUFFLE, LOADER = 0, 500_009, 1_000_033


def epoch_seed(seed: int, epoch: int, stream: int = DRAW) -> int:
    """The seed of one random stream of one training epoch: a function of the run's seed and the
    epoch alone, so a resumed run draws epoch k as the run never stopped did."""
    return seed * 1_000_003 + epoch + stream


class EpochShuffle(torch.utils.data.RandomSampler):
    """Every index once, in an order that depends on the seed and the epoch alone (Lightning calls
    ``set_epoch`` before each epoch, as for ``DistributedSampler``): a run resumed at epoch k shuffles
    epoch k as the run never stopped did, whatever it drew before. A ``RandomSampler``, so that
    Lightning, across several GPUs, takes the loader for a shuffled one and gives it a
    ``DistributedSampler`` (shuffled by its seed and the epoch too)."""

    def __init__(self, data_source, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, SHUFFLE))
        return iter(torch.randperm(len(self.data_source), generator=gen).tolist())


def _unit(salt: str, rel: str) -> float:
    """A stable number in [0, 1) for a path: the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(f"{salt}:{rel}".encode(), digest_size=8).digest(), "big") / 2**64


def _class_items(base: Path, root: Path, classes: tuple[str, ...], where: str) -> list[Item]:
    index = {c: i for i, c in enumerate(classes)}
    found = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in found if c not in index]
    if unknown:
        raise UsageError(f"{where}: class folders the model does not know: {', '.join(unknown[:5])}"
                         f"{', ...' if len(unknown) > 5 else ''} (the model's classes: {', '.join(classes[:10])}"
                         f"{', ...' if len(classes) > 10 else ''})")
    items = []
    for cls in found:
        for f in sorted((base / cls).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                items.append(Item(f.relative_to(root).as_posix(), index[cls]))
    return items


def index_splits(root: str | Path, classes: tuple[str, ...], name: str = "dataset") -> dict[str, list[Item]]:
    """``{"train": [...], "val": [...], "test": [...]}`` for the ImageFolder tree at ``root``, labels in
    the order of ``classes``. A class folder outside ``classes`` is an error; so is an empty split."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{name}: {root} is not a folder")
    present = {p.name for p in root.iterdir() if p.is_dir()}
    folders = {part: next((n for n in names if n in present), None) for part, names in SPLIT_NAMES.items()}
    splits: dict[str, list[Item]] = {}
    if folders["train"] and folders["test"]:
        for part, folder in folders.items():
            if folder:
                splits[part] = _class_items(root / folder, root, classes, f"{name} ({folder}/)")
        if "val" not in splits:
            train = splits["train"]
            splits["val"] = [i for i in train if _unit("val", i.rel) < CARVE_VAL]
            splits["train"] = [i for i in train if _unit("val", i.rel) >= CARVE_VAL]
    else:
        everything = _class_items(root, root, classes, name)
        u = {i.rel: _unit("split", i.rel) for i in everything}
        splits["test"] = [i for i in everything if u[i.rel] < CARVE_TEST]
        splits["val"] = [i for i in everything if CARVE_TEST <= u[i.rel] < CARVE_TEST + CARVE_VAL]
        splits["train"] = [i for i in everything if u[i.rel] >= CARVE_TEST + CARVE_VAL]
    for part in ("train", "val", "test"):
        if not splits[part]:
            raise UsageError(f"{name}: no images in its {part} split under {root}")
    return splits


def labelled_subset(items: list[Item], fraction: float, seed: int) -> list[Item]:
    """A stratified, seeded subset: each class keeps ``ceil(fraction * n)`` of its ``n`` items (at least one)."""
    if fraction >= 1.0:
        return list(items)
    by_class: dict[int, list[Item]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    kept = []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda i: _unit(f"labelled-{seed}", i.rel))
        kept.extend(group[:max(1, math.ceil(fraction * len(group)))])
    return sorted(kept, key=lambda i: i.rel)


def image_transform(input_size: int, preprocess: Preprocess, *, train: bool, augment: bool = True) -> Callable:
    """PIL image -> normalised float tensor (3, size, size); training adds a light random affine."""
    from torchvision.transforms import v2

    steps: list = [_ToRGB(preprocess.mode), v2.PILToTensor(),
                   v2.Resize((input_size, input_size), antialias=True)]
    if train and augment:
        steps.append(v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(preprocess.mean), list(preprocess.std))]
    return v2.Compose(steps)


class _ToRGB:
    """Convert to the backbone's colour mode, then to three channels (a grey image repeated)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img):
        return img.convert(self.mode).convert("RGB")


class ImageFiles(Dataset):
    """Images decoded on access; an unreadable file is an error that names it. ``extra``: more
    (root, items) whose images join these (the replayed source data)."""

    def __init__(self, root: Path, items: list[Item], transform: Callable,
                 extra: tuple[tuple[Path, list[Item]], ...] = ()) -> None:
        self.items, self.transform = items, transform
        self.samples = [(root / i.rel, i.label) for i in items] + [(r / i.rel, i.label) for r, more in extra for i in more]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                img.load()
                x = self.transform(img)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
        return x, label


class ImageDataModule(L.LightningDataModule):
    """The target's images for fine-tuning and evaluation.

    Args:
        root: the ImageFolder tree (or ``fetch`` makes it: a verified local copy of a cloud copy).
        classes: the model's classes; labels follow their order.
        input_size: side of the square the backbone takes.
        preprocess: the backbone's colour mode and normalisation.
        labelled_fraction: share of the training split whose labels are used.
        batch_size, num_workers: the loaders'.
        seed: picks the labelled subset and shuffles.
        augment: a light random affine on training images.
        fetch: called once in ``prepare_data`` to materialise ``root`` (download and verify).
        replay: another ImageFolder tree (the on-prem data) whose training images, all labelled,
            join every training epoch, so that the model keeps its answers there; ``replay_fraction``
            of them (stratified, seeded, a fresh draw each epoch of the trainer).
        labelled_share: the training epoch is drawn (with replacement, seeded by the epoch) so that
            the labelled images make up at least this share of it when other images join them
            (pseudo-labelled, replayed); None: every image once, shuffled. Without it, a tenth
            of the labels among ten times as many other images is seen once an epoch, and learning
            from them is slow.
        round_steps: with a drawn epoch, its batches are a whole number of rounds of this many (the
            trainer validates after each round; at least one round), all of ``batch_size``.
    """

    def __init__(self, root: str | Path, classes: tuple[str, ...], input_size: int, preprocess: Preprocess, *,
                 labelled_fraction: float = 1.0, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: bool = True, name: str = "dataset", fetch: Callable[[], object] | None = None,
                 replay: str | Path | None = None, replay_name: str = "source", replay_fraction: float = 1.0,
                 labelled_share: float | None = None, round_steps: int = 1) -> None:
        super().__init__()
        if not 0 < labelled_fraction <= 1:
            raise UsageError(f"labelled fraction {labelled_fraction}: must be in (0, 1]")
        if labelled_share is not None and not 0 < labelled_share < 1:
            raise UsageError(f"labelled share {labelled_share}: must be in (0, 1)")
        if round_steps < 1:
            raise UsageError(f"round steps {round_steps}: must be at least 1")
        self.labelled_share, self.round_steps = labelled_share, round_steps
        self.root, self.classes, self.input_size, self.preprocess = Path(root), tuple(classes), input_size, preprocess
        self.labelled_fraction, self.batch_size, self.num_workers = labelled_fraction, batch_size, num_workers
        self.seed, self.augment, self.name, self.fetch = seed, augment, name, fetch
        self.replay, self.replay_name, self.replay_fraction = (Path(replay) if replay else None), replay_name, replay_fraction
        self.splits: dict[str, list[Item]] | None = None
        self.pseudo_labels: dict[str, int] = {}  # path -> class, for training images whose label is unused

    def prepare_data(self) -> None:
        if self.fetch is not None:
            self.fetch()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            splits = index_splits(self.root, self.classes, self.name)
            splits["unlabelled"] = splits["train"]  # every training image, for statistics that need no label
            splits["train"] = labelled_subset(splits["train"], self.labelled_fraction, self.seed)
            self.splits = splits

    def dataset(self, part: str, *, train: bool = False) -> ImageFiles:
        """A split's images; ``train`` adds augmentation and, for the train split, the pseudo-labelled images."""
        self.setup()
        tf = image_transform(self.input_size, self.preprocess, train=train, augment=self.augment)
        items, extra = self.splits[part], ()
        if part == "train" and train:
            labelled = {i.rel for i in items}
            items = items + [Item(rel, label) for rel, label in sorted(self.pseudo_labels.items()) if rel not in labelled]
            if self.replay is not None:
                source = index_splits(self.replay, self.classes, self.replay_name)["train"]
                epoch = self.trainer.current_epoch if self.trainer is not None else 0  # a fresh draw each epoch
                extra = ((self.replay, labelled_subset(source, self.replay_fraction, self.seed + 7919 * epoch)),)
        return ImageFiles(self.root, items, tf, extra)

    def _loader(self, part: str, train: bool) -> DataLoader:
        dataset = self.dataset(part, train=train)
        sampler, gen = None, None
        if train and part == "train":
            sampler = self.drawn_epoch(dataset) or EpochShuffle(dataset, self.seed)
            # a generator of its own for the workers' base seed: without one, each iteration of the
            # loader draws it from torch's global generator, and a resumed run iterates at other moments
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, LOADER))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, generator=gen,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def drawn_epoch(self, dataset: ImageFiles) -> torch.utils.data.WeightedRandomSampler | None:
        """The training epoch's draw (see ``labelled_share``); None without a share. The labelled
        images come first in ``dataset``; the others share the rest equally."""
        if self.labelled_share is None:
            return None
        self.setup()
        labelled, total = len(self.splits["train"]), len(dataset)
        share = max(self.labelled_share, labelled / total)  # never fewer than their own share
        others = total - labelled
        weights = torch.cat([torch.full((labelled,), share / labelled, dtype=torch.float64),
                             torch.full((others,), (1 - share) / max(others, 1), dtype=torch.float64)])
        per_round = self.round_steps * self.batch_size
        draws = per_round * max(1, round(total / per_round))
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.utils.data.WeightedRandomSampler(weights, draws, replacement=True, generator=gen)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def unlabelled_dataloader(self, limit: int | None = None, batch_size: int | None = None, *,
                              only_unused: bool = False) -> DataLoader:
        """The training split without augmentation (its labels unused), in order; with ``limit``, a
        seeded sample of that many; ``batch_size`` when not the training one (passes without
        gradients); ``only_unused``: without the images whose labels are used."""
        items = self.unlabelled_items(only_unused=only_unused)
        if limit is not None and limit < len(items):
            items = sorted(items, key=lambda i: _unit(f"sample-{self.seed}", i.rel))[:limit]
        tf = image_transform(self.input_size, self.preprocess, train=False)
        return DataLoader(ImageFiles(self.root, items, tf), batch_size=batch_size or self.batch_size,
                          num_workers=self.num_workers)

    def unlabelled_items(self, *, only_unused: bool = False) -> list[Item]:
        """The training split in ``unlabelled_dataloader``'s order (their folder labels are not for
        training); ``only_unused``: without the labelled subset."""
        self.setup()
        if not only_unused:
            return list(self.splits["unlabelled"])
        labelled = {i.rel for i in self.splits["train"]}
        return [i for i in self.splits["unlabelled"] if i.rel not in labelled]

    def counts(self) -> dict[str, int]:
        self.setup()
        return {part: len(items) for part, items in self.splits.items() if part != "unlabelled"}
