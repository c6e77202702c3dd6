"""The ``migrate`` flow: the whole migration of one spec, stage by stage.

Stages so far: check the spec, reach the object store, write the run report. Later stages
(validation, planning, data migration, adaptation, integration, optimisation) slot in between.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.runtime import flow_run

from lepton_core.report import RunReport
from lepton_core.report.stages import spec_stage, store_stage
from lepton_core.spec.params import SpecRef, TargetOverrides
from lepton_core.state import runs_dir, state_dir
from tasks.report import write_run_report
from tasks.spec import check_spec, prepare_demo
from tasks.store import reach_object_store


@flow(name="migrate", description="Move an AI system's data, model and services to the cloud, as its spec says.")
def migrate(spec: SpecRef = SpecRef(), target: TargetOverrides = TargetOverrides()) -> str:
    """Run the migration described by ``spec``; returns the path of the run report.

    Args:
        spec: the spec to run (the bundled demo when no path is given).
        target: changes to the spec's cloud target for this run only.
    """
    started = dt.datetime.now(dt.timezone.utc)
    root = str(state_dir())

    # 1. The spec: the bundled demo unless a path is given; bad input fails here, never retried.
    spec_path = spec.path or prepare_demo(root)
    loaded = check_spec(spec_path, target)

    # 2. The object store: start the embedded server or reach the cloud's; retried if transient.
    info = reach_object_store(loaded.spec.target, root, loaded.spec.name)

    # 3. The report, in the run's folder and as a Prefect artifact.
    run_name = f"{started:%Y%m%d-%H%M%S}-{flow_run.get_name() or 'local'}"
    report = RunReport(
        run_name=run_name, spec_name=loaded.spec.name, spec_path=str(loaded.path), spec_sha256=loaded.sha256,
        started_at=started, finished_at=dt.datetime.now(dt.timezone.utc),
        stages=(spec_stage(loaded), store_stage(info)),
    )
    return write_run_report(report, str(runs_dir() / run_name))
