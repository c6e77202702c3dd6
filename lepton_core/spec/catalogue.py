"""The priced instance catalogue: what the cloud offers, at what price, as of when and per whom."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lepton_core.spec.base import Name, StrictModel, by_name, unique_names

BUNDLED_CATALOGUES = ("aws-us-east-1",)


class InstanceType(StrictModel):
    """One machine type the cloud rents by the hour."""

    name: str = Field(min_length=1, max_length=64, description="The provider's name for it, e.g. m5.large.")
    family: Literal["general", "compute", "memory", "gpu"] = Field(description="What it is sized for.")
    vcpu: int = Field(ge=1, le=1024, description="Virtual CPUs.")
    memory_gb: float = Field(gt=0, le=32768, description="Memory in GB.")
    gpu: int = Field(default=0, ge=0, le=16, description="Number of GPUs.")
    gpu_model: str | None = Field(default=None, max_length=64, description="GPU model, when it has GPUs.")
    price_per_hour: float = Field(gt=0, le=1000, description="On-demand price in the catalogue's currency.")


class NetworkLink(StrictModel):
    """A dedicated link between the on-prem site and the cloud."""

    name: Name = Field(description="Name of the link option.")
    gbps: float = Field(gt=0, le=400, description="Nominal bandwidth in Gbit/s.")
    price_per_hour: float = Field(ge=0, le=1000, description="Port-hour price in the catalogue's currency.")
    efficiency: float = Field(default=0.75, gt=0, le=1, description="Share of the nominal rate achieved.")


class Catalogue(StrictModel):
    """A dated, sourced price list for one provider and region."""

    provider: str = Field(min_length=1, max_length=32, description="Cloud provider, e.g. aws.")
    region: str = Field(min_length=1, max_length=64, description="Region the prices are for.")
    currency: Literal["USD"] = Field(default="USD", description="Currency of every price.")
    as_of: dt.date = Field(description="Date the prices were read.")
    sources: tuple[str, ...] = Field(min_length=1, description="Where each price comes from.")
    storage_gb_month: float = Field(ge=0, le=10, description="Object storage price per GB-month.")
    transfer_in_per_gb: float = Field(ge=0, le=10, description="Data transfer into the cloud, per GB.")
    transfer_out_per_gb: float = Field(ge=0, le=10, description="Data transfer out of the cloud, per GB.")
    instances: tuple[InstanceType, ...] = Field(min_length=1, description="Instance types on offer.")
    links: tuple[NetworkLink, ...] = Field(default=(), description="Dedicated link options.")

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        unique_names(self.instances, "instances")
        unique_names(self.links, "links")
        return self

    def instance(self, name: str) -> InstanceType:
        """The instance type called ``name``; KeyError if the catalogue has none."""
        return by_name(self.instances, name)

    @property
    def instance_names(self) -> tuple[str, ...]:
        return tuple(it.name for it in self.instances)


def catalogue_path(ref: str, base_dir: Path) -> Path:
    """The file for a catalogue reference: a bundled catalogue's name, or a YAML path (relative
    paths are relative to ``base_dir``, the spec's folder)."""
    if ref in BUNDLED_CATALOGUES:
        return Path(str(resources.files("lepton_core") / "catalogue" / f"{ref}.yaml"))
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path
