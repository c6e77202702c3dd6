"""The ``adapt-model`` flow: fine-tune the on-prem model to the cloud's data (Lightning), compare it
with the model as it is and with one trained from scratch, and register it with its model card.

Deployed on the GPU pool (bf16-mixed there; it runs on the CPU where there is no GPU). Training
checkpoints are kept in the state folder, so a retried run resumes at its last epoch.
"""

from __future__ import annotations

from prefect import flow

from flows._run import failure_summary, run_folder
from lepton_core.spec.params import AdaptOptions, SpecRef, TargetOverrides
from lepton_core.state import state_dir
from tasks.adapt import adapt_model_task
from tasks.results import persisted, result_storage
from tasks.spec import check_spec, prepare_demo
from tasks.store import reach_object_store


@flow(name="adapt-model", description="Adapt the on-prem model to the cloud's data with Lightning transfer learning.",
      on_failure=[failure_summary])
def adapt_model_flow(spec: SpecRef = SpecRef(), target: TargetOverrides = TargetOverrides(),
                     adapting: AdaptOptions = AdaptOptions()) -> dict:
    """Adapt the spec's model; returns its version, registry URI and the three models' test accuracy.

    Args:
        spec: the spec (the bundled demo when no path is given).
        target: changes to the spec's cloud target for this run only.
        adapting: how to adapt (strategy, initial weights, labels, budget).
    """
    root, run_dir = str(state_dir()), str(run_folder()[2])
    loaded = check_spec(spec.path or prepare_demo(root), target)
    reach_object_store(loaded.spec.target, root, loaded.spec.name)  # the cloud copy it trains on, and the registry
    result = persisted(adapt_model_task, result_storage(loaded.spec.target))(loaded, adapting, root, run_dir)
    return {"model": result.model, "version": result.version, "registry_uri": result.registry_uri,
            "checkpoint": str(result.checkpoint), "accuracy": {k: m.accuracy for k, m in result.metrics.items()}}
