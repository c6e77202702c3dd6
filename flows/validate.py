"""The ``validate`` flow: run one validation gate on every dataset of a spec.

Meant to be scheduled (nightly on the cloud copy, ``side="target"``) as well as run by hand; each
gate publishes its artifact, and any failed gate fails the run after every gate has run.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from lepton_core.spec import is_s3
from lepton_core.spec.params import SpecRef, TargetOverrides
from lepton_core.state import state_dir
from tasks.spec import check_spec, prepare_demo
from tasks.validation import validate_source_task, validate_target_task


@flow(name="validate", description="Run a validation gate on every dataset of a spec (nightly on the cloud copy).",
      task_runner=ThreadPoolTaskRunner(max_workers=2))
def validate(spec: SpecRef = SpecRef(), side: Literal["source", "target"] = "target") -> list[str]:
    """Check each local dataset (``source``) or its cloud copy (``target``); one line per dataset.

    Args:
        spec: the spec to check (the bundled demo when no path is given).
        side: source checks the data where it is now; target checks its copy in the object store.
    """
    root = str(state_dir())
    loaded = check_spec(spec.path or prepare_demo(root), TargetOverrides())
    names = [d.name for d in loaded.spec.datasets if not is_s3(d.location)]
    if side == "source":
        gates = [validate_source_task.submit(loaded, name) for name in names]
    else:
        gates = [validate_target_task.submit(loaded, name, root) for name in names]
    for gate in gates:
        gate.wait()  # every gate runs and publishes its artifact before the first failure is raised
    results = [gate.result() for gate in gates]
    return [f"{r.dataset}: {len(r.checks)} {r.side} expectations passed" for r in results]
