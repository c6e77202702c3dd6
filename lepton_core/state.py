"""Where lepton keeps its state: the embedded store's data and credentials, demo data, run folders.

The state folder is ``$LEPTON_HOME`` when set, else ``.lepton`` in the current directory (the
project's state folder). Every path is derived here so that one variable moves all of it.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The state folder, created on first use."""
    root = Path(os.environ.get("LEPTON_HOME") or Path.cwd() / ".lepton").expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
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
