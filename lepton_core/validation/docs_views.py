"""GX's Data Docs page views, with Jinja's compiled templates kept for the life of the process.

GX makes a Jinja environment per view and a view per Data Docs build, so every gate compiled
GX's page templates again (about 0.3 s a build). These views are GX's own, named in the Data
Docs site's config (``site_config``); their environment reads compiled templates from a cache in
memory, keyed by template name and checked against the template's source by Jinja itself.
Imported only by GX, when a gate builds its Data Docs.
"""

from __future__ import annotations

import threading
from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket


class MemoryBytecodeCache(BytecodeCache):
    """Jinja's compiled templates, in this process's memory."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()  # gates of different datasets may build their docs at once

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)  # Jinja drops it when the template's source changed

    def dump_bytecode(self, bucket: Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code

    def clear(self) -> None:
        with self._lock:
            self._code.clear()


COMPILED = MemoryBytecodeCache()


class _CompiledTemplates:
    """A GX Jinja view whose environment reads compiled templates from ``COMPILED``."""

    env: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = COMPILED


class PageView(_CompiledTemplates, DefaultJinjaPageView):
    pass


class IndexPageView(_CompiledTemplates, DefaultJinjaIndexPageView):
    pass


def site_config(docs_dir: str) -> dict[str, Any]:
    """The Data Docs site of one gate: GX's site builder writing into ``docs_dir`` with these views."""
    page = {"module_name": __name__, "class_name": "PageView"}
    return {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": {"module_name": __name__, "class_name": "IndexPageView"}},
        "site_section_builders": {"expectations": {"view": page}, "validations": {"view": page}, "profiling": {"view": page}},
    }
