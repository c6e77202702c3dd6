"""The migration manifest: every object of a dataset copy (key, size, SHA-256, ETag, source path).

It is written last, after every object is verified, so a manifest exists only for a complete copy.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

MANIFEST_NAME = "_lepton_manifest.json"


@dataclass(frozen=True, slots=True)  # a validated dataclass: a manifest holds one per object, and reads in half a model's time
class ManifestEntry:
    key: str = Field(description="Object key.")
    rel: str = Field(description="Path under the dataset root.")
    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes, hex.")
    etag: str = Field(description="The store's ETag when the copy was verified.")


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: str = Field(default="lepton-manifest/1")
    dataset: str
    source: str = Field(description="Where the data came from.")
    destination: str = Field(description="s3://bucket/prefix of the copy.")
    created_at: dt.datetime
    total_bytes: int
    objects: tuple[ManifestEntry, ...]

    def by_key(self) -> dict[str, ManifestEntry]:
        return {e.key: e for e in self.objects}
