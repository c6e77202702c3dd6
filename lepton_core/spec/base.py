"""Shared building blocks of the spec models: strict frozen models, names, located errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$"),
]
"""A resource name: lowercase letters, digits, '-' and '_', starting with a letter or digit."""

Path_ = tuple[str | int, ...]


class StrictModel(BaseModel):
    """Frozen, and unknown fields are an error (a typo in a spec must never be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecFieldError(ValueError):
    """A check across fields that failed, with the path of the offending field relative to the
    model that raised it, so that the error can name the field and its YAML line."""

    def __init__(self, path: Path_, message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def format_path(path: Sequence[str | int]) -> str:
    """``("services", 3, "name")`` -> ``services[3].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def by_name(items: Iterable[Any], name: str) -> Any:
    """The item whose ``name`` is ``name``; KeyError when there is none."""
    for item in items:
        if item.name == name:
            return item
    raise KeyError(name)


def unique_names(items: Iterable[Any], field: str) -> None:
    """Raise SpecFieldError at the second of two items with the same ``name``."""
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            raise SpecFieldError(
                (field, i, "name"),
                f"duplicate name {item.name!r} (already used by {field}[{seen[item.name]}])",
            )
        seen[item.name] = i
