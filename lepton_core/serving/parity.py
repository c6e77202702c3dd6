"""The parity check before cutover: the on-prem model and the candidate served side by side, the
same golden images sent to both, one request each, interleaved.

The golden set is drawn from the test splits of the model's source (on-prem) and target (cloud)
datasets, the same images every run (a hash of each path orders them). The candidate passes when
(1) on source images the on-prem model got right, it gives the same answer at least
``min_agreement`` of the time (callers keep their answers), (2) on target images it is more accurate
than the on-prem model, and (3) its p95 latency is within the SLO.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from lepton_core.errors import LeptonError
from lepton_core.serving.client import ModelClient

WARM_UP = 5  # requests per server not timed (first calls allocate)


class ParityFailed(LeptonError):
    """The candidate does not keep the on-prem answers, is not better on the cloud's data, or is too slow."""


@dataclass(frozen=True)
class Golden:
    domain: str  # "source" or "target"
    path: Path
    label: int


def golden_set(source_root: Path, target_root: Path, classes: tuple[str, ...], per_domain: int = 200) -> list[Golden]:
    """Up to ``per_domain`` test images of each domain, the same ones every time."""
    from lepton_core.transfer.data import _unit, index_splits

    golden = []
    for domain, root in (("source", source_root), ("target", target_root)):
        test = sorted(index_splits(root, classes, domain)["test"], key=lambda i: _unit("golden", i.rel))[:per_domain]
        golden += [Golden(domain, Path(root) / i.rel, i.label) for i in test]
    return golden


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else (values or [0.0])[0]


@dataclass(frozen=True)
class ParityResult:
    min_agreement: float
    slo_p95_ms: float
    agreement: float  # candidate == on-prem on source images the on-prem model got right
    accuracy: dict[str, dict[str, float]]  # model -> domain -> accuracy
    latency_ms: dict[str, dict[str, float]]  # model -> p50/p95
    images: dict[str, int]  # domain -> golden images
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> str:
        rows = ["| check | on-prem | candidate | requirement | result |", "|---|---:|---:|---|---|"]
        ok = {True: "pass", False: "**fail**"}
        rows.append(f"| agreement on on-prem images the on-prem model got right | - | {self.agreement:.1%} | "
                    f">= {self.min_agreement:.1%} | {ok[self.agreement >= self.min_agreement]} |")
        for domain in ("source", "target"):
            a, b = self.accuracy["on-prem"][domain], self.accuracy["candidate"][domain]
            need = "more than on-prem" if domain == "target" else "(reported)"
            verdict = ok[b > a] if domain == "target" else ""
            rows.append(f"| accuracy on {domain} images ({self.images[domain]}) | {a:.1%} | {b:.1%} | {need} | {verdict} |")
        lat = self.latency_ms
        rows.append(f"| p95 latency, one image a request | {lat['on-prem']['p95']:.1f} ms | {lat['candidate']['p95']:.1f} ms | "
                    f"<= {self.slo_p95_ms:g} ms | {ok[lat['candidate']['p95'] <= self.slo_p95_ms]} |")
        rows.append(f"| p50 latency | {lat['on-prem']['p50']:.1f} ms | {lat['candidate']['p50']:.1f} ms | | |")
        return "\n".join(rows)

    def record(self) -> dict:
        return {"passed": self.passed, "failures": self.failures, "agreement": self.agreement, "accuracy": self.accuracy,
                "latency_ms": self.latency_ms, "images": self.images, "min_agreement": self.min_agreement,
                "slo_p95_ms": self.slo_p95_ms}


def check_parity(onprem: ModelClient, candidate: ModelClient, golden: list[Golden], *, min_agreement: float,
                 p95_ms: float) -> ParityResult:
    """Send every golden image to both servers (alternating which goes first) and judge the candidate."""
    answers: dict[str, list[int]] = {"on-prem": [], "candidate": []}
    times: dict[str, list[float]] = {"on-prem": [], "candidate": []}
    clients = {"on-prem": onprem, "candidate": candidate}
    for name, client in clients.items():
        for g in golden[:WARM_UP]:
            client.predict_one(g.path)
    for n, g in enumerate(golden):
        order = ("on-prem", "candidate") if n % 2 == 0 else ("candidate", "on-prem")
        for name in order:
            t0 = time.perf_counter()
            answers[name].append(clients[name].predict_one(g.path)["index"])
            times[name].append(1000 * (time.perf_counter() - t0))
    accuracy: dict[str, dict[str, float]] = {}
    for name in clients:
        accuracy[name] = {}
        for domain in ("source", "target"):
            pairs = [(a, g.label) for a, g in zip(answers[name], golden, strict=True) if g.domain == domain]
            accuracy[name][domain] = sum(a == y for a, y in pairs) / len(pairs) if pairs else 0.0
    kept = [(c, o) for c, o, g in zip(answers["candidate"], answers["on-prem"], golden, strict=True)
            if g.domain == "source" and o == g.label]
    agreement = sum(c == o for c, o in kept) / len(kept) if kept else 0.0
    latency = {name: {"p50": statistics.median(t), "p95": p95(t)} for name, t in times.items()}
    failures = []
    if agreement < min_agreement:
        failures.append(f"keeps {agreement:.1%} of the on-prem model's right answers on on-prem images "
                        f"(the spec asks for {min_agreement:.1%})")
    if accuracy["candidate"]["target"] <= accuracy["on-prem"]["target"]:
        failures.append(f"is not more accurate on the cloud's images ({accuracy['candidate']['target']:.1%} against "
                        f"{accuracy['on-prem']['target']:.1%})")
    if latency["candidate"]["p95"] > p95_ms:
        failures.append(f"p95 latency {latency['candidate']['p95']:.1f} ms is over the SLO's {p95_ms:g} ms")
    images = {d: sum(1 for g in golden if g.domain == d) for d in ("source", "target")}
    return ParityResult(min_agreement, p95_ms, agreement, accuracy, latency, images, failures)
