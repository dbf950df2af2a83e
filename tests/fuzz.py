"""A seeded soundness fuzz: `run_fuzz` generates random small ONNX models and VNN-LIB specs
(tests/fuzz_models.py) and checks verikit on them: every bound method's bounds must hold the values at
sampled and attacked points, and verify's verdicts must agree with the answers of tests/fuzz_oracle.py
(an exact MILP, or a falsifier) and come with counterexamples onnxruntime confirms."""
from __future__ import annotations

import dataclasses
import json
import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from fuzz_models import ModelInfo, SpecInfo, random_model, random_spec
from fuzz_oracle import (DenseLayer, SpecRegion, confirmed, exact_answer, falsify, pgd_minimize,
                         read_dense_layers, uniform)

__all__ = ["FuzzReport", "Finding", "random_model", "random_spec", "run_fuzz", "default_dtype"]


# ---- checks -------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """A failed check: the model seed and spec file, the check and method, and what was seen."""

    seed: int
    spec: str
    check: str  # "containment", "wrong verdict", "unconfirmed sat", "missed sat", "error"
    method: str
    detail: str
    point: list[float] | None = None


@dataclass
class Containment:
    """The outcome of the containment checks on one spec."""

    checks: int = 0
    violations: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)


def check_points(graph64, region: SpecRegion, rows: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Points of the box to check bounds at: uniform ones, vertices (all for up to 8 inputs, else 64
    random ones), and the ends of a few PGD steps minimising and maximising each row."""
    generator = torch.Generator().manual_seed(seed)
    n = region.lower.size
    if n <= 8:
        pattern = torch.tensor([[k >> i & 1 for i in range(n)] for k in range(2 ** n)], dtype=torch.bool)
    else:
        pattern = torch.rand(64, n, generator=generator) < 0.5
    corners = torch.where(pattern, torch.from_numpy(region.upper), torch.from_numpy(region.lower))
    signed = torch.cat([rows, -rows]).repeat_interleave(2, 0)  # two starts per row and direction
    starts = uniform(region, len(signed), generator)
    attacked = pgd_minimize(graph64, region.lower, region.upper, lambda y: (y * signed).sum(-1), starts, 10)
    return {"uniform": uniform(region, 64, generator), "corners": corners, "pgd": attacked}


def check_containment(graph, prop, regions: list[SpecRegion], methods: list[str], seed: int,
                      spec: str) -> Containment:
    """Every method's bounds of every row `c . y - d` hold the row's float64 values at check_points,
    up to 1e-4 (1 + |value|) for float32 arithmetic. Unsupported methods are skipped."""
    from verikit.api import bound
    from verikit.errors import VerikitError
    from verikit.plugins import get_method

    result, graph64, values = Containment(), graph.to(torch.float64), []
    for index, (region, region_spec) in enumerate(zip(regions, prop.regions)):
        rows = torch.cat([c.coefficients for c in region_spec.clauses]).double()
        rhs = torch.cat([c.rhs for c in region_spec.clauses]).double()
        points = check_points(graph64, region, rows, seed + index)
        with torch.no_grad():
            values.append({name: (x, graph64.forward_flat(x) @ rows.T - rhs) for name, x in points.items()})
    for method in methods:
        if not get_method(method).applies(graph):
            result.skipped.append(method)
            continue
        try:
            intervals = bound(graph, prop, method=method)
        except VerikitError:
            result.skipped.append(method)
            continue
        except Exception as error:  # a crash is a finding of its own, not a skip
            result.errors.append(Finding(seed, spec, "error", method, f"{type(error).__name__}: {error}"))
            continue
        for index, interval in enumerate(intervals):
            for name, (x, value) in values[index].items():
                result.checks += value.shape[1]
                where = Finding(seed, spec, "containment", method, f"region {index}, {name} points")
                result.violations += _escapes(interval, x, value, where)
    return result


def _escapes(interval, x: torch.Tensor, value: torch.Tensor, where: Finding) -> list[Finding]:
    """Copies of `where` for the rows whose bounds miss a value [P, R] at points x [P, n] by more than
    1e-4 (1 + |value|), with the row, the bounds, the value and the point filled in."""
    tolerance = 1e-4 * (1 + value.abs())
    lower, upper = interval.lower[0].double(), interval.upper[0].double()
    low_ok = (lower <= value + tolerance) & ~lower.isnan()
    high_ok = (upper >= value - tolerance) & ~upper.isnan()
    findings = []
    for row in torch.nonzero(~(low_ok & high_ok).all(0)).flatten().tolist():
        point = int(torch.nonzero(~(low_ok & high_ok)[:, row])[0])
        detail = (f"{where.detail}, row {row}: bounds [{float(lower[row]):.9g}, {float(upper[row]):.9g}] "
                  f"miss the value {float(value[point, row]):.9g}")
        findings.append(dataclasses.replace(where, detail=detail, point=x[point].tolist()))
    return findings


@dataclass
class VerdictCheck:
    """verify's status, the independent answer ('sat', 'unsat', 'borderline' from the MILP; 'sat' or
    'none found' from the falsifier) and the findings."""

    status: str
    truth: str
    oracle: str
    findings: list[Finding] = field(default_factory=list)


def check_verdict(path: Path, graph, prop, regions: list[SpecRegion], layers: list[DenseLayer] | None,
                  timeout: float, seed: int, spec: str) -> VerdictCheck:
    """Compare verify's verdict with the exact MILP answer (when `layers` is given) or the falsifier;
    a `sat` must come with a counterexample that `confirmed` accepts."""
    from verikit.api import verify

    if layers is not None:
        oracle, truth = "milp", exact_answer(path, layers, regions).status
    else:
        found = falsify(path, graph.to(torch.float64), regions, seed)
        oracle, truth = "falsifier", "sat" if found is not None else "none found"
    try:
        verdict = verify(graph, prop, timeout=timeout)
    except Exception as error:  # a crash is a finding; the fuzz goes on
        return VerdictCheck("error", truth, oracle, [Finding(seed, spec, "error", "verify", repr(error))])
    check = VerdictCheck(verdict.status, truth, oracle)
    said = f"verify: {verdict.status} by {verdict.method or '-'} ({verdict.detail}); {oracle}: {truth}"
    if verdict.status == "sat" and not confirmed(path, regions, verdict.counterexample[0].double().numpy()):
        check.findings.append(Finding(seed, spec, "unconfirmed sat", verdict.method, said,
                                      verdict.counterexample[0].tolist()))
    if (verdict.status, truth) in (("unsat", "sat"), ("sat", "unsat")):
        check.findings.append(Finding(seed, spec, "wrong verdict", verdict.method, said))
    if verdict.status in ("unknown", "timeout") and truth == "sat":
        check.findings.append(Finding(seed, spec, "missed sat", verdict.method, said))
    if verdict.status == "error":
        check.findings.append(Finding(seed, spec, "error", verdict.method, said))
    return check


# ---- the fuzz loop ------------------------------------------------------------------------------------
FAILURES = Path("/tmp/fuzz_failures")


@dataclass
class FuzzReport:
    """Counts of a fuzz run and every finding. `verdict_comparisons` are the specs the MILP decided
    (`exact_sat` + `exact_unsat`); `falsifier_checks` the other specs, `falsified` those with a
    counterexample found; `borderline_skipped` specs within the MILP's band."""

    models: int = 0
    specs: int = 0
    containment_checks: int = 0
    containment_violations: list[Finding] = field(default_factory=list)
    verdict_comparisons: int = 0
    exact_sat: int = 0
    exact_unsat: int = 0
    falsifier_checks: int = 0
    falsified: int = 0
    borderline_skipped: int = 0
    sat_rechecks: int = 0
    wrong_verdicts: list[Finding] = field(default_factory=list)
    missed_sats: list[Finding] = field(default_factory=list)
    skipped_methods: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    errors: list[Finding] = field(default_factory=list)
    float64_default_models: int = 0
    features: dict[str, int] = field(default_factory=dict)

    def add_containment(self, result: Containment) -> None:
        """Count one spec's containment checks."""
        self.containment_checks += result.checks
        self.containment_violations += result.violations
        self.errors += result.errors
        for method in result.skipped:
            self.skipped_methods[method] = self.skipped_methods.get(method, 0) + 1

    def add_verdict(self, check: VerdictCheck) -> None:
        """Count one spec's verdict check, filing its findings by kind."""
        self.verdicts[check.status] = self.verdicts.get(check.status, 0) + 1
        self.sat_rechecks += check.status == "sat"
        if check.oracle == "milp":
            self.borderline_skipped += check.truth == "borderline"
            self.exact_sat += check.truth == "sat"
            self.exact_unsat += check.truth == "unsat"
            self.verdict_comparisons += check.truth != "borderline"
        else:
            self.falsifier_checks += 1
            self.falsified += check.truth == "sat"
        for finding in check.findings:
            into = {"missed sat": self.missed_sats, "error": self.errors}.get(finding.check, self.wrong_verdicts)
            into.append(finding)

    def failures(self) -> list[Finding]:
        """The findings that mean a bug: violations, wrong or unconfirmed verdicts, and errors."""
        return self.containment_violations + self.wrong_verdicts + self.errors

    def summary(self) -> dict:
        """The counts and findings as plain data (for JSON)."""
        return asdict(self)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's global default dtype set to `dtype` inside the block, restored after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@dataclass
class _Settings:
    """What run_fuzz does for each seed (see its arguments)."""

    folder: Path
    timeout: float
    specs: int
    methods: list[str]
    family: str | None
    keep: Path | None


def run_fuzz(seeds: Iterable[int], folder: Path, verify_timeout: float = 5.0,
             progress: Callable[[int, FuzzReport], None] | None = None, *, specs_per_model: int = 3,
             methods: list[str] | None = None, family: str | None = None, float64_every: int = 10,
             keep: Path | None = FAILURES) -> FuzzReport:
    """Generate a model per seed (of `family` if given) and `specs_per_model` specs for it, and check
    the bounds of `methods` (None: every registered bound method; []: none) and verify's verdict on
    each spec. The first model and every `float64_every`-th after it run with torch's default dtype
    set to float64. The files of a spec with a failure are copied to `keep`; `progress(seed, report)`
    is called after each model."""
    from verikit.plugins import registry

    methods = [entry.name for entry in registry().methods("bound")] if methods is None else methods
    settings = _Settings(Path(folder), verify_timeout, specs_per_model, methods, family, keep)
    report = FuzzReport()
    for number, seed in enumerate(seeds):
        float64 = number % float64_every == 0
        with default_dtype(torch.float64) if float64 else nullcontext():
            _fuzz_model(seed, settings, report)
        report.float64_default_models += float64
        if progress is not None:
            progress(seed, report)
    return report


def _fuzz_model(seed: int, settings: _Settings, report: FuzzReport) -> None:
    """All checks on one generated model and its specs, added to the report."""
    from verikit.api import load_model

    model = random_model(settings.folder / f"m{seed}.onnx", seed, settings.family)
    try:
        graph = load_model(model.path)
    except Exception as error:  # a model the generator wrote must load: any error is a finding
        report.errors.append(Finding(seed, model.path.name, "error", "load_model", f"{type(error).__name__}: {error}"))
        _keep(settings.keep, model.path, None, report.errors[-1:])
        return
    report.models += 1
    layers = read_dense_layers(model.path) if model.family == "exact" else None
    for index in range(settings.specs):
        spec = random_spec(settings.folder / f"m{seed}_s{index}.vnnlib", model, seed * 100 + index)
        before = len(report.failures())
        _fuzz_spec(seed, model, graph, layers, spec, settings, report)
        _keep(settings.keep, model.path, spec.path, report.failures()[before:])


def _fuzz_spec(seed: int, model: ModelInfo, graph, layers: list | None, spec: SpecInfo, settings: _Settings,
               report: FuzzReport) -> None:
    """Read the spec with verikit (it must read back as written), then run the containment and verdict
    checks on it."""
    from verikit.api import load_spec

    try:
        prop = load_spec(spec.path, graph)
        mismatch = reader_mismatch(prop, spec.regions)
    except Exception as error:
        mismatch = f"{type(error).__name__}: {error}"
    if mismatch:
        report.errors.append(Finding(seed, spec.path.name, "error", "load_spec", mismatch))
        return
    report.specs += 1
    for feature in spec.features + (model.family,):
        report.features[feature] = report.features.get(feature, 0) + 1
    name = spec.path.name
    report.add_containment(check_containment(graph, prop, spec.regions, settings.methods, seed, name))
    report.add_verdict(check_verdict(model.path, graph, prop, spec.regions, layers, settings.timeout, seed, name))


def reader_mismatch(prop, regions: list[SpecRegion]) -> str | None:
    """How verikit's reading of a spec differs from the regions written to it, or None if it does not."""
    if len(prop.regions) != len(regions):
        return f"{len(prop.regions)} regions read, {len(regions)} written"
    for index, (read, written) in enumerate(zip(prop.regions, regions)):
        box = read.region.bounding_box()
        same_box = (np.array_equal(box.lower[0].numpy(), written.lower)
                    and np.array_equal(box.upper[0].numpy(), written.upper))
        same_rows = len(read.clauses) == len(written.clauses) and all(
            np.array_equal(r.coefficients.numpy(), w.coefficients) and np.array_equal(r.rhs.numpy(), w.rhs)
            for r, w in zip(read.clauses, written.clauses))
        if not (same_box and same_rows):
            return f"region {index}: the box or the clauses read differ from those written"
    return None


def _keep(keep: Path | None, model: Path, spec: Path | None, findings: list[Finding]) -> None:
    """Copy the model and spec behind new findings to keep/<spec name>/ with findings.json."""
    if keep is None or not findings:
        return
    target = keep / (spec.stem if spec is not None else model.stem)
    target.mkdir(parents=True, exist_ok=True)
    for path in (model, spec):
        if path is not None:
            shutil.copy(path, target / path.name)
    (target / "findings.json").write_text(json.dumps([asdict(f) for f in findings], indent=1), encoding="utf-8")
