"""Where lepton keeps its state: the embedded store's data and credentials, demo data, run folders.

The state folder is ``$LEPTON_HOME`` when set, else ``.lepton`` in the current directory (the
project's state folder). Every path is derived here so that one variable moves all of it.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The state folder, created on first use."""
    from lepton_core.fsutil import writable_dir

    home = os.environ.get("LEPTON_HOME")
    root = Path(home or Path.cwd() / ".lepton").expanduser().resolve()
    if not root.is_dir():
        writable_dir(root, "LEPTON_HOME" if home else "the state folder")
    return root


def store_dir(root: Path | None = None) -> Path:
    """The embedded object store's folder (data, credentials, pid file, log)."""
    return (root or state_dir()) / "store"


def demo_dir(root: Path | None = None) -> Path:
    """Where ``lepton run`` builds the bundled demo when no spec is given."""
    return (root or state_dir()) / "demo"


def runs_dir(root: Path | None = None) -> Path:
    """Each run writes its report and outputs into a folder of its own under this one."""
    return (root or state_dir()) / "runs"


def planner_dir(root: Path | None = None) -> Path:
    """The trained migration planner: its policy checkpoint, training log and learning curve."""
    return (root or state_dir()) / "planner"


def clouds_dir(root: Path | None = None) -> Path:
    """The cloud each migration with an open provider moved to (``lepton_core.choice.record``)."""
    return (root or state_dir()) / "clouds"
