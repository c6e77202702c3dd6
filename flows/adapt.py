"""The ``adapt-model`` flow: fine-tune the on-prem model to the cloud's data (Lightning), compare it
with the model as it is and with one trained from scratch, and register it with its model card.

Deployed on the GPU pool (bf16-mixed there; it runs on the CPU where there is no GPU). Training
checkpoints are kept in the state folder, so a retried run resumes at its last epoch.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.runtime import flow_run

from lepton_core.spec.params import AdaptOptions, SpecRef, TargetOverrides
from lepton_core.state import runs_dir, state_dir
from tasks.adapt import adapt_model_task
from tasks.spec import check_spec, prepare_demo


@flow(name="adapt-model", description="Adapt the on-prem model to the cloud's data with Lightning transfer learning.")
def adapt_model_flow(spec: SpecRef = SpecRef(), target: TargetOverrides = TargetOverrides(),
                     adapting: AdaptOptions = AdaptOptions()) -> dict:
    """Adapt the spec's model; returns its version, registry URI and the three models' test accuracy.

    Args:
        spec: the spec (the bundled demo when no path is given).
        target: changes to the spec's cloud target for this run only.
        adapting: how to adapt (strategy, initial weights, labels, budget).
    """
    root = str(state_dir())
    run_dir = str(runs_dir() / f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{flow_run.get_name() or 'local'}")
    loaded = check_spec(spec.path or prepare_demo(root), target)
    result = adapt_model_task(loaded, adapting, root, run_dir)
    return {"model": result.model, "version": result.version, "registry_uri": result.registry_uri,
            "checkpoint": str(result.checkpoint), "accuracy": {k: m.accuracy for k, m in result.metrics.items()}}
