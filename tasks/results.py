"""Task results kept in the migration's own object store, so that Retry resumes.

When someone presses Retry on a failed flow run, Prefect runs the flow again from the top with
the same run id: a task whose result was persisted under its cache key (inputs, task source, run
id) comes back Cached instead of running, and the run continues at the task that failed. That only
works when every worker that may pick up the retry reads the same results, so they go to the
object store the data goes to, under ``PREFIX/_lepton/prefect-results/``, encrypted as the spec
asks, through lepton's own store client: the credentials come from where the run's other S3 calls
get theirs (the embedded server's state folder, or boto3's chain), never from Prefect's database.

The store may be down for a while mid-run (a restart, a network blip). Prefect does not retry a
result write that fails: it logs it and the task's result is simply not kept, so a later Retry would
run that task again; and a failed read counts as "not cached", so the task would run again now. Both
therefore wait out transient store errors, with exponential backoff and jitter, for up to
``RESULT_PATIENCE_S`` seconds; an object that is not there is answered at once.

``LeptonObjectStore`` is the Prefect storage block; ``persisted(task, storage)`` is a task that
keeps its results there.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from prefect.filesystems import WritableFileSystem
from prefect._internal.compatibility.async_dispatch import async_dispatch
from pydantic import Field

from lepton_core.errors import is_transient
from lepton_core.spec import TargetSpec

RESULTS_DIR = "_lepton/prefect-results"
RESULT_PATIENCE_S = 120.0  # how long a result read or write waits for a store that is down
_log = logging.getLogger("prefect.lepton.results")
T = TypeVar("T")


def patiently(call: Callable[[], T], what: str) -> T:
    """``call()``, tried again on transient errors (exponential backoff with jitter, 0.5 s to 10 s
    apart) until it succeeds or ``RESULT_PATIENCE_S`` have passed; then its last error is raised."""
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

    def warn(state) -> None:
        _log.warning("%s: %s; trying again in %.1f s", what, state.outcome.exception(), state.next_action.sleep)

    for attempt in Retrying(retry=retry_if_exception(is_transient), stop=stop_after_delay(RESULT_PATIENCE_S),
                            wait=wait_exponential_jitter(initial=0.5, max=10.0), before_sleep=warn, reraise=True):
        with attempt:
            return call()
    raise AssertionError("unreachable")  # Retrying either returns the call's value or raises


class LeptonObjectStore(WritableFileSystem):
    """Prefect result storage in a lepton target's object store (no credentials kept here)."""

    _block_type_name = "Lepton Object Store"
    _description = "Task results in the migration's object store; credentials come from the worker's environment."

    endpoint_url: str = Field(description='The target\'s endpoint: "embedded", an S3 endpoint URL, or "" for AWS S3.')
    region: str = Field(default="us-east-1", description="Region to sign requests for.")
    bucket: str = Field(description="Bucket that holds the results.")
    prefix: str = Field(default="", description="Key prefix of the migration; results go under PREFIX/_lepton/prefect-results/.")
    encryption: str = Field(default="AES256", description="Server-side encryption, as the spec's target says.")
    kms_key_id: str | None = Field(default=None, description="KMS key for aws:kms encryption.")

    def _key(self, path: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, RESULTS_DIR, path) if p)

    def _store(self):
        return _open(self.endpoint_url, self.region, self.encryption, self.kms_key_id)

    async def aread_path(self, path: str) -> bytes:
        return await anyio.to_thread.run_sync(self.read_path, path)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        """The stored bytes; ``ObjectNotFound`` (which Prefect reads as "not cached") when absent."""
        key = self._key(path)
        return patiently(lambda: self._store().get_bytes(self.bucket, key), f"read result s3://{self.bucket}/{key}")

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await anyio.to_thread.run_sync(self.write_path, path, content)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        key = self._key(path)
        patiently(lambda: self._store().put_bytes(self.bucket, key, content), f"write result s3://{self.bucket}/{key}")
        return key


def _open(endpoint_url: str, region: str, encryption: str, kms_key_id: str | None):
    """A store client for the target as this process reaches it now (the embedded server's port and
    keys are read afresh: it may have been restarted), made once per endpoint and key."""
    from lepton_core.state import state_dir
    from lepton_core.store import target_settings

    settings = target_settings(endpoint_url or None, region, state_dir())
    return _client(settings.endpoint_url, settings.region, settings.access_key_id,
                   settings.secret_access_key.get_secret_value() if settings.secret_access_key else None, encryption, kms_key_id)


@functools.lru_cache(maxsize=16)
def _client(endpoint_url, region, access_key_id, secret, encryption, kms_key_id):
    from pydantic import SecretStr

    from lepton_core.store import ObjectStore, StoreSettings

    settings = StoreSettings(endpoint_url=endpoint_url, region=region, access_key_id=access_key_id,
                             secret_access_key=SecretStr(secret) if secret else None)
    return ObjectStore(settings, encryption=encryption, kms_key_id=kms_key_id)


def result_storage(target: TargetSpec) -> LeptonObjectStore:
    """The saved storage block for ``target``'s results (one block per bucket and prefix)."""
    block = LeptonObjectStore(endpoint_url=target.endpoint_url or "", region=target.region, bucket=target.bucket,
                              prefix=target.prefix, encryption=target.encryption, kms_key_id=target.kms_key_id)
    digest = hashlib.sha256(f"{block.endpoint_url}|{block.bucket}|{block.prefix}".encode()).hexdigest()[:12]
    block.save(f"results-{digest}", overwrite=True)
    return block


def persisted(task: Any, storage: LeptonObjectStore) -> Any:
    """``task`` with its results kept in ``storage`` (its cache policy is Prefect's default: inputs,
    task source and flow run id, so a Retry of the same run reuses them and a new run does not)."""
    return task.with_options(result_storage=storage, persist_result=True)
