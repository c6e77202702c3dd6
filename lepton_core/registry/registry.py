"""A model registry kept in the object store, next to the migrated data.

Layout under ``s3://BUCKET/ROOT/MODEL/`` (ROOT is the target's prefix and registry prefix):

- ``versions/VERSION/model.pt``: the checkpoint (lepton's format), its SHA-256 in the metadata;
- ``versions/VERSION/model-card.json``: the model card (lineage, metrics, settings), written
  last: a version exists once its card does, so no reader ever sees a half-written one;
- ``stages/STAGE.json``: which version holds a stage (``candidate``, ``production``), when it was
  promoted and what held it before.

Promotion is one conditional write: over the pointer's ETag as it was read, or only where there is
none. Two promotions racing for a stage cannot both win: the loser gets PromotionConflict, naming
the version that won. Registering the same version again rewrites the same objects (a version is
a hash of what the model depends on), so re-runs never duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_core.errors import LeptonError, UsageError
from lepton_core.store.objectstore import ObjectNotFound, ObjectStore, PreconditionFailed, StoreError

STAGES = ("candidate", "production")
CHECKPOINT, CARD = "model.pt", "model-card.json"
ANY = object()  # promote over whatever version holds the stage now


class PromotionConflict(LeptonError):
    """Another promotion of the same stage won, or the stage no longer holds the expected version."""


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    bucket: str
    prefix: str  # key prefix of the version's folder, ending in '/'
    card: dict

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def checkpoint_key(self) -> str:
        return self.prefix + CHECKPOINT

    @property
    def sha256(self) -> str:
        return self.card["checkpoint"]["sha256"]


@dataclass(frozen=True)
class StagePointer:
    model: str
    stage: str
    version: str
    promoted_at: str
    previous: str | None
    note: str
    etag: str


class Registry:
    """Versions and stages of the models under ``s3://bucket/root/``."""

    def __init__(self, store: ObjectStore, bucket: str, root: str) -> None:
        self.store, self.bucket, self.root = store, bucket, root.strip("/")

    @classmethod
    def for_target(cls, target, store: ObjectStore) -> Registry:
        """The registry of a spec's target: under its prefix and registry prefix."""
        return cls(store, target.bucket, "/".join(p for p in (target.prefix, target.registry_prefix) if p))

    def _key(self, model: str, *parts: str) -> str:
        return "/".join(p for p in (self.root, model, *parts) if p)

    def model_uri(self, model: str) -> str:
        """``s3://bucket/root/model/``: where ``model``'s versions and stages live."""
        return f"s3://{self.bucket}/{self._key(model)}/"

    # -- versions ----------------------------------------------------------------------------
    def register(self, model: str, version: str, checkpoint: str | os.PathLike, card: dict[str, Any]) -> ModelVersion:
        """Upload the checkpoint, check it arrived whole, then write the card (last). The card gets
        the checkpoint's URI; its ``checkpoint.sha256`` must be the file's."""
        from lepton_core.data.inventory import sha256_file

        checkpoint = Path(checkpoint)
        sha = sha256_file(checkpoint)
        if card.get("checkpoint", {}).get("sha256") not in (None, sha):
            raise ValueError(f"{checkpoint}: the card's checkpoint SHA-256 is not the file's")
        prefix = self._key(model, "versions", version) + "/"
        card = {**card, "model": model, "version": version,
                "checkpoint": {**card.get("checkpoint", {}), "uri": f"s3://{self.bucket}/{prefix}{CHECKPOINT}", "sha256": sha}}
        self.store.ensure_bucket(self.bucket)
        info = self.store.put_file(self.bucket, prefix + CHECKPOINT, checkpoint, metadata={"sha256": sha},
                                   content_type="application/octet-stream")
        if info.size != checkpoint.stat().st_size:
            raise StoreError(f"s3://{self.bucket}/{prefix}{CHECKPOINT}: {info.size} bytes after the upload, "
                             f"expected {checkpoint.stat().st_size}", transient=True)
        self.store.put_bytes(self.bucket, prefix + CARD, json.dumps(card, indent=2).encode(), content_type="application/json")
        return ModelVersion(model, version, self.bucket, prefix, card)

    def versions(self, model: str) -> list[ModelVersion]:
        """Every complete version of ``model`` (one with a card), oldest first; none where the
        bucket does not exist yet (nothing was registered)."""
        try:
            keys = [obj.key for obj in self.store.list(self.bucket, self._key(model, "versions") + "/")]
        except ObjectNotFound:  # (the store's error for a missing bucket)
            return []
        found = []
        for key in keys:
            if key.endswith("/" + CARD):
                version = key.rsplit("/", 2)[1]
                found.append(self.get(model, version))
        return sorted(found, key=lambda v: (v.card.get("created_at", ""), v.version))

    def get(self, model: str, version: str) -> ModelVersion:
        prefix = self._key(model, "versions", version) + "/"
        try:
            card = json.loads(self.store.get_bytes(self.bucket, prefix + CARD))
        except ObjectNotFound:
            raise UsageError(f"s3://{self.bucket}/{prefix}: no version {version!r} of model {model!r} in the registry") from None
        return ModelVersion(model, version, self.bucket, prefix, card)

    def fetch(self, version: ModelVersion, cache_dir: str | os.PathLike) -> Path:
        """The version's checkpoint as a local file (downloaded once), its SHA-256 checked against the card."""
        from lepton_core.data.inventory import sha256_file

        path = Path(cache_dir) / version.model / f"{version.version}.pt"
        if path.is_file() and sha256_file(path) == version.sha256:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store.download_file(self.bucket, version.checkpoint_key, path)
        if sha256_file(path) != version.sha256:
            path.unlink(missing_ok=True)
            raise StoreError(f"{version.uri}{CHECKPOINT}: its bytes do not match the card's SHA-256", transient=True)
        return path

    # -- stages ------------------------------------------------------------------------------
    def stage(self, model: str, stage: str) -> StagePointer | None:
        """Which version holds ``stage`` now (None when none does)."""
        _check_stage(stage)
        key = self._key(model, "stages", f"{stage}.json")
        info = self.store.head(self.bucket, key)
        if info is None:
            return None
        try:
            record = json.loads(self.store.get_bytes(self.bucket, key))
        except ObjectNotFound:
            return None
        return StagePointer(model, stage, record["version"], record["promoted_at"], record.get("previous"),
                            record.get("note", ""), info.etag)

    def promote(self, model: str, version: str, stage: str, *, expected: Any = ANY, note: str = "") -> StagePointer:
        """Make ``version`` hold ``stage``. With ``expected`` (a version, or None for an empty stage),
        only if the stage still holds it. Atomic; PromotionConflict when another promotion won."""
        _check_stage(stage)
        self.get(model, version)  # it must exist, complete
        current = self.stage(model, stage)
        held = current.version if current else None
        if expected is not ANY and held != expected:
            raise PromotionConflict(f"{model}: {stage} holds {held or 'no version'}, not {expected or 'no version'}; "
                                    f"not promoting {version}")
        record = {"model": model, "stage": stage, "version": version, "previous": held, "note": note,
                  "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        key = self._key(model, "stages", f"{stage}.json")
        try:
            info = self.store.put_bytes(self.bucket, key, json.dumps(record, indent=2).encode(), content_type="application/json",
                                        if_match=current.etag if current else None, if_absent=current is None)
        except PreconditionFailed:
            now = self.stage(model, stage)
            raise PromotionConflict(f"{model}: another promotion of {stage} won (it holds {now.version if now else 'no version'} "
                                    f"now); {version} was not promoted") from None
        return StagePointer(model, stage, version, record["promoted_at"], held, note, info.etag)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
