"""Create what lepton's deployments need on a Prefect server: the work pools and the GPU limit.

    .venv/bin/python deployments/setup.py [--gpu-slots N]

against the server in PREFECT_API_URL (or the active Prefect profile). Idempotent: pools that
exist are left as they are (their settings may have been tuned in the UI), and the limit is set
to --gpu-slots. Then deploy with
``prefect --no-prompt deploy --prefect-file deployments/prefect.yaml --all`` and start workers
(see the README: "Deploy to work pools").
"""

from __future__ import annotations

import argparse
import sys

POOLS = {
    "cpu": "Runs lepton's CPU flows: migrate (data, validation, planning, integration) and the nightly validation.",
    "gpu": "Runs lepton's training flows (adapt-model, train-planner) on GPU machines; each run holds a slot of "
           "the `gpu` concurrency limit while it trains.",
}
GPU_LIMIT = "gpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-slots", type=int, default=1,
                        help="how many runs may train on GPUs at once (the `gpu` global concurrency limit; default 1)")
    args = parser.parse_args(argv)
    if args.gpu_slots < 1:
        print(f"error: --gpu-slots must be at least 1, got {args.gpu_slots}", file=sys.stderr)
        return 2

    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL
    from prefect.workers.process import ProcessWorker

    api = PREFECT_API_URL.value()
    if not api:
        print("error: PREFECT_API_URL is not set: point it at your Prefect server "
              "(for instance http://127.0.0.1:4200/api)", file=sys.stderr)
        return 2
    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        try:
            client.hello()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the same message
            print(f"error: cannot reach the Prefect server at {api}: {exc}", file=sys.stderr)
            return 1
        for name, description in POOLS.items():
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template,
                                                       description=description))
                print(f"work pool {name}: created (process)")
            except ObjectAlreadyExists:
                print(f"work pool {name}: exists, left as it is")
        client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, args.gpu_slots)
        print(f"global concurrency limit {GPU_LIMIT}: {args.gpu_slots} slot(s)")
    print("next: .venv/bin/prefect --no-prompt deploy --prefect-file deployments/prefect.yaml --all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
