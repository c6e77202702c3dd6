"""Reach a spec's cloud target: start the embedded server if asked, make the bucket, prove we can
write there with the encryption the spec asks for."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lepton_core.spec.models import TargetSpec
from lepton_core.store import ObjectStore, target_settings

PROBE_KEY = "_lepton/target-check.json"


@dataclass(frozen=True)
class TargetInfo:
    """What a run needs to know about its target (no credentials)."""

    endpoint: str
    embedded: bool
    bucket: str
    prefix: str
    encryption: str
    bucket_created: bool

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        """A key under the target prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)


def open_store(target: TargetSpec, state_root: Path, *, start: bool = False) -> ObjectStore:
    """An ObjectStore for ``target`` (the embedded server is started first when ``start``)."""
    settings = target_settings(target.endpoint_url, target.region, state_root, start=start)
    return ObjectStore(settings, encryption=target.encryption, kms_key_id=target.kms_key_id)


def reach_target(target: TargetSpec, state_root: Path, *, spec_name: str) -> TargetInfo:
    """Start or reach the store, ensure the bucket, and write a small probe object under the prefix."""
    store = open_store(target, state_root, start=True)
    created = store.ensure_bucket(target.bucket)
    info = TargetInfo(
        endpoint=store.settings.display_endpoint,
        embedded=target.endpoint_url == "embedded",
        bucket=target.bucket,
        prefix=target.prefix,
        encryption=target.encryption,
        bucket_created=created,
    )
    probe = json.dumps({"spec": spec_name, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
    store.put_bytes(target.bucket, info.key(PROBE_KEY), probe, content_type="application/json")
    return info
