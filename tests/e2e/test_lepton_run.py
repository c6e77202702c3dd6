"""`lepton run` as a user runs it: a separate process, with Prefect's temporary API (runs against
a real server are in test_deployments.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import QUICK_PARITY_IMAGES
from tests.e2e.conftest import lepton


def report_of(proc: subprocess.CompletedProcess) -> Path:
    line = next(l for l in proc.stdout.splitlines() if l.startswith("migration finished; report: "))
    return Path(line.split(": ", 1)[1])


def test_run_with_an_ephemeral_prefect(demo_relaxed: Path, user_env: dict[str, str]) -> None:
    proc = lepton(["run", str(demo_relaxed), "--plan-seconds", "2", "--adapt-epochs", "1", "--parity-images", str(QUICK_PARITY_IMAGES),
                   "--optimize-trials", "0"], user_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(proc)
    assert report.is_file() and "- status: **ok**" in report.read_text()
    parity = json.loads((report.parent / "integrate" / "parity.json").read_text())
    assert parity["passed"] and parity["images"] == {"source": QUICK_PARITY_IMAGES, "target": QUICK_PARITY_IMAGES}
    assert "the embedded object store is still running at http://127.0.0.1:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_bad_spec_fails_before_prefect_starts(demo_data: Path, user_env: dict[str, str]) -> None:
    bad = demo_data.parent / "bad-e2e.yaml"
    bad.write_text(demo_data.read_text().replace("bucket: lepton-demo", "bucket: Bad_Bucket"))
    proc = lepton(["run", str(bad)], user_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}:") and "target.bucket: must be 3-63 characters" in proc.stderr
    assert proc.stdout == ""  # nothing ran: no Prefect server was started, no flow run logged
