"""The migration spec: one YAML file that describes what moves, where to, and under which limits.

Every model is frozen and rejects unknown fields; every field has a description and bounds. The
same models render as the Prefect UI's parameter forms. Checks that need the file system (paths
exist, the catalogue knows an instance type) live in ``lepton_core.spec.loader``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from lepton_core.spec.base import Name, SpecFieldError, StrictModel, by_name, unique_names
from lepton_core.spec.catalogue import BUNDLED_CATALOGUES

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _check_location(value: str) -> str:
    """A local path, or ``s3://bucket[/prefix]``; any other URL scheme is refused."""
    m = _SCHEME_RE.match(value)
    if m is None:
        return value
    if m.group(1) != "s3":
        raise ValueError(f"unsupported location scheme {m.group(1)!r}: use a local path or s3://bucket/prefix")
    bucket = value[5:].split("/", 1)[0]
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"invalid bucket name {bucket!r} in {value!r}")
    return value


def _check_bucket(value: str) -> str:
    if not _BUCKET_RE.match(value) or ".." in value:
        raise ValueError("must be 3-63 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit")
    return value


def _check_endpoint(value: str | None) -> str | None:
    if value is None or value == "embedded" or re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        return value
    raise ValueError("must be 'embedded', an http(s):// URL, or left out for AWS S3")


Location = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_check_location)]
BucketName = Annotated[str, AfterValidator(_check_bucket)]
ClassName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^/\\\x00]+$")]

Architecture = Literal["resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0"]
Strategy = Literal["retire", "retain", "relocate", "rehost", "replatform", "repurchase", "refactor"]


def is_s3(location: str) -> bool:
    """True for an ``s3://`` URI, False for a local path."""
    return location.startswith("s3://")


class ColumnSpec(StrictModel):
    """An expected column of a table dataset."""

    name: str = Field(min_length=1, max_length=256, description="Column name.")
    dtype: Literal["int", "float", "str", "bool", "datetime"] = Field(description="Expected type.")
    nullable: bool = Field(default=True, description="Whether empty values are allowed.")
    unique: bool = Field(default=False, description="Whether every value must be distinct (a key).")
    min: float | None = Field(default=None, description="Smallest allowed value (numbers).")
    max: float | None = Field(default=None, description="Largest allowed value (numbers).")
    values: tuple[str | int | float | bool, ...] | None = Field(
        default=None, max_length=10_000, description="The allowed values, when the set is closed."
    )

    @model_validator(mode="after")
    def _range(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise SpecFieldError(("min",), f"min ({self.min}) is greater than max ({self.max})")
        return self


class DriftSpec(StrictModel):
    """Compare a dataset's distribution with another's: reported always, a gate only with a limit."""

    baseline: Name = Field(description="The dataset whose distribution this one is compared with (same kind).")
    limit: float | None = Field(
        default=None, ge=0, le=1,
        description="Largest distance (0 = same distribution, 1 = disjoint) any class or column may show; "
                    "none: report the drift without failing on it.",
    )


class DatasetSpec(StrictModel):
    """A dataset to migrate: an image folder (ImageFolder layout) or a CSV/Parquet table."""

    name: Name = Field(description="Unique dataset name; also its folder under the target prefix.")
    location: Location = Field(description="Local path (relative to the spec file) or s3://bucket/prefix.")
    kind: Literal["images", "table"] = Field(description="images: ImageFolder layout; table: CSV or Parquet.")
    splits: tuple[Name, ...] = Field(
        default=("train", "val", "test"),
        max_length=16,
        description="images: split folders, each in the ImageFolder layout; empty for one flat ImageFolder.",
    )
    classes: tuple[ClassName, ...] | None = Field(
        default=None, min_length=1, max_length=100_000, description="images: the expected class folders."
    )
    image_size: tuple[Annotated[int, Field(ge=1, le=65536)], Annotated[int, Field(ge=1, le=65536)]] | None = Field(
        default=None, description="images: expected (width, height) of every image."
    )
    image_mode: Literal["L", "RGB", "RGBA"] | None = Field(default=None, description="images: expected PIL mode.")
    columns: tuple[ColumnSpec, ...] | None = Field(
        default=None, min_length=1, max_length=10_000, description="table: the expected columns."
    )
    drift: DriftSpec | None = Field(
        default=None,
        description="How far this dataset may be from another's distribution (the model's target dataset "
                    "is compared with its source dataset unless it says otherwise).",
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> DatasetSpec:
        if self.kind == "table":
            for field in ("classes", "image_size", "image_mode"):
                if getattr(self, field) is not None:
                    raise SpecFieldError((field,), "only for kind 'images', but this dataset is a table")
            if not re.search(r"\.(csv|parquet)$", self.location, re.IGNORECASE):
                raise SpecFieldError(("location",), "a table must be a .csv or .parquet file")
        elif self.columns is not None:
            raise SpecFieldError(("columns",), "only for kind 'table', but this dataset is images")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise SpecFieldError(("classes",), "class names must be distinct")
        if self.columns is not None:
            unique_names(self.columns, "columns")
        return self


class ModelSpec(StrictModel):
    """The on-prem model to adapt to the cloud's data."""

    name: Name = Field(description="Model name in the registry.")
    architecture: Architecture = Field(description="torchvision architecture of the checkpoint.")
    checkpoint: Location = Field(description="Checkpoint file: local path (relative to the spec) or s3:// URI.")
    classes: tuple[ClassName, ...] = Field(min_length=2, max_length=100_000, description="Output classes, in order.")
    input_size: int = Field(default=224, ge=8, le=4096, description="Side of the square input in pixels.")
    source_dataset: Name = Field(description="The dataset the model was trained on (on-prem domain).")
    target_dataset: Name = Field(description="The cloud's dataset the model must be adapted to.")

    @model_validator(mode="after")
    def _classes(self) -> ModelSpec:
        if len(set(self.classes)) != len(self.classes):
            raise SpecFieldError(("classes",), "class names must be distinct")
        return self


class ServiceSpec(StrictModel):
    """A running service of the AI system, with its demand and what it depends on."""

    name: Name = Field(description="Unique service name.")
    cpu: float = Field(gt=0, le=1024, description="vCPUs it needs.")
    memory_gb: float = Field(gt=0, le=32768, description="Memory it needs, in GB.")
    gpu: int = Field(default=0, ge=0, le=16, description="GPUs it needs.")
    traffic_rps: float = Field(default=0, ge=0, le=10_000_000, description="Requests per second it serves.")
    data_gb: float = Field(default=0, ge=0, le=10_000_000, description="Data it owns that must move with it, in GB.")
    datasets: tuple[Name, ...] = Field(default=(), max_length=1000, description="Names of the datasets it owns.")
    depends_on: tuple[Name, ...] = Field(default=(), max_length=1000, description="Services it calls.")
    onprem_cost_per_hour: float = Field(default=0, ge=0, le=100_000, description="What it costs to run on-prem, per hour.")
    egress_gb_month: float = Field(default=0, ge=0, le=10_000_000,
                                   description="Data it sends out of the cloud each month (answers, exports), in GB; priced at the cloud's egress rate.")
    instance_type: str | None = Field(default=None, max_length=64, description="Pin to this cloud instance type; the planner chooses when left out.")
    strategy: Strategy | None = Field(default=None, description="Pin one of the 7 Rs; the planner chooses when left out.")


class TargetSpec(StrictModel):
    """Where the system moves to."""

    provider: Literal["aws", "azure", "gcp", "s3-compatible", "auto"] = Field(
        default="aws", description="Cloud provider; 'auto': the migrate flow compares the cloud_choice candidates first "
                                   "and moves to the one it recommends (its region and catalogue with it).")
    bucket: BucketName = Field(description="Bucket that receives the data, models and reports.")
    prefix: str = Field(
        default="lepton", max_length=512, pattern=r"^$|^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$",
        description="Key prefix under the bucket, without leading or trailing '/'.",
    )
    region: str = Field(default="us-east-1", min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$", description="Cloud region.")
    endpoint_url: Annotated[str | None, AfterValidator(_check_endpoint)] = Field(
        default=None, description="S3 endpoint: 'embedded' for lepton's local server, a URL, or left out for AWS S3."
    )
    registry_prefix: str = Field(
        default="registry", max_length=512, pattern=r"^$|^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$",
        description="Key prefix, under the target prefix, of the model registry (checkpoints and model cards).",
    )
    encryption: Literal["none", "AES256", "aws:kms"] = Field(default="AES256", description="Server-side encryption of every object.")
    kms_key_id: str | None = Field(default=None, max_length=2048, description="KMS key for encryption 'aws:kms'.")
    catalogue: str = Field(default="aws-us-east-1", min_length=1, max_length=1024, description="Bundled catalogue name or a catalogue YAML path.")

    @model_validator(mode="after")
    def _kms(self) -> TargetSpec:
        if self.provider == "auto":
            for field in ("region", "catalogue"):
                if field in self.model_fields_set:
                    raise SpecFieldError((field,), "chosen with the cloud when provider is 'auto': leave it out "
                                                   "(list private catalogues under cloud_choice.candidates)")
        if self.encryption == "aws:kms" and not self.kms_key_id:
            raise SpecFieldError(("kms_key_id",), "required when encryption is 'aws:kms'")
        if self.encryption != "aws:kms" and self.kms_key_id:
            raise SpecFieldError(("kms_key_id",), "only used with encryption 'aws:kms'")
        return self


class CloudChoiceSpec(StrictModel):
    """Which clouds and regions ``lepton compare-clouds`` (and the migrate flow, when the target's
    provider is 'auto') compares, and what decides between them."""

    candidates: tuple[Annotated[str, StringConstraints(min_length=1, max_length=1024)], ...] = Field(
        default=BUNDLED_CATALOGUES, min_length=1, max_length=50,
        description="Catalogues to compare: bundled names (" + ", ".join(BUNDLED_CATALOGUES) + ") or YAML paths "
                    "(relative to the spec) of private catalogues with negotiated prices.")
    objective: Literal["total_cost", "time_under_budget"] = Field(
        default="total_cost",
        description="total_cost: the least one-off plus running cost over budget.horizon_months; time_under_budget: "
                    "the soonest finish among the clouds whose one-off cost is within budget.migration_usd and whose "
                    "monthly cost is within budget.monthly_usd.")
    exact_max_workloads: int = Field(default=12, ge=0, le=64,
                                     description="Plan with the exact planner too when the system has at most this many services.")
    exact_seconds: float = Field(default=10.0, ge=0, le=3600, description="Seconds the exact planner may search per cloud.")

    @model_validator(mode="after")
    def _distinct(self) -> CloudChoiceSpec:
        seen: dict[str, int] = {}
        for i, ref in enumerate(self.candidates):
            if ref in seen:
                raise SpecFieldError(("candidates", i), f"listed twice (already candidates[{seen[ref]}])")
            seen[ref] = i
        return self


class SLOSpec(StrictModel):
    """Service-level objectives the migrated system must keep."""

    p95_latency_ms: float = Field(default=200, gt=0, le=600_000, description="95th-percentile latency of the model server, ms.")
    max_downtime_minutes: float = Field(default=15, ge=0, le=10_080, description="Longest cutover downtime allowed per service.")
    min_agreement: float = Field(default=0.98, ge=0, le=1, description="Share of on-prem answers the cloud model must keep.")


class BudgetSpec(StrictModel):
    """What the migration and the cloud may cost."""

    migration_usd: float = Field(ge=0, le=1e9, description="One-off migration budget (transfer, dual running).")
    monthly_usd: float = Field(ge=0, le=1e9, description="Monthly running budget in the cloud.")
    horizon_months: int = Field(default=12, ge=1, le=120, description="Months over which costs are compared.")


class MigrationSpec(StrictModel):
    """A whole migration: datasets, the model, services, the target, SLOs and budget."""

    version: Literal[1] = Field(default=1, description="Spec format version.")
    name: Name = Field(description="Name of this migration.")
    description: str = Field(default="", max_length=4000, description="Free text shown in reports.")
    datasets: tuple[DatasetSpec, ...] = Field(min_length=1, max_length=1000, description="Datasets to migrate.")
    model: ModelSpec | None = Field(default=None, description="The on-prem model to adapt and serve.")
    services: tuple[ServiceSpec, ...] = Field(default=(), max_length=1000, description="Services of the system.")
    target: TargetSpec = Field(description="The cloud target.")
    slo: SLOSpec = Field(default_factory=SLOSpec, description="Service-level objectives.")
    budget: BudgetSpec = Field(description="Budget limits.")
    cloud_choice: CloudChoiceSpec = Field(default_factory=CloudChoiceSpec, description="Clouds and regions to compare.")

    @model_validator(mode="after")
    def _references(self) -> MigrationSpec:
        unique_names(self.datasets, "datasets")
        unique_names(self.services, "services")
        datasets = {d.name: d for d in self.datasets}
        services = {s.name for s in self.services}
        for i, svc in enumerate(self.services):
            for j, ds in enumerate(svc.datasets):
                if ds not in datasets:
                    raise SpecFieldError(("services", i, "datasets", j), f"unknown dataset {ds!r} (known: {', '.join(datasets)})")
            for j, dep in enumerate(svc.depends_on):
                if dep == svc.name:
                    raise SpecFieldError(("services", i, "depends_on", j), f"service {dep!r} depends on itself")
                if dep not in services:
                    raise SpecFieldError(("services", i, "depends_on", j), f"unknown service {dep!r} (known: {', '.join(sorted(services))})")
        cycle = find_cycle({s.name: s.depends_on for s in self.services})
        if cycle:
            first = next(i for i, s in enumerate(self.services) if s.name == cycle[0])
            raise SpecFieldError(("services", first, "depends_on"), "dependency cycle: " + " -> ".join(cycle + [cycle[0]]))
        for i, d in enumerate(self.datasets):
            if d.drift is None:
                continue
            base = d.drift.baseline
            if base == d.name:
                raise SpecFieldError(("datasets", i, "drift", "baseline"), "a dataset cannot be its own baseline")
            if base not in datasets:
                raise SpecFieldError(("datasets", i, "drift", "baseline"), f"unknown dataset {base!r} (known: {', '.join(datasets)})")
            if datasets[base].kind != d.kind:
                raise SpecFieldError(("datasets", i, "drift", "baseline"), f"dataset {base!r} is {datasets[base].kind}; {d.name!r} is {d.kind}")
        if self.model is not None:
            for field in ("source_dataset", "target_dataset"):
                ref = getattr(self.model, field)
                if ref not in datasets:
                    raise SpecFieldError(("model", field), f"unknown dataset {ref!r} (known: {', '.join(datasets)})")
                if datasets[ref].kind != "images":
                    raise SpecFieldError(("model", field), f"dataset {ref!r} is a table; the model needs images")
                declared = datasets[ref].classes
                if declared is not None and set(declared) != set(self.model.classes):
                    raise SpecFieldError(("model", "classes"), f"differ from the classes of dataset {ref!r}")
        return self

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset called ``name``; KeyError if there is none."""
        return by_name(self.datasets, name)

    def drift_pairs(self) -> list[tuple[str, str, float | None]]:
        """(dataset, baseline, limit) for every comparison the drift report makes: each dataset's own
        ``drift``, and the model's target dataset against its source dataset when it names none."""
        pairs = [(d.name, d.drift.baseline, d.drift.limit) for d in self.datasets if d.drift is not None]
        if self.model is not None and self.model.source_dataset != self.model.target_dataset:
            if self.dataset(self.model.target_dataset).drift is None:
                pairs.append((self.model.target_dataset, self.model.source_dataset, None))
        return pairs


def find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str]:
    """One dependency cycle as a list of names in order (empty when the graph is acyclic).

    Iterative depth-first search, so a long dependency chain cannot exhaust the call stack.
    """
    done: set[str] = set()
    for root in graph:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        todo = [iter(graph.get(root, ()))]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                todo.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                return path[path.index(nxt):]
            elif nxt not in done and nxt in graph:
                path.append(nxt)
                on_path.add(nxt)
                todo.append(iter(graph[nxt]))
    return []
