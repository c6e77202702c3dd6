"""Report sections for the stages that exist so far: spec, cloud choice, source and target
validation gates, drift, plan, object store, data migration, model adaptation, integration and serving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lepton_core.data.engine import TransferSummary
from lepton_core.report.run_report import StageResult
from lepton_core.sim.plan import Plan, cheapest
from lepton_core.spec import LoadedSpec
from lepton_core.store.target import TargetInfo
from lepton_core.text import counted
from lepton_core.validation.drift import DriftReport
from lepton_core.validation.gate import GateResult

if TYPE_CHECKING:
    from lepton_core.choice.compare import Comparison
    from lepton_core.optimize.run import OptimizationResult
    from lepton_core.serving.integrate import IntegrationResult
    from lepton_core.transfer.adapt import AdaptResult


def spec_stage(loaded: LoadedSpec) -> StageResult:
    spec, cat = loaded.spec, loaded.catalogue
    kinds = ", ".join(f"{d.name} ({d.kind})" for d in spec.datasets)
    details = [
        ("datasets", kinds),
        ("model", f"{spec.model.name}: {spec.model.architecture}, {len(spec.model.classes)} classes" if spec.model else "none"),
        ("services", f"{len(spec.services)} ({sum(s.cpu for s in spec.services):g} vCPU, "
                     f"{sum(s.memory_gb for s in spec.services):g} GB memory, {sum(s.gpu for s in spec.services)} GPU, "
                     f"{sum(s.data_gb for s in spec.services):g} GB data)"),
        ("catalogue", f"{cat.provider} {cat.region}, {len(cat.instances)} instance types, prices as of {cat.as_of}"),
        ("SLOs", f"p95 latency {spec.slo.p95_latency_ms:g} ms, downtime at most {spec.slo.max_downtime_minutes:g} min"),
        ("budget", f"migration ${spec.budget.migration_usd:,.0f}, monthly ${spec.budget.monthly_usd:,.0f}"),
    ]
    return StageResult(stage="spec", status="ok", summary=f"{spec.name}: {counted(len(spec.datasets), 'dataset')}, {counted(len(spec.services), 'service')}",
                       details=tuple(details))


def store_stage(info: TargetInfo) -> StageResult:
    details = [
        ("endpoint", info.endpoint + (" (embedded SeaweedFS)" if info.embedded else "")),
        ("target", info.uri),
        ("encryption", info.encryption),
        ("bucket", "created" if info.bucket_created else "existed"),
    ]
    return StageResult(stage="object store", status="ok", summary=f"{info.uri} reachable and writable", details=tuple(details))


def data_stage(summaries: list[TransferSummary]) -> StageResult:
    rows = []
    for s in summaries:
        if s.note:
            rows.append((s.dataset, f"{s.source}: {s.note}"))
            continue
        extra = f"; {counted(s.extra_on_target, 'object')} on the target that the source does not have (kept)" if s.extra_on_target else ""
        rows.append((s.dataset, f"{counted(s.objects, 'object')}, {s.total_bytes / 1e6:.1f} MB -> {s.destination}; "
                                f"{s.sent} sent ({s.resent} re-sent), {s.skipped} already there; {s.mb_per_s:.1f} MB/s{extra}"))
    sent = sum(s.sent for s in summaries)
    total = sum(s.objects for s in summaries)
    return StageResult(stage="data migration", status="ok",
                       summary=f"{counted(len(summaries), 'dataset')}, {counted(total, 'object')} verified ({sent} sent this run)", details=tuple(rows))


def _relative(path: str | None, run_dir: str | None) -> str:
    if not path:
        return ""
    if run_dir and Path(path).is_relative_to(run_dir):
        return str(Path(path).relative_to(run_dir))
    return path


def validation_stage(results: list[GateResult], side: str, run_dir: str | None = None, docs_uri: str | None = None) -> StageResult:
    rows = [(r.dataset, f"{len(r.checks)} expectations passed on {r.rows_text()}"
                        + (f"; Data Docs {_relative(r.docs, run_dir)}" if r.docs else "")) for r in results]
    if docs_uri:
        rows.append(("Data Docs", f"all gates of this run, uploaded to {docs_uri}"))
    return StageResult(stage=f"{side} validation", status="ok",
                       summary=f"{counted(len(results), 'dataset')} passed ({counted(sum(len(r.checks) for r in results), 'expectation')})", details=tuple(rows))


def drift_stage(reports: list[DriftReport]) -> StageResult:
    """Distances from 0 (same distribution) to 1; a limit in the spec would have failed the run before here."""
    if not reports:
        return StageResult(stage="drift", status="skipped", summary="no dataset names a baseline to compare with")
    rows = tuple((f"{r.dataset} vs {r.baseline}", r.distances()) for r in reports)
    worst = max(reports, key=lambda r: r.max_distance)
    return StageResult(stage="drift", status="ok", details=rows,
                       summary=f"{len(reports)} comparison{'' if len(reports) == 1 else 's'}; largest distance {worst.max_distance:.3f} ({worst.dataset} vs {worst.baseline})")


def plan_stage(plans: list[Plan], run_dir: str, dataset_order: list[str] | None = None) -> StageResult:
    """The methods side by side, then the cheapest plan step by step, the order the data moved in,
    and the Gantt chart."""
    best = cheapest(plans)
    runner_up = min((p for p in plans if p is not best), key=lambda p: p.outcome.total_cost, default=None)
    rows = []
    for p in plans:
        o = p.outcome
        finish = f"all in the cloud after {o.finish_hour} h" if o.finish_hour is not None else f"not finished in {o.hours} h"
        rows.append((p.method, f"${o.total_cost:,.2f}; {finish}; downtime {o.downtime_minutes:g} min"
                               + "".join(f"; {n}" for n in p.notes)))
    for name, start, over, cloud in best.outcome.schedule:
        step = next(st for st in best.steps if st.workload == name)
        rows.append((f"{name}", f"{step.instance_type}: transfer from hour {start}, cutover from {over}, in the cloud from {cloud}"))
    if dataset_order:
        rows.append(("data moved in", "the plan's order: " + ", ".join(dataset_order)))
    margin = f", ${runner_up.outcome.total_cost - best.outcome.total_cost:,.2f} less than {runner_up.method}" if runner_up else ""
    charts = [(f"{best.method} plan", Path(run_dir) / "plan" / "gantt.png"),
              ("PPO planner learning curve", Path(run_dir) / "plan" / "learning_curve.png")]
    return StageResult(stage="plan", status="ok", details=tuple(rows),
                       summary=f"{best.method}: ${best.outcome.total_cost:,.2f} for {len(best.steps)} services{margin}",
                       images=tuple((caption, _relative(str(path), run_dir)) for caption, path in charts if path.is_file()))


def adapt_stage(result: AdaptResult, run_dir: str) -> StageResult:
    """The three models side by side on the target's test split, the registered version, the learning curve."""
    rows = [(name, f"accuracy {m.accuracy:.1%}, macro-F1 {m.macro_f1:.3f}, calibration error {m.calibration_error:.3f} "
                   f"on {m.images:,} test images") for name, m in result.metrics.items()]
    rows += [(f"{name}, on-prem images", f"accuracy {m.accuracy:.1%} on {m.images:,} test images of the on-prem dataset")
             for name, m in result.on_source.items()]
    a = result.adapted
    rows.append(("training", f"{a.epochs} epochs in {a.seconds:.0f} s ({a.precision} on {a.device})"
                             + ("; resumed from a checkpoint" if a.resumed else "")))
    c = a.calibration
    if c:
        polarity = "inverted (the target's images are the on-prem sensor's negatives)" if c["inverted"] else "as on-prem"
        pseudo = (f"; {c['pseudo_labelled']} unlabelled training images pseudo-labelled at confidence >= {c['threshold']:g}"
                  f" ({c['agreement_with_folders']:.1%} agree with their folders)" if c.get("pseudo_labelled") else "")
        rows.append(("calibration", f"batch-norm statistics re-estimated on {c['unlabelled_images']} images; polarity "
                                    f"{polarity}: labelled accuracy {c['accuracy_as_is']:.1%} as is, "
                                    f"{c['accuracy_inverted']:.1%} inverted{pseudo}"))
    rows.append(("checkpoint", _relative(str(result.checkpoint), run_dir)))
    rows.append(("registry", f"{result.registry_uri} (version {result.version})" if result.registry_uri else "not registered"))
    images = (("validation accuracy while training", _relative(str(result.curve), run_dir)),) if result.curve.is_file() else ()
    return StageResult(stage="model adaptation", status="ok", summary=result.summary(), details=tuple(rows), images=images)


def integrate_stage(result: IntegrationResult, run_dir: str) -> StageResult:
    """The parity check's figures, the promotion and the cutover bundle."""
    p = result.parity
    rows = [("agreement", f"{p.agreement:.1%} of the on-prem model's right answers on {p.images['source']} on-prem images kept "
                          f"(at least {p.min_agreement:.1%} required)"),
            *((f"accuracy on {d} images", f"on-prem {p.accuracy['on-prem'][d]:.1%}, candidate {p.accuracy['candidate'][d]:.1%}")
              for d in ("source", "target")),
            ("p95 latency", f"on-prem {p.latency_ms['on-prem']['p95']:.1f} ms, candidate {p.latency_ms['candidate']['p95']:.1f} ms "
                            f"(SLO {p.slo_p95_ms:g} ms)"),
            ("promoted", f"{result.candidate} to {result.promoted.stage} (production: {result.onprem})"),
            ("cutover bundle", f"{_relative(str(result.bundle), run_dir)}, uploaded to {result.bundle_uri}")]
    return StageResult(stage="integration", status="ok", summary=result.summary(), details=tuple(rows))


def serving_stage(result: OptimizationResult, run_dir: str) -> StageResult:
    """The serving configuration the optimisation loop chose, against the baseline, with its chart."""
    from lepton_core.optimize.space import Candidate

    m, p = result.chosen["measurement"], result.chosen["placement"]
    rows = [("chosen", Candidate(**m["candidate"]).label()),
            ("at the SLO", f"{m['rate_rps']:.1f} requests/s per server at p95 {m['latency_ms']['p95']:.1f} ms "
                           f"(SLO {result.slo_p95_ms:g} ms), {m['cpu_cores'] or m['cores']:g} cores busy, {result.device}"),
            ("cost", f"${p['usd_per_million']:.4f} per million predictions on {p['replicas']} x {p['instance']} "
                     f"(${p['price_per_hour']:g}/h)"),
            ("accuracy change", f"{m['accuracy_delta']:+.2f} points against eager fp32")]
    if result.baseline and result.baseline["placement"]:
        b, bp = result.baseline["measurement"], result.baseline["placement"]
        rows.append(("baseline", f"eager fp32, batch 1: {b['rate_rps']:.1f} requests/s at p95 {b['latency_ms']['p95']:.1f} ms, "
                                 f"${bp['usd_per_million']:.4f} per million"))
        rows.append(("gain", f"{result.speedup_vs_baseline:.2f}x throughput per core, {result.cost_ratio:.2f}x cheaper"))
    rows += [("trials", f"{result.trials} ({result.skipped} skipped, {result.rejected} rejected); {result.stopped}"),
             ("trials table", _relative(str(Path(result.out_dir) / "trials.md"), run_dir))]
    if result.bundle_uri:
        rows.append(("cutover bundle", f"serving configuration written to {result.bundle_uri}"))
    return StageResult(stage="serving", status="ok", summary=result.summary(), details=tuple(rows),
                       images=(("Serving configurations: cost against p95 latency", _relative(result.chart, run_dir)),))


def cloud_stage(comparison: Comparison, loaded: LoadedSpec, run_dir: str, how: str = "") -> StageResult:
    """The candidate clouds side by side, the recommendation and the one the run moved to, the chart."""
    from lepton_core.choice.compare import HOURS_PER_MONTH

    rows = []
    for i, o in enumerate(comparison.ranked, 1):
        total = f"${o.total:,.0f}" if o.finish_hours is not None else "does not finish"
        break_even = f"break-even in month {o.break_even_months:.1f}" if o.break_even_months is not None else "never breaks even"
        rows.append((f"{i}. {o.catalogue}", f"{total} over {o.horizon_months} months ({o.method} plan on {o.link}): one-off "
                                           f"${o.one_off:,.0f}, done in {o.finish_text}, downtime {o.downtime_minutes:g} min, "
                                           f"${o.monthly:,.0f}/month after (on-prem ${o.onprem_monthly:,.0f}), {break_even}; "
                                           f"{o.store['name']}" + ("" if o.store["s3_compatible"] else " (not S3-compatible)")
                                           + "".join(f"; {n}" for n in o.budget_notes + o.notes)))
    cat = loaded.catalogue
    rows.append(("recommendation", comparison.recommendation()))
    rows.append(("moved to", f"{cat.name}: prices as of {cat.as_of}; object store {cat.object_store.name}, {cat.object_store.access}"))
    if how:
        rows.append(("chosen", how))
    rows.append(("method", f"each cloud's cheapest plan in the simulator; monthly = instances x {HOURS_PER_MONTH:g} h + storage + egress"))
    chart = Path(run_dir) / "cloud" / "clouds.png"
    chosen = next((o for o in comparison.ranked if o.ref == loaded.spec.target.catalogue), None)
    summary = f"{cat.name} of {len(comparison.ranked)} candidates" + (f": ${chosen.total:,.0f} over {chosen.horizon_months} months"
                                                                     if chosen and chosen.finish_hours is not None else "")
    return StageResult(stage="cloud choice", status="ok", summary=summary, details=tuple(rows),
                       images=(("Candidate clouds: cost over the horizon and one-off cost", _relative(str(chart), run_dir)),)
                       if chart.is_file() else ())
