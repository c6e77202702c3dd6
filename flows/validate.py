"""The ``validate`` flow: run one validation gate on every dataset of a spec.

Meant to be scheduled (nightly on the cloud copy, ``side="target"``) as well as run by hand; each
gate publishes its artifact and writes its Data Docs into the run's folder (uploaded next to the
data when the run ends), and any failed gate fails the run after every gate has run. On the source
side the datasets' profiles are saved and the drift report is made as well.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from lepton_core.spec import is_s3
from lepton_core.spec.params import SpecRef, TargetOverrides
from lepton_core.state import state_dir
from lepton_core.validation.drift import comparisons
from flows._run import failure_summary, fan_out_runner, run_folder
from tasks.results import persisted, result_storage
from tasks.spec import check_spec, prepare_demo
from tasks.store import reach_object_store
from tasks.validation import drift_task, publish_data_docs_task, validate_source_task, validate_target_task


@flow(name="validate", description="Run a validation gate on every dataset of a spec (nightly on the cloud copy).",
      task_runner=fan_out_runner(), on_failure=[failure_summary])
def validate(spec: SpecRef = SpecRef(), side: Literal["source", "target"] = "target") -> list[str]:
    """Check each local dataset (``source``) or its cloud copy (``target``); one line per dataset.

    Args:
        spec: the spec to check (the bundled demo when no path is given).
        side: source checks the data where it is now; target checks its copy in the object store.
    """
    root = str(state_dir())
    run_name, _, folder = run_folder(f"-validate-{side}")  # the same on a Retry of this flow run
    run_dir = str(folder)
    loaded = check_spec(spec.path or prepare_demo(root), TargetOverrides())
    names = [d.name for d in loaded.spec.datasets if not is_s3(d.location)]
    if side == "source":
        gates = [validate_source_task.submit(loaded, name, run_dir) for name in names]
    else:  # the copy's gates keep their results in its store: a Retry re-checks only what failed
        reach_object_store(loaded.spec.target, root, loaded.spec.name)
        storage = result_storage(loaded.spec.target)
        gates = [persisted(validate_target_task, storage).submit(loaded, name, root, run_dir) for name in names]
    for gate in gates:
        gate.wait()  # every gate runs and publishes its artifact before the first failure is raised
    passed = [gate.result() for gate in gates if gate.state.is_completed()]
    lines = [f"{r.dataset}: {len(r.checks)} {r.side} expectations passed" for r in passed]
    drifts = []
    if side == "source":
        profiles = {r.dataset: r.profile for r in passed}
        drifts = [drift_task.submit(*pair, run_dir) for pair in comparisons(loaded.spec, profiles)]
        for d in drifts:
            d.wait()
        lines += [d.result().summary() for d in drifts if d.state.is_completed()]
        lines.append(f"Data Docs: {run_dir}")
    else:  # the cloud copy's checks go next to it
        lines.append(f"Data Docs: {publish_data_docs_task(loaded, root, run_dir, run_name) or run_dir}")
    for future in [*gates, *drifts]:
        future.result()  # the first failure fails the run, after every gate and the Data Docs are done
    return lines
