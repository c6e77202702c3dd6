"""The cloud-choice task: when the spec leaves the provider open, plan and price the migration
on every candidate cloud and region, and move to the one the comparison recommends.

The choice is recorded per migration (``lepton_core.choice.record``): a Retry of the run, and any
later run of the same migration, keeps the cloud the first choice made instead of comparing again
(prices may have moved, and the exact planner stops on a time limit), so the data never ends up
split between two clouds. The comparison, its table and bar chart go into the run's folder
(``cloud/``) and Prefect artifacts either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lepton_core.choice.compare import Comparison, compare_clouds, comparison_lines, comparison_table
from lepton_core.choice.record import read_record, write_record
from lepton_core.fsutil import atomic_write_text
from lepton_core.spec import LoadedSpec
from tasks.artifacts import publish_chart


@task(name="choose-cloud")
def choose_cloud_task(loaded: LoadedSpec, run_dir: str, run_name: str, seed: int = 0) -> tuple[LoadedSpec, Comparison, str]:
    """The spec moving to the chosen cloud, the comparison it was chosen from, and how it was
    chosen (compared now, or kept from an earlier run). Writes ``cloud/comparison.json``,
    ``cloud/comparison.txt`` and ``cloud/clouds.png`` under ``run_dir``. Bad input (a spec without
    services, a cloud no service fits, no reachable cloud) fails fast, never retried."""
    from lepton_core.choice.chart import comparison_png
    from lepton_core.planner.planner import find_policy

    logger = get_run_logger()
    record = read_record(loaded)
    retried = record is not None and record.run == run_name  # a Retry of the run that chose: as it was
    if record is not None:
        comparison, chosen = Comparison.from_dict(record.comparison), record.chosen
        how = record.how if retried else (f"kept from run {record.run} ({record.chosen_at}): this migration is bound to it; "
                                          f"delete {record.path} or pin target.provider to choose again")
        logger.info("cloud: %s, %s", chosen, how)
    else:
        comparison = compare_clouds(loaded, policy=find_policy(), seed=seed,
                                    progress=lambda o: logger.info("cloud %s: %s plan, one-off $%.0f, $%.0f/month",
                                                                   o.catalogue, o.method, o.one_off, o.monthly))
        option = comparison.choice_for_migration()
        chosen = option.ref
        how = "compared in this run"
        if option.ref != comparison.recommended.ref:
            how += (f"; {comparison.recommended.catalogue}'s object store is not reachable through lepton's S3 data path "
                    "(set target.endpoint_url to an S3 gateway to move there), so the best one it reaches")
        path = write_record(loaded, chosen, run_name, comparison.to_dict(), how)
        logger.info("cloud: %s (%s); recorded in %s", chosen, comparison.margin, path)
    lines = comparison_lines(comparison) + [f"moving to {chosen}: {how}"]
    out = Path(run_dir) / "cloud"
    chart = comparison_png(comparison, out / "clouds.png")
    atomic_write_text(out / "comparison.txt", "\n".join(lines) + "\n")
    atomic_write_text(out / "comparison.json", json.dumps({"chosen": chosen, "how": how, **comparison.to_dict()}, indent=2))
    if retried:  # the first attempt published the artifacts
        return loaded.with_cloud(chosen), comparison, how
    create_markdown_artifact(key="cloud-choice", markdown="```\n" + "\n".join(lines) + "\n```\n",
                             description=f"Cloud choice for {loaded.spec.name}")
    create_table_artifact(key="cloud-comparison", table=comparison_table(comparison),
                          description=f"Candidate clouds for {loaded.spec.name}, best first")
    publish_chart(chart, "cloud-chart", f"Cost of each candidate cloud for {loaded.spec.name}")
    return loaded.with_cloud(chosen), comparison, how
