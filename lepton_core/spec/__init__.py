"""The migration spec: pydantic models, the priced catalogue, and the checked YAML loader."""

from lepton_core.spec.catalogue import Catalogue, InstanceType, NetworkLink
from lepton_core.spec.loader import LoadedSpec, SpecError, SpecProblem, load_spec
from lepton_core.spec.models import (
    BudgetSpec,
    DatasetSpec,
    MigrationSpec,
    ModelSpec,
    ServiceSpec,
    SLOSpec,
    TargetSpec,
    is_s3,
)

__all__ = [
    "BudgetSpec", "Catalogue", "DatasetSpec", "InstanceType", "LoadedSpec", "MigrationSpec", "ModelSpec",
    "NetworkLink", "SLOSpec", "ServiceSpec", "SpecError", "SpecProblem", "TargetSpec", "is_s3", "load_spec",
]
