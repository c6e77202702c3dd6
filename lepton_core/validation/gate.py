"""Validation gates: run a dataset's suites and fail with one clear message when data is bad.

A gate builds its own ephemeral GX context per call (no global state, nothing written outside
the run) and returns a GateResult: every expectation, passed or failed, and for failures up to
ten examples (file paths for images, row numbers for tables). Bad data is not transient: a
failed gate raises ValidationFailed, which is never retried.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_core.errors import UsageError
from lepton_core.gcpause import gc_paused
from lepton_core.spec import LoadedSpec, is_s3
from lepton_core.validation.manifest import class_counts, read_table, scan_images
from lepton_core.validation.profile import image_profile, table_profile
from lepton_core.validation.suites import image_expectations, table_expectations

MAX_EXAMPLES = 10


@dataclass(frozen=True)
class CheckResult:
    table: str
    expectation: str
    success: bool
    unexpected: int
    examples: tuple[str, ...] = ()

    def line(self) -> str:
        shown = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{self.expectation} on {self.table}: {self.unexpected} unexpected{shown}"


@dataclass(frozen=True)
class GateResult:
    dataset: str
    side: str
    rows: dict[str, int]
    checks: tuple[CheckResult, ...]
    seconds: float
    profile: dict[str, Any] | None = None  # the data's distribution (see ``profile``), when the gate read it
    docs: str | None = None  # the Data Docs page of this gate, when they were written

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    def rows_text(self) -> str:
        """``images (1797 rows), classes (30 rows)``: how much each table of the gate held."""
        return ", ".join(f"{table} ({n} row{'' if n == 1 else 's'})" for table, n in self.rows.items())

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.success)

    def message(self) -> str:
        first = self.failures[0]
        more = f" (and {len(self.failures) - 1} more failed expectation{'' if len(self.failures) == 2 else 's'})" if len(self.failures) > 1 else ""
        return f"{self.side} validation of dataset {self.dataset!r} failed: {first.line()}{more}"


class ValidationFailed(UsageError):
    """The data is not what the spec says. Carries the full result for reports."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.message())
        self.result = result


def describe(config: Any) -> str:
    """``expect_column_values_to_be_in_set(column=class)``: the type and the column it checks."""
    column = config.kwargs.get("column")
    return f"{config.type}(column={column})" if column else config.type


@gc_paused()
def run_suites(name: str, tables: dict[str, Any], expectations: dict[str, list[Any]], labels: dict[str, Any],
               docs_dir: Path | None = None) -> list[CheckResult]:
    """Validate each DataFrame in ``tables`` against its expectations; ``labels[table]`` turns a row
    index into an example (a path, a class, a row number). With ``docs_dir``, GX's Data Docs for
    these suites and results are written there (``index.html``)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # that module sets its logger to INFO itself, so each ephemeral context's "Created temporary
    # directory ... for ephemeral docs site" reached the flow's log, past the root logger's level
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        from lepton_core.validation.docs_views import site_config

        ctx.add_data_docs_site(site_name="lepton", site_config=site_config(str(docs_dir)))
    source = ctx.data_sources.add_pandas(name)
    results: list[CheckResult] = []
    for table, frame in tables.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}-{table}", expectations=expectations[table]))
        run = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}-{table}", data=batch, suite=suite))
        outcome = run.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
        for r in outcome.results:
            info, what = r.result or {}, describe(r.expectation_config)
            if r.exception_info and r.exception_info.get("raised_exception"):
                msg = str(r.exception_info.get("exception_message", "")).splitlines()[0][:120]
                results.append(CheckResult(table, what, False, 0, (f"could not run: {msg}",)))
                continue
            index = info.get("unexpected_index_list") or []
            examples = tuple(str(labels[table](i)) for i in index[:MAX_EXAMPLES] if isinstance(i, int))
            if not r.success and not examples and "observed_value" in info:
                examples = (f"observed {info['observed_value']}",)
            results.append(CheckResult(table, what, bool(r.success), int(info.get("unexpected_count") or 0), examples))
    if docs_dir is not None:
        ctx.build_data_docs(site_names=["lepton"])
    return results


def naive_times(frame: Any) -> Any:
    """The frame with time-zone aware columns as UTC without a zone: GX's type check knows numpy's
    datetime64 but not pandas' zoned extension type; the instants, hence nulls and ranges, are the same."""
    import pandas as pd

    zoned = [c for c in frame.columns if isinstance(frame[c].dtype, pd.DatetimeTZDtype)]
    if not zoned:
        return frame
    return frame.assign(**{c: frame[c].dt.tz_convert("UTC").dt.tz_localize(None) for c in zoned})


def docs_index(docs_dir: Path | None) -> str | None:
    """The Data Docs page a gate wrote into ``docs_dir`` (None when it wrote none)."""
    return str(Path(docs_dir) / "index.html") if docs_dir is not None else None


def validate_local(loaded: LoadedSpec, name: str, side: str = "source", docs_dir: Path | None = None) -> GateResult:
    """Check a dataset on local disk against its spec; raises ValidationFailed when it does not pass.
    With ``docs_dir``, the gate's Data Docs are written there."""
    t0 = time.perf_counter()
    dataset = loaded.spec.dataset(name)
    if is_s3(dataset.location):
        raise UsageError(f"dataset {name!r} is at {dataset.location}; a {side} gate checks local data")
    root = Path(loaded.resolve(dataset.location))
    if dataset.kind == "images":
        scan = scan_images(root, dataset)
        images = scan.manifest
        profile = image_profile(images, scan.histograms)
        classes = class_counts(root, dataset, images)
        tables = {"images": images, "classes": classes}
        labels = {"images": lambda i: images["path"].iat[i],
                  "classes": lambda i: "/".join(p for p in (classes["split"].iat[i], classes["class"].iat[i]) if p)}
        expectations = image_expectations(dataset)
    else:
        frame = read_table(root)
        profile = table_profile(frame)
        tables = {"table": naive_times(frame)}
        labels = {"table": lambda i: f"row {i}"}
        expectations = table_expectations(dataset)
    checks = run_suites(f"{side}-{name}", tables, expectations, labels, docs_dir)
    result = GateResult(dataset=name, side=side, rows={k: len(v) for k, v in tables.items()}, checks=tuple(checks),
                        seconds=time.perf_counter() - t0, profile=profile, docs=docs_index(docs_dir))
    if not result.success:
        raise ValidationFailed(result)
    return result
