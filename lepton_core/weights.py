"""Reading files that ``torch.save`` wrote (checkpoints, policies, pretrained weights) the one way
lepton does, ``weights_only=True``, with each way a file can fail turned into one line that names
the file and what it should have been. torch's own messages run to a dozen lines and suggest
loading with ``weights_only=False``, which would run code from the file."""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Any

from lepton_core.errors import UsageError

# what torch's zip reader says of a file it cannot read as an archive it wrote
_NOT_AN_ARCHIVE = ("PytorchStreamReader", "inline_container")


# torch.save's two formats: a zip archive, or (the legacy one) a pickle whose first object is this
# magic number, pickled as a long (opcode LONG1, 10 bytes, little-endian) after the protocol header
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _starts_as_torch_wrote(path: Path) -> bool:
    """Whether the file begins as torch.save begins its files. Bytes that do not are damaged or
    another program's, whatever the error that reading them as a legacy pickle happened to raise
    (IndexError, KeyError, UnicodeDecodeError: about one file of random bytes in twelve)."""
    with open(path, "rb") as f:
        head = f.read(32)
    return head.startswith(_ZIP_MAGIC) or _LEGACY_MAGIC in head


def load_weights(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, map_location=map_location, weights_only=True)``. A UsageError, whose
    message starts with the path, when the file is missing, a folder, empty, not one torch wrote
    (or cut short), or holds a Python object other than tensors and plain values."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such {what} file")
    if path.is_dir():
        raise UsageError(f"{path}: a folder, not a {what} file")
    damaged = f"{path}: not a readable {what}: not a file torch.save wrote, or one cut short"
    try:
        with warnings.catch_warnings():  # (a file pickled by Python itself: its protocol, then the error below)
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise UsageError(f"{path}: the {what} holds a Python object ({found[1]}) that lepton does not load; "
                             "it loads tensors and plain values only (weights_only=True)") from None
        raise UsageError(damaged) from None
    except (EOFError, struct.error):  # a file too short for torch's header, or empty
        raise UsageError(f"{path}: an empty file, not a {what}" if path.stat().st_size == 0 else damaged) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except Exception as exc:  # whatever else torch's readers raise on bytes they did not write
        not_an_archive = isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in _NOT_AN_ARCHIVE)
        if not_an_archive or not _starts_as_torch_wrote(path):
            raise UsageError(damaged) from None
        first = (str(exc).splitlines() or [""])[0]
        raise UsageError(f"{path}: cannot load the {what} ({type(exc).__name__}{': ' + first if first else ''})") from None
