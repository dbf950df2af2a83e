"""The Python API: load a model and a spec, bound, verify."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from verikit.bounds import Interval
from verikit.errors import VerikitError
from verikit.graph import Graph
from verikit.methods.base import Verdict
from verikit.plugins import get_method
from verikit.region import Box, LpBall
from verikit import capabilities
from verikit.roles import check_method, check_timeout, check_verify_methods
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
          coefficients: torch.Tensor | None = None, options=None, device: str = "cpu",
          layers: list[dict[str, Interval]] | None = None) -> Interval | list[Interval]:
    """Bounds by a bound method. For a region: of `coefficients @ output` (identity by default), shaped
    [B, K]. For a Property: one Interval per region, of `c . y - d` for every row of its clauses.
    `device="cuda"` computes on a GPU (the region is moved there in float32); results are on the CPU.
    `layers`, when given, receives per region the bounds of every value that feeds a nonlinearity."""
    check_method(method, "bound", "method")
    method_object = get_method(method)
    capabilities.check(model, method_object)
    if isinstance(region_or_spec, Property):
        results = []
        for spec in region_or_spec.regions:
            rows, rhs, _ = spec.rows()
            rows, rhs = rows.float().unsqueeze(0), rhs.float()
            store = {} if layers is not None else None
            result = _bound_on(method_object, model, spec.region, rows, options, device, store)
            results.append(Interval(result.lower - rhs, result.upper - rhs))
            if layers is not None:
                layers.append({name: Interval(b.lower.cpu(), b.upper.cpu()) for name, b in store.items()})
        return results
    if coefficients is None:
        coefficients = torch.eye(model.output_size).unsqueeze(0)
    if coefficients.dim() == 2:
        coefficients = coefficients.unsqueeze(0)
    store = {} if layers is not None else None
    result = _bound_on(method_object, model, region_or_spec, coefficients.float(), options, device, store)
    if layers is not None:
        layers.append({name: Interval(b.lower.cpu(), b.upper.cpu()) for name, b in store.items()})
    return result


def _bound_on(method_object, model: Graph, region: Box | LpBall, coefficients: torch.Tensor, options,
              device: str, intermediate: dict | None = None) -> Interval:
    """One bound pass on `device` (the bound methods compute where the region lives), back on the CPU."""
    if torch.device(device).type == "cpu":
        return method_object.bound(model, region, coefficients, options, intermediate)
    result = method_object.bound(model, region.to(torch.float32, device), coefficients.to(device), options,
                                 intermediate)
    return Interval(result.lower.cpu(), result.upper.cpu())


def certified_radius(model: Graph, x0: torch.Tensor, label: int, target: int | None = None, norm: str = "inf",
                     method: str = "cnn-cert", domain: tuple[float, float] | None = None, device: str = "cpu",
                     **options):
    """Certified radius around x0 by CNN-Cert's log-space search, with the attack's upper bound
    (see verikit.radius.certified_radius for every option). It computes on the CPU only for now."""
    from verikit.radius import certified_radius as _radius

    check_method(method, "bound", "method")
    if torch.device(device).type != "cpu":
        from verikit.errors import VerikitError

        raise VerikitError(f"the certified radius is computed on the CPU only, not on {device}", place="device",
                           fix="leave the device at cpu")
    return _radius(model, x0, label, target, norm, method, domain=domain, **options)


def verify(model: Graph, spec: Property, timeout: float = 60.0, methods: tuple[str, ...] | None = None,
           attack: str | None = "pgd", complete: str | None = "bab", device: str = "cpu",
           workers: int = 1, seed: int = 0, method_options: dict[str, Any] | None = None) -> Verdict:
    """Decide the spec: `sat` (with a counterexample confirmed by onnxruntime), `unsat`, or
    `unknown`/`timeout`; `device="cuda"` computes the bounds on a GPU; `workers` processes share the
    complete method's work (bab: pieces of the property). They are started with "spawn", which
    re-imports a calling script: call from under `if __name__ == "__main__":`. `method_options` maps a
    method's name to its options object (e.g. {"alpha-crown": AlphaCrownOptions(steps=50)}). Every
    method name is checked in its role, and the timeout is checked, before any work starts."""
    check_timeout(timeout, "timeout")
    check_verify_methods(methods, attack, complete, options=("methods", "attack", "complete"))
    for name, chosen in (method_options or {}).items():
        expected = get_method(name).Options
        if not isinstance(chosen, expected):
            raise VerikitError(f"method_options[{name!r}] is a {type(chosen).__name__}; {name} takes "
                               f"{expected.__name__}", place="method_options", fix=f"pass {expected.__name__}(...)")
    options = VerifyOptions(timeout=timeout, methods=methods, attack=attack, complete=complete, device=device,
                            workers=workers, seed=seed, method_options=dict(method_options or {}))
    return _verify(model, spec, options)
