"""The Python API: load a model and a spec, bound, verify."""
from __future__ import annotations

from pathlib import Path

import torch

from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.methods.base import Verdict
from verikit.plugins import get_method
from verikit.region import Box, LpBall
from verikit.spec.property import Property
from verikit.pipeline import VerifyOptions, verify as _verify


def load_model(path: str | Path, check: bool = True) -> Graph:
    """Read an ONNX file into verikit's graph; with `check`, compare it with onnxruntime first."""
    from verikit.onnx_import import load_model as _load

    return _load(path, check=check)


def load_spec(path: str | Path, model: Graph | None = None) -> Property:
    """Read a VNN-LIB or YAML spec; with `model`, check its input/output counts against the model's."""
    from verikit.spec import load_spec as _load_spec

    if model is None:
        return _load_spec(path)
    return _load_spec(path, n_inputs=model.input_size, n_outputs=model.output_size)


def bound(model: Graph, region_or_spec: Box | LpBall | Property, method: str = "ibp",
          coefficients: torch.Tensor | None = None, options=None) -> Interval | list[Interval]:
    """Bounds by a bound method. For a region: of `coefficients @ output` (identity by default), shaped
    [B, K]. For a Property: one Interval per region, of `c . y - d` for every row of its clauses."""
    method_object = get_method(method)
    if isinstance(region_or_spec, Property):
        results = []
        for spec in region_or_spec.regions:
            rows = torch.cat([c.coefficients for c in spec.clauses]).float().unsqueeze(0)
            rhs = torch.cat([c.rhs for c in spec.clauses]).float()
            result = method_object.bound(model, spec.region, rows, options)
            results.append(Interval(result.lower - rhs, result.upper - rhs))
        return results
    if coefficients is None:
        coefficients = torch.eye(model.output_size).unsqueeze(0)
    if coefficients.dim() == 2:
        coefficients = coefficients.unsqueeze(0)
    return method_object.bound(model, region_or_spec, coefficients.float(), options)


def certified_radius(model: Graph, x0: torch.Tensor, label: int, target: int | None = None, norm: str = "inf",
                     method: str = "cnn-cert", domain: tuple[float, float] | None = None, **options):
    """Certified radius around x0 by CNN-Cert's log-space search, with the attack's upper bound
    (see verikit.radius.certified_radius for every option)."""
    from verikit.radius import certified_radius as _radius

    return _radius(model, x0, label, target, norm, method, domain=domain, **options)


def verify(model: Graph, spec: Property, timeout: float = 60.0, methods: tuple[str, ...] | None = None,
           attack: str | None = "pgd", complete: str | None = "bab", device: str = "cpu",
           workers: int = 1) -> Verdict:
    """Decide the spec: `sat` (with a counterexample confirmed by onnxruntime), `unsat`, or
    `unknown`/`timeout`; `device="cuda"` computes the bounds on a GPU; `workers` processes share the
    complete method's work (bab: pieces of the property). They are started with "spawn", which
    re-imports a calling script: call from under `if __name__ == "__main__":`."""
    options = VerifyOptions(timeout=timeout, methods=methods, attack=attack, complete=complete, device=device,
                            workers=workers)
    return _verify(model, spec, options)
