"""Object storage: the boto3 interface, the embedded SeaweedFS server, and reaching a spec's target."""

from __future__ import annotations

from pathlib import Path

from lepton_core.store.embedded import EmbeddedStore, ServerStatus
from lepton_core.store.objectstore import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    S3Uri,
    StoreAuthError,
    StoreError,
    StoreSettings,
)


def target_settings(endpoint_url: str | None, region: str, state_root: Path, *, start: bool = False) -> StoreSettings:
    """How to reach a target: the embedded server's endpoint and generated credentials for
    ``endpoint_url == "embedded"`` (started first when ``start``), else boto3's chain."""
    if endpoint_url == "embedded":
        from lepton_core.state import store_dir

        embedded = EmbeddedStore(store_dir(state_root))
        if start:
            embedded.up()
        return embedded.settings()
    return StoreSettings(endpoint_url=endpoint_url, region=region)


__all__ = [
    "EmbeddedStore", "ObjectInfo", "ObjectNotFound", "ObjectStore", "PreconditionFailed", "S3Uri", "ServerStatus", "StoreAuthError",
    "StoreError", "StoreSettings", "target_settings",
]
