"""The priced instance catalogue: what a cloud region offers, at what price, as of when, per whom.

Lepton ships one catalogue per provider and region it compares (``BUNDLED_CATALOGUES``); a spec
names one of them or a YAML file of its own (negotiated prices, another region). Every figure has
a source and a date (``sources``: each covers some of the sections ``instances``, ``storage``,
``transfer`` and ``links``, and together they cover all four). The object store says whether
lepton's boto3 data path reaches it (S3 itself, or an S3-compatible endpoint such as Google Cloud
Storage's interoperability endpoint) or whether the data needs another path (Azure Blob Storage).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lepton_core.spec.base import Name, SpecFieldError, StrictModel, by_name, unique_names

BUNDLED_CATALOGUES = ("aws-us-east-1", "aws-eu-west-1", "azure-eastus", "azure-westeurope", "gcp-us-central1",
                      "gcp-europe-west4")
SECTIONS = ("instances", "storage", "transfer", "links")
Section = Literal["instances", "storage", "transfer", "links"]

# How each provider's object store is reached when a catalogue does not say (a private catalogue of
# a provider lepton knows); any other provider must say.
DEFAULT_OBJECT_STORES: dict[str, dict[str, Any]] = {
    "aws": {"name": "Amazon S3", "s3_compatible": True, "endpoint": None,
            "access": "boto3 against S3 itself (the default endpoint of the region)"},
    "gcp": {"name": "Google Cloud Storage", "s3_compatible": True, "endpoint": "https://storage.googleapis.com",
            "access": "boto3 against the XML API's interoperability endpoint, with HMAC keys of a service account"},
    "azure": {"name": "Azure Blob Storage", "s3_compatible": False, "endpoint": None,
              "access": "not S3-compatible: put an S3 gateway in front of it and set target.endpoint_url, "
                        "or copy with azcopy / the azure-storage-blob SDK"},
}


class InstanceType(StrictModel):
    """One machine type the cloud rents by the hour."""

    name: str = Field(min_length=1, max_length=64, description="The provider's name for it, e.g. m5.large.")
    family: Literal["general", "compute", "memory", "gpu"] = Field(description="What it is sized for.")
    vcpu: int = Field(ge=1, le=1024, description="Virtual CPUs.")
    memory_gb: float = Field(gt=0, le=32768, description="Memory in GB.")
    gpu: int = Field(default=0, ge=0, le=16, description="Number of GPUs.")
    gpu_model: str | None = Field(default=None, max_length=64, description="GPU model, when it has GPUs.")
    price_per_hour: float = Field(gt=0, le=1000, description="On-demand price in the catalogue's currency.")

    @model_validator(mode="after")
    def _gpu(self) -> InstanceType:
        if self.family == "gpu" and self.gpu == 0:
            raise SpecFieldError(("gpu",), "a gpu-family instance type needs at least one GPU")
        return self


class NetworkLink(StrictModel):
    """A dedicated link between the on-prem site and the cloud."""

    name: Name = Field(description="Name of the link option.")
    gbps: float = Field(gt=0, le=400, description="Nominal bandwidth in Gbit/s.")
    price_per_hour: float = Field(ge=0, le=1000, description="Port-hour price in the catalogue's currency.")
    efficiency: float = Field(default=0.75, gt=0, le=1, description="Share of the nominal rate achieved.")


class Source(StrictModel):
    """Where some of a catalogue's figures come from, and when they were read."""

    text: str = Field(min_length=1, max_length=1000, description="The price page, contract or quote, e.g. its URL.")
    covers: tuple[Section, ...] = Field(default=SECTIONS, min_length=1, description="The sections whose figures it gives.")
    as_of: dt.date | None = Field(default=None, description="When they were read; the catalogue's as_of when left out.")


class ObjectStore(StrictModel):
    """The provider's object store and whether lepton's boto3 data path reaches it."""

    name: str = Field(min_length=1, max_length=64, description="The service, e.g. Amazon S3.")
    s3_compatible: bool = Field(description="Whether boto3 reaches it through the S3 API.")
    endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https?://\S+$",
                                 description="The S3 endpoint when it is not AWS's default.")
    access: str = Field(default="", max_length=500, description="How the data gets there, in a few words.")


class Catalogue(StrictModel):
    """A dated, sourced price list for one provider and region."""

    provider: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$", description="Cloud provider, e.g. aws.")
    region: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$", description="Region the prices are for.")
    currency: Literal["USD"] = Field(default="USD", description="Currency of every price.")
    as_of: dt.date = Field(description="Date the prices were read.")
    sources: tuple[Source, ...] = Field(min_length=1, description="Where the figures come from: a string covers all of them.")
    storage_gb_month: float = Field(ge=0, le=10, description="Object storage price per GB-month.")
    transfer_in_per_gb: float = Field(ge=0, le=10, description="Data transfer into the cloud, per GB.")
    transfer_out_per_gb: float = Field(ge=0, le=10, description="Data transfer out of the cloud to the internet, per GB.")
    object_store: ObjectStore = Field(description="Its object store; filled in for aws, gcp and azure when left out.")
    instances: tuple[InstanceType, ...] = Field(min_length=1, description="Instance types on offer.")
    links: tuple[NetworkLink, ...] = Field(default=(), description="Dedicated link options.")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "object_store" not in data and data.get("provider") in DEFAULT_OBJECT_STORES:
            data = {**data, "object_store": DEFAULT_OBJECT_STORES[data["provider"]]}
        return data

    @field_validator("sources", mode="before")
    @classmethod
    def _plain_sources(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _checks(self) -> Catalogue:
        unique_names(self.instances, "instances")
        unique_names(self.links, "links")
        covered = {s for src in self.sources for s in src.covers}
        missing = [s for s in SECTIONS if s not in covered and (s != "links" or self.links)]
        if missing:
            raise SpecFieldError(("sources",), f"no source for the {', '.join(missing)} figures")
        for i, src in enumerate(self.sources):
            if src.as_of is not None and src.as_of > self.as_of:
                raise SpecFieldError(("sources", i, "as_of"), f"later than the catalogue's as_of ({self.as_of})")
        return self

    @property
    def name(self) -> str:
        """``provider-region``, the name a spec uses for a bundled catalogue."""
        return f"{self.provider}-{self.region}"

    def instance(self, name: str) -> InstanceType:
        """The instance type called ``name``; KeyError if the catalogue has none."""
        return by_name(self.instances, name)

    @property
    def instance_names(self) -> tuple[str, ...]:
        return tuple(it.name for it in self.instances)

    def source_of(self, section: str) -> list[str]:
        """'text (as of date)' of every source of a section's figures."""
        return [f"{s.text} (as of {s.as_of or self.as_of})" for s in self.sources if section in s.covers]


def catalogue_path(ref: str, base_dir: Path) -> Path:
    """The file for a catalogue reference: a bundled catalogue's name, or a YAML path (relative
    paths are relative to ``base_dir``, the spec's folder)."""
    if ref in BUNDLED_CATALOGUES:
        return Path(str(resources.files("lepton_core") / "catalogue" / f"{ref}.yaml"))
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path
