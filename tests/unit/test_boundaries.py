"""Layering and start-up cost: lepton_core never imports Prefect; the CLI imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_lepton_core_never_imports_prefect() -> None:
    out = run_python(
        "import pkgutil, importlib, sys, lepton_core\n"
        "mods = [m.name for m in pkgutil.walk_packages(lepton_core.__path__, 'lepton_core.')]\n"
        "[importlib.import_module(m) for m in mods]\n"
        "print(len(mods), sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    )
    count, leaked = out.split(" ", 1)
    assert int(count) >= 15
    assert leaked == "[]"


def test_cli_start_up_imports_nothing_heavy() -> None:
    out = run_python(
        "import sys, flows.cli\n"
        "heavy = ('prefect', 'torch', 'torchvision', 'lightning', 'great_expectations', 'boto3', 'pandas', 'sklearn', 'gymnasium')\n"
        "print(sorted(h for h in heavy if h in sys.modules))"
    )
    assert out == "[]"


def test_imports_point_one_way() -> None:
    """flows -> tasks -> lepton_core: tasks never import flows; lepton_core imports neither."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(?:from|import)\s+(flows|tasks)\b", re.M)
    for path in (root / "lepton_core").rglob("*.py"):
        assert not pattern.search(path.read_text()), path
    for path in (root / "tasks").rglob("*.py"):
        assert not re.search(r"^\s*(?:from|import)\s+flows\b", path.read_text(), re.M), path
