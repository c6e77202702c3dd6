"""Read a spec file into a MigrationSpec, or fail with messages that name file, line, field, reason.

Two phases: the YAML and the pydantic models (types, bounds, unknown fields, names, references,
cycles), then the checks that need the file system (local paths exist, the catalogue loads and
knows every pinned instance type). Every problem becomes one line ``FILE:LINE: FIELD: REASON``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lepton_core.errors import UsageError
from lepton_core.spec.base import SpecFieldError, format_path
from lepton_core.spec.catalogue import Catalogue, catalogue_path
from lepton_core.spec.models import MigrationSpec, TargetSpec, is_s3

MAX_PROBLEMS_SHOWN = 10
MAX_SPEC_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec file."""

    file: str
    path: tuple[str | int, ...]
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {format_path(self.path)}: {self.reason}" if self.path else f"{where}: {self.reason}"


class SpecError(UsageError):
    """A spec that cannot be used; its message is one line per problem."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        shown = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems")
        super().__init__("\n".join(shown))


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec with the context it was read in."""

    spec: MigrationSpec
    path: Path
    catalogue: Catalogue
    sha256: str
    candidates: tuple[Catalogue, ...] = ()  # spec.cloud_choice.candidates, loaded, in order

    @property
    def cloud_open(self) -> bool:
        """Whether the spec leaves the provider to the cloud comparison (target.provider 'auto')."""
        return self.spec.target.provider == "auto"

    def candidate(self, ref: str) -> Catalogue:
        """The loaded catalogue of one of ``spec.cloud_choice.candidates``; UsageError if it is not one."""
        refs = self.spec.cloud_choice.candidates
        if ref not in refs or len(self.candidates) != len(refs):
            raise UsageError(f"{ref!r} is not one of the spec's cloud_choice.candidates ({', '.join(refs)})")
        return self.candidates[refs.index(ref)]

    def with_cloud(self, ref: str) -> LoadedSpec:
        """This spec moving to the candidate ``ref``: its provider, region and catalogue in the
        target, and, for an S3-compatible store on another endpoint (Google Cloud Storage), that
        endpoint unless the spec gives one."""
        cat = self.candidate(ref)
        target = self.spec.target
        changes: dict[str, Any] = {"provider": cat.provider if cat.provider in ("aws", "azure", "gcp") else "s3-compatible",
                                   "region": cat.region, "catalogue": ref}
        if target.endpoint_url is None and cat.object_store.endpoint:
            changes["endpoint_url"] = cat.object_store.endpoint
        chosen = validate_model(TargetSpec, {**target.model_dump(exclude_unset=True), **changes}, {}, f"{self.path} (cloud {ref})")
        return replace(self, spec=self.spec.model_copy(update={"target": chosen}), catalogue=cat)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, location: str) -> str:
        """An absolute local path for a relative one (relative to the spec), s3:// URIs as is."""
        if is_s3(location):
            return location
        p = Path(location).expanduser()
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and check the spec at ``path``; SpecError lists what is wrong."""
    path = Path(path).expanduser()
    data, lines = read_yaml(path)
    spec = validate_model(MigrationSpec, data, lines, str(path))
    candidates = tuple(_load_catalogue(ref, path, ("cloud_choice", "candidates", i), lines)
                       for i, ref in enumerate(spec.cloud_choice.candidates))
    # an open provider: the first candidate's prices until the comparison chooses (LoadedSpec.with_cloud)
    catalogue = candidates[0] if spec.target.provider == "auto" else _load_catalogue(spec.target.catalogue, path, ("target", "catalogue"), lines)
    problems = (_check_files(spec, path.resolve().parent, lines, str(path))
                + _check_instances(spec, catalogue, candidates, lines, str(path)) + _check_provider(spec, catalogue, lines, str(path)))
    if problems:
        raise SpecError(problems)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoadedSpec(spec=spec, path=path.resolve(), catalogue=catalogue, sha256=digest, candidates=candidates)


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple, int]]:
    """The mapping in a YAML file and the line of every key and list item in it."""
    name = str(path)

    def fail(reason: str, line: int | None = None) -> SpecError:
        return SpecError([SpecProblem(name, (), line, reason)])

    if not path.exists():
        raise fail("file not found")
    if not path.is_file():
        raise fail("not a file")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise fail(f"file is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; is this really a spec?")
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        raise fail("permission denied") from None
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = f"invalid YAML: {exc.problem or exc.context}"
        raise fail(reason, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise fail(f"invalid YAML: {exc}") from None
    if node is None or data is None:
        raise fail("the file is empty; a spec is a YAML mapping (see `lepton sample`)")
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else f"a {type(data).__name__}"
        raise fail(f"expected a mapping of fields at the top level, found {kind}", node.start_mark.line + 1)
    lines: dict[tuple, int] = {}
    duplicates: list[SpecProblem] = []
    _collect_lines(node, (), lines, duplicates, name)
    if duplicates:
        raise SpecError(duplicates)
    return data, lines


def _collect_lines(node: yaml.Node, path: tuple, out: dict, dups: list, name: str) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key, value in node.value:
            k = key.value
            if k in seen:
                dups.append(SpecProblem(name, path + (k,), key.start_mark.line + 1, "duplicate key"))
            seen.add(k)
            out[path + (k,)] = key.start_mark.line + 1
            _collect_lines(value, path + (k,), out, dups, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(item, path + (i,), out, dups, name)


def validate_model(model: type[BaseModel], data: dict, lines: dict[tuple, int], name: str) -> Any:
    """``model.model_validate(data)``, with every error turned into a located SpecProblem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_problem(err, data, lines, name, model) for err in exc.errors()]) from None


def _problem(err: dict, data: Any, lines: dict, name: str, model: type[BaseModel]) -> SpecProblem:
    path = _data_path(err["loc"], data)
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SpecFieldError):
        path, reason = path + cause.path, cause.message
    elif err["type"] == "extra_forbidden":
        reason = _unknown_field(path, model)
    elif err["type"] == "missing":
        reason = "required field is missing"
    elif err["type"] in ("too_short", "too_long"):  # a list with too few or too many entries
        ctx = err.get("ctx") or {}
        bound, n = (ctx.get("min_length"), "least") if err["type"] == "too_short" else (ctx.get("max_length"), "most")
        actual = ctx.get("actual_length")
        reason = (f"needs at {n} {bound} entr{'y' if bound == 1 else 'ies'}"
                  + (f", has {actual}" if actual is not None else ""))
    else:
        reason = _reason(err)
    return SpecProblem(name, path, _line(path, lines), reason)


def _data_path(loc: tuple, data: Any) -> tuple:
    """Pydantic's error location without the type tags it adds for unions (``str``, ``ModelSpec``)."""
    path: list = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, dict) and isinstance(part, str):
            path.append(part)  # a missing field
            node = None
    return tuple(path)


def _line(path: tuple, lines: dict) -> int | None:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def _reason(err: dict) -> str:
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    value = err.get("input")
    if not isinstance(value, (dict, list)) and value is not None:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        msg = f"{msg} (got {shown})"
        if isinstance(value, bool) and err["type"] == "string_type":
            msg += "; YAML reads yes/no/on/off as true/false: put the value in quotes"
    return msg


def _unknown_field(path: tuple, model: type[BaseModel]) -> str:
    owner = _model_at(model, path[:-1])
    key = str(path[-1]) if path else "?"
    if owner is None:
        return f"unknown field {key!r}"
    allowed = list(owner.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
    return f"unknown field {key!r}{hint}"


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The model class that holds the fields at ``path`` under ``model`` (None when unknown)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _inner_model(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The model inside ``X | None``, ``tuple[X, ...]`` and the like, or the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


def _load_catalogue(ref: str, spec_path: Path, where: tuple, lines: dict) -> Catalogue:
    """The catalogue a spec field names; its own problems are located in its own file."""
    path = catalogue_path(ref, spec_path.resolve().parent)
    if not path.is_file():
        raise SpecError([SpecProblem(str(spec_path), where, _line(where, lines), f"catalogue file not found: {path}")])
    return read_catalogue(path)


@functools.lru_cache(maxsize=64)
def _parse_catalogue(path: Path, mtime_ns: int, size: int) -> Catalogue:
    data, cat_lines = read_yaml(path)
    return validate_model(Catalogue, data, cat_lines, str(path))


def read_catalogue(path: Path) -> Catalogue:
    """A catalogue file, checked; read again only when it changes (every spec load reads each candidate)."""
    stat = path.stat()
    return _parse_catalogue(path.resolve(), stat.st_mtime_ns, stat.st_size)


def _check_files(spec: MigrationSpec, base: Path, lines: dict, name: str) -> list[SpecProblem]:
    problems = []
    checks = [(("datasets", i, "location"), d.location, d.kind == "table") for i, d in enumerate(spec.datasets)]
    if spec.model is not None:
        checks.append((("model", "checkpoint"), spec.model.checkpoint, True))
    for path, location, want_file in checks:
        if is_s3(location):
            continue
        local = Path(location).expanduser()
        local = local if local.is_absolute() else base / local
        if not local.exists():
            problems.append(SpecProblem(name, path, _line(path, lines), f"path does not exist: {local}"))
        elif want_file and not local.is_file():
            problems.append(SpecProblem(name, path, _line(path, lines), f"expected a file, found a folder: {local}"))
        elif not want_file and not local.is_dir():
            problems.append(SpecProblem(name, path, _line(path, lines), f"expected a folder of images, found a file: {local}"))
    return problems


def _check_instances(spec: MigrationSpec, catalogue: Catalogue, candidates: tuple[Catalogue, ...], lines: dict,
                     name: str) -> list[SpecProblem]:
    """A pinned instance type must be in the target's catalogue (in some candidate's, when the
    provider is chosen: the pin holds on the clouds that have the type)."""
    problems = []
    auto = spec.target.provider == "auto"
    known = tuple(dict.fromkeys(n for c in candidates for n in c.instance_names)) if auto else catalogue.instance_names
    where = "any cloud_choice candidate's catalogue" if auto else f"catalogue {catalogue.name}"
    for i, svc in enumerate(spec.services):
        if svc.instance_type is not None and svc.instance_type not in known:
            path = ("services", i, "instance_type")
            close = difflib.get_close_matches(svc.instance_type, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(SpecProblem(name, path, _line(path, lines), f"unknown instance type {svc.instance_type!r} in {where}{hint}"))
    return problems


def _check_provider(spec: MigrationSpec, catalogue: Catalogue, lines: dict, name: str) -> list[SpecProblem]:
    """The target's catalogue must price the target's provider (any, for an S3-compatible store)."""
    provider = spec.target.provider
    if provider in ("auto", "s3-compatible") or catalogue.provider == provider:
        return []
    path = ("target", "catalogue")
    return [SpecProblem(name, path, _line(path, lines) or _line(("target",), lines),
                        f"catalogue {catalogue.name} prices {catalogue.provider}, but target.provider is {provider!r}")]
