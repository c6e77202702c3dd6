"""The ``migrate`` flow: the whole migration of one spec, stage by stage.

Stages so far: check the spec, choose the cloud (when the spec leaves the provider open: every
candidate provider and region planned and priced, the recommended one taken), reach the object
store, validate the source data (profiles saved, drift reported), plan the order of the services' move in the simulator, migrate the data and
validate each cloud copy, adapt the model to the cloud copy of its target data (and register it),
publish the Data Docs next to the data, check the adapted model against the on-prem one served side
by side (parity) and write the cutover bundle, tune how it is served (the latency SLO at the least
cost; the choice goes into the cutover bundle), write the run report.

Every task after the store keeps its result in the object store (``tasks/results.py``), so Retry
on a failed run brings the finished tasks back Cached and goes on at the failed one; a failed run
also leaves a ``failure-summary`` artifact that says what failed and what to do.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow

from lepton_core.report import RunReport
from lepton_core.report.stages import (adapt_stage, cloud_stage, data_stage, drift_stage, integrate_stage, plan_stage, serving_stage,
                                       spec_stage, store_stage, validation_stage)
from lepton_core.spec import is_s3
from lepton_core.spec.params import AdaptOptions, IntegrateOptions, OptimizeOptions, PlanOptions, SpecRef, TargetOverrides
from lepton_core.state import state_dir
from lepton_core.sim.plan import cheapest, dataset_order
from lepton_core.validation.drift import comparisons
from tasks.adapt import adapt_model_task
from tasks.choice import choose_cloud_task as choose_cloud
from tasks.data import migrate_dataset_task
from tasks.integrate import integrate_task
from tasks.plan import plan_migration_task
from flows._run import failure_summary, fan_out_runner, run_folder
from flows.optimize import optimize_stage
from tasks.report import write_run_report
from tasks.results import persisted, result_storage
from tasks.spec import check_spec, prepare_demo
from tasks.store import reach_object_store
from tasks.validation import drift_task, publish_data_docs_task, validate_source_task, validate_target_task


# Datasets are copied two at a time (each copy already keeps many transfers in flight), or on Dask
# workers when LEPTON_DASK says so (flows/_run.py: fan_out_runner).
@flow(name="migrate", description="Move an AI system's data, model and services to the cloud, as its spec says.",
      task_runner=fan_out_runner(), on_failure=[failure_summary])
def migrate(spec: SpecRef = SpecRef(), target: TargetOverrides = TargetOverrides(),
            planning: PlanOptions = PlanOptions(), adapting: AdaptOptions = AdaptOptions(),
            integrating: IntegrateOptions = IntegrateOptions(), optimizing: OptimizeOptions = OptimizeOptions()) -> str:
    """Run the migration described by ``spec``; returns the path of the run report.

    Args:
        spec: the spec to run (the bundled demo when no path is given).
        target: changes to the spec's cloud target for this run only.
        planning: how the order of the services' move is planned.
        adapting: how the model is adapted to the cloud's data.
        integrating: how the adapted model is checked against the on-prem one before cutover.
        optimizing: how its serving is tuned after integration (set enabled off to skip it).
    """
    run_name, started, folder = run_folder()  # the same on a Retry of this flow run
    root, run_dir = str(state_dir()), str(folder)

    # 1. The spec: the bundled demo unless a path is given; bad input fails here, never retried.
    spec_path = spec.path or prepare_demo(root)
    loaded = check_spec(spec_path, target, cloud_open=True)

    # 2. The cloud, when the spec leaves the provider open: the migration planned and priced on
    #    every candidate provider and region, and the run moves to the recommended one (its prices,
    #    region and object store from here on). The choice is recorded: a Retry, and every later
    #    run of this migration, keeps it.
    comparison = None
    if loaded.cloud_open:
        loaded, comparison, chosen_how = choose_cloud(loaded, run_dir, run_name, planning.seed)

    # 3. The object store: start the embedded server or reach the cloud's; retried if transient.
    #    Every later task keeps its result there, so Retry on a failed run resumes at the failed
    #    task (these three are quick and run again on a Retry: the store must be up anyway).
    info = reach_object_store(loaded.spec.target, root, loaded.spec.name)
    storage = result_storage(loaded.spec.target)
    validate_source, drift, plan_migration, migrate_dataset, validate_target, adapt_model, publish_data_docs, integrate, report_task = (
        persisted(t, storage) for t in (validate_source_task, drift_task, plan_migration_task, migrate_dataset_task, validate_target_task,
                                        adapt_model_task, publish_data_docs_task, integrate_task, write_run_report))

    # 4. Source validation: bad data stops the run here, before anything moves; never retried.
    #    Each dataset's profile is saved with the run; the drift report compares them.
    gates = [validate_source(loaded, d.name, run_dir) for d in loaded.spec.datasets if not is_s3(d.location)]
    profiles = {g.dataset: g.profile for g in gates}
    drifts = [drift(*pair, run_dir) for pair in comparisons(loaded.spec, profiles)]

    # 5. The plan: the yardsticks, the trained policy and the exact planner in the simulator, the
    #    cheapest kept; the data moves in its order.
    plan = plan_migration.submit(loaded, planning, run_dir) if loaded.spec.services else None

    # 6. The data, one task per dataset: checksummed, verified, resumed (not restarted) on retry;
    #    then each copy's gate: the same objects and hashes as the source.
    plans = plan.result() if plan else []
    order = dataset_order(loaded.spec, cheapest(plans)) if plans else [d.name for d in loaded.spec.datasets]
    datasets = sorted(loaded.spec.datasets, key=lambda d: order.index(d.name))
    copies = [migrate_dataset.submit(loaded, d.name, root) for d in datasets]
    checks = [validate_target.submit(loaded, d.name, root, run_dir, wait_for=[c])
              for d, c in zip(datasets, copies, strict=True) if not is_s3(d.location)]
    summaries = [c.result() for c in copies]
    copy_gates = [c.result() for c in checks]

    # 7. The model, fine-tuned on the verified cloud copy of its target data, compared with the model
    #    as it is and with one trained from scratch, registered; it trains while the Data Docs upload.
    adapted = adapt_model.submit(loaded, adapting, root, run_dir) if loaded.spec.model else None

    # 8. The gates' Data Docs next to the data; the report, in the run's folder and as an artifact.
    docs_uri = publish_data_docs(loaded, root, run_dir, run_name)
    adaptation = adapted.result() if adapted else None

    # 9. Integration: the candidate and the on-prem model served side by side with the same API; it
    #    is promoted, and the cutover bundle written, only when it keeps the on-prem answers, does
    #    better on the cloud's data and meets the latency SLO. A failed check fails the run here.
    integration = (integrate(loaded, adaptation.version, integrating, root, run_dir)
                   if adaptation and adaptation.registry_uri else None)

    # 10. Serving: a seeded search over runtimes, precisions, batching, threads and workers, each
    #    configuration measured against the real server under open-loop load; the one that meets
    #    the SLO at the least cost per prediction goes into the cutover bundle.
    serving = (optimize_stage(loaded, integration.candidate, optimizing, root, run_dir, storage)
               if integration and optimizing.enabled else None)
    report = RunReport(
        run_name=run_name, spec_name=loaded.spec.name, spec_path=str(loaded.path), spec_sha256=loaded.sha256,
        started_at=started, finished_at=dt.datetime.now(dt.timezone.utc),
        stages=(spec_stage(loaded), *([cloud_stage(comparison, loaded, run_dir, chosen_how)] if comparison else []), validation_stage(gates, "source", run_dir), drift_stage(drifts),
                *([plan_stage(plans, run_dir, order)] if plans else []), store_stage(info),
                data_stage(summaries), validation_stage(copy_gates, "target", run_dir, docs_uri),
                *([adapt_stage(adaptation, run_dir)] if adaptation else []),
                *([integrate_stage(integration, run_dir)] if integration else []),
                *([serving_stage(serving, run_dir)] if serving else [])),
    )
    return report_task(report, run_dir)
