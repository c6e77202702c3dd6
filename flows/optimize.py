"""The ``optimize-serving`` flow: find the serving configuration of a registered model that meets
the latency SLO at the least cost, and put it in the cutover bundle.

Each measurement is its own task against the real model server; the study is kept in an Optuna
journal in the state folder, so a Retry (or the next scheduled run) continues it. Deployed with a
weekly schedule (``deployments/prefect.yaml``), so a new candidate version, or a new runtime, is
tuned without anyone asking; the ``migrate`` flow runs the same stage after integration.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows._run import failure_summary, run_folder
from lepton_core.optimize.study import run_study
from lepton_core.spec.params import OptimizeOptions, SpecRef, TargetOverrides
from lepton_core.state import state_dir
from tasks.optimize import finish_optimization_task, measure_serving_task, prepare_optimization_task
from tasks.results import persisted, result_storage
from tasks.spec import check_spec, prepare_demo
from tasks.store import reach_object_store


def optimize_stage(loaded, model: str | None, options: OptimizeOptions, root: str, run_dir: str, storage):
    """Prepare, the study (one task per measurement), finish: shared by this flow and ``migrate``."""
    prepare_task, measure_task, finish_task = (persisted(t, storage) for t in (
        prepare_optimization_task, measure_serving_task, finish_optimization_task))
    if options.fresh:
        measure_task = measure_task.with_options(refresh_cache=True)
    job = prepare_task(loaded, model, options, root, run_dir)
    study = run_study(job.study_name, job.journal, lambda c: measure_task(job, c), loaded.catalogue,
                      device=job.harness.device, cores=job.cores, settings=job.study,
                      say=get_run_logger().info, say_trials=False)  # each measure task logs its own trial
    return finish_task(loaded, job, study, root)


@flow(name="optimize-serving", description="Tune how a registered model is served: the SLO met at the least cost.",
      on_failure=[failure_summary])
def optimize_serving_flow(spec: SpecRef = SpecRef(), model: str | None = None, target: TargetOverrides = TargetOverrides(),
                          optimizing: OptimizeOptions = OptimizeOptions()) -> dict:
    """Tune the serving of the spec's model; returns the chosen configuration and its figures.

    Args:
        spec: the spec (the bundled demo when no path is given).
        model: the registered version to tune (name or s3:// URI); empty: the one holding candidate.
        target: changes to the spec's cloud target for this run only.
        optimizing: the search's budget, the load steps, the accuracy tolerance.
    """
    root, run_dir = str(state_dir()), str(run_folder()[2])
    loaded = check_spec(spec.path or prepare_demo(root), target)
    reach_object_store(loaded.spec.target, root, loaded.spec.name)
    result = optimize_stage(loaded, model, optimizing, root, run_dir, result_storage(loaded.spec.target))
    return {"model": result.model, "version": result.version, "serving": result.chosen["measurement"]["candidate"],
            "placement": result.chosen["placement"], "speedup_vs_baseline": result.speedup_vs_baseline,
            "bundle_uri": result.bundle_uri, "summary": result.summary()}
