"""Tasks for the spec: build the bundled demo on first use, then load and check the spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import get_run_logger, task

from lepton_core.spec import LoadedSpec, load_spec
from lepton_core.spec.params import TargetOverrides


@task(name="prepare-demo")
def prepare_demo(state_root: str) -> str:
    """The bundled demo's spec path, building the demo into the state folder if it is not there."""
    from lepton_core.demo.sample import SPEC_NAME, build_sample
    from lepton_core.state import demo_dir

    dest = demo_dir(Path(state_root))
    if (dest / SPEC_NAME).is_file():
        return str(dest / SPEC_NAME)
    logger = get_run_logger()
    return str(build_sample(dest, force=True, progress=logger.info))


@task(name="check-spec")
def check_spec(spec_path: str, overrides: TargetOverrides, cloud_open: bool = False) -> LoadedSpec:
    """Load and check the spec, then apply this run's target overrides. Bad input: never retried.

    A spec whose provider is 'auto' is put on the cloud its migration was recorded moving to
    (``lepton_core.choice.record.settled``), unless ``cloud_open`` (the migrate flow chooses)."""
    from lepton_core.choice.record import settled

    loaded = load_spec(spec_path)
    spec = overrides.apply(loaded.spec)
    if not cloud_open:
        loaded = settled(dataclasses.replace(loaded, spec=spec))
        spec = loaded.spec
    get_run_logger().info("spec %s: %d datasets, %d services, target s3://%s/%s",
                          spec.name, len(spec.datasets), len(spec.services), spec.target.bucket, spec.target.prefix)
    return dataclasses.replace(loaded, spec=spec)
