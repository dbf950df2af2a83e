"""`verikit bound` and `verikit radius`: one bound method's answer, as a table on stdout (or JSON), within
an optional --timeout."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from verikit.cli.common import (console, device_choice, handles_errors, method_option, threads_option,
                                time_limit, timeout_option, use_threads)
from verikit.errors import VerikitError

bound_timeout_option = timeout_option(None, "Stop after this many seconds (exit code 5). Default: no limit.")


@click.command(short_help="Bounds of each row c.y - d of a spec's unsafe clauses.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@method_option("--method", "-m", default="ibp", show_default=True, role="bound", help="Bound method.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--layers", is_flag=True,
              help="Also the bounds of every value that feeds a nonlinearity (per region: its shape, the "
                   "lowest lower and highest upper bound, the neurons whose interval holds a kink or has width; "
                   "with --json every neuron's bounds).")
@device_choice("Where the bounds compute: cpu, or cuda for a GPU.")
@bound_timeout_option
@threads_option
@handles_errors
def bound(model, spec, method, as_json, layers, device, timeout) -> None:
    """Bounds of every row `c . y - d` of SPEC's unsafe clauses on MODEL (a positive lower bound refutes
    the row's clause). Each row is shown as the unsafe condition it bounds, e.g. `1.0*Y_0 - 1.0*Y_1 <= 0.3`.

    \b
    Example:
      verikit bound net.onnx prop.vnnlib --method ibp --json
      verikit bound net.onnx prop.vnnlib --method crown --timeout 30 > bounds.txt
      verikit bound net.onnx prop.vnnlib --method crown --layers
    """
    from verikit.api import bound as compute, load_model, load_spec
    from verikit.roles import check_method

    use_threads()
    check_method(method, "bound", "--method")
    graph = load_model(model)
    prop = load_spec(spec, graph)
    per_region: list | None = [] if layers else None
    with time_limit(timeout, f"the {method} bounds"):
        intervals = compute(graph, prop, method=method, device=device, layers=per_region)
    records = bound_records(prop, intervals)
    if as_json:
        found = {"method": method, "rows": records}
        if layers:
            found["layers"] = [layer_records(graph, store, full=True) for store in per_region]
        click.echo(json.dumps(found, indent=2))
        return
    from rich.table import Table

    if layers:
        for index, store in enumerate(per_region):
            shown = Table("value", "shape", "lowest lower", "highest upper", "loose neurons",
                          title=f"{method} bounds of every value feeding a nonlinearity, region {index}")
            for r in layer_records(graph, store, full=False):
                shown.add_row(r["value"], str(r["shape"]), f"{r['lowest_lower']:.6g}", f"{r['highest_upper']:.6g}",
                              f"{r['loose']} of {r['neurons']}")
            console(stderr=False).print(shown)

    table = Table("region", "clause", "row", "condition", "lower", "upper", "refutes",
                  title=f"{method} bounds of c.y - d")
    for r in records:
        table.add_row(str(r["region"]), str(r["clause"]), str(r["row"]), r["condition"], f"{r['lower']:.6g}",
                      f"{r['upper']:.6g}", "yes" if r["lower"] > 0 else "")
    console(stderr=False).print(table)


def bound_records(prop, intervals) -> list[dict]:
    """One record per row of every clause: where it is, the condition it bounds, and its bounds."""
    records = []
    for region_index, (spec_region, interval) in enumerate(zip(prop.regions, intervals)):
        row = 0
        for clause_index, clause in enumerate(spec_region.clauses):
            for coefficients, rhs in zip(clause.coefficients, clause.rhs):
                records.append({"region": region_index, "clause": clause_index, "row": row,
                                "condition": row_condition(coefficients.tolist(), float(rhs)),
                                "lower": float(interval.lower[0, row]), "upper": float(interval.upper[0, row])})
                row += 1
    return records


def layer_records(graph, store: dict, full: bool) -> list[dict]:
    """One record per value feeding a nonlinearity, in graph order: its shape, extremes, and how many of
    its neurons some consumer relaxes loosely (a kink inside, or width for a smooth op); with `full`,
    every neuron's bounds."""
    records = []
    for name, bound in store.items():
        loose = sum(int(c.rule.unstable(bound).sum()) for c in graph.consumers(name) if not c.linear)
        record = {"value": name, "shape": list(bound.lower.shape[1:]), "neurons": bound.lower[0].numel(),
                  "lowest_lower": float(bound.lower.min()), "highest_upper": float(bound.upper.max()), "loose": loose}
        if full:
            record.update(lower=bound.lower[0].flatten().tolist(), upper=bound.upper[0].flatten().tolist())
        records.append(record)
    return records


def row_condition(coefficients: list[float], rhs: float) -> str:
    """The unsafe condition a row stands for, readably: `1.0*Y_0 - 1.0*Y_1 <= 0.3`."""
    terms = []
    for index, value in enumerate(coefficients):
        if value == 0:
            continue
        term = f"{_number(abs(value))}*Y_{index}"
        if terms:
            terms.append(f"{'-' if value < 0 else '+'} {term}")
        else:
            terms.append(f"-{term}" if value < 0 else term)
    return f"{' '.join(terms) or '0'} <= {_number(rhs)}"


def _number(value: float) -> str:
    """A float as short as it reads exactly enough (12 digits), always with a decimal point: 1.0, 0.3."""
    text = f"{value:.12g}"
    return text if any(mark in text for mark in ".eEn") else text + ".0"


def _check_domain(context, parameter, value):
    """--domain LOW HIGH: finite, with LOW below HIGH."""
    if value is None or len(value) == 0:
        return None
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise click.BadParameter(f"{low:g} {high:g} is not an interval: give finite LOW HIGH with LOW < HIGH, "
                                 "e.g. --domain 0 1")
    return (low, high)


@click.command(short_help="Certified radius around an input, bracketed by an attack.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="The clean input as a numeric .npy array (any shape with the model's number of entries).")
@click.option("--label", required=True, type=int, help="The class the input must keep.")
@click.option("--target", type=int, help="Only this adversarial class, not the label (default: every other class).")
@click.option("--norm", type=click.Choice(["inf", "2", "1"]), default="inf", show_default=True)
@method_option("--method", "-m", default="cnn-cert", show_default=True, role="bound",
               help="Bound method used to certify.")
@click.option("--domain", nargs=2, type=float, callback=_check_domain,
              help="Clip the ball to [LOW, HIGH] per input, e.g. --domain 0 1.")
@click.option("--steps", default=15, show_default=True, type=click.IntRange(min=1),
              help="Binary-search steps (log space, from 0.05); at least 1.")
@click.option("--no-attack", is_flag=True, help="Skip the attack's upper bound.")
@device_choice("Where the bounds compute: cpu only for now (the radius search builds its regions there).")
@bound_timeout_option
@threads_option
@handles_errors
def radius(model, input_path, label, target, norm, method, domain, steps, no_attack, device, timeout) -> None:
    """Certified lower bound on the minimum adversarial distortion around an input (CNN-Cert's
    log-space binary search), with the smallest distortion the PGD attack finds as an upper bound.
    The table goes to stdout, the certified radius last.

    \b
    Example:
      verikit radius net.onnx --input x.npy --label 3 --norm inf --method crown --domain 0 1
    """
    from verikit.api import certified_radius, load_model
    from verikit.roles import check_method

    use_threads()
    check_method(method, "bound", "--method")
    if target is not None and target == label:
        raise VerikitError(f"the target class {target} is the label itself", place="--target",
                           fix="give another class, or leave --target out for every other class")
    graph = load_model(model)
    x0 = read_input(input_path, graph.input_size, graph.input_shape)
    for name, value in (("label", label), ("target", target)):
        if value is not None and not 0 <= value < graph.output_size:
            raise VerikitError(f"--{name} {value} is not a class of a model with {graph.output_size} outputs",
                               fix=f"use 0..{graph.output_size - 1}")
    with time_limit(timeout, "the radius search"):
        result = certified_radius(graph, x0, label, target, norm, method, domain=domain, device=device,
                                  steps=steps, attack=not no_attack)
    _print_radius(result, input_path, norm, no_attack)


def read_input(path: str, size: int, shape) -> "torch.Tensor":  # noqa: F821 (torch is imported on use)
    """The flat float64 input of a numeric .npy array with `size` finite entries (a clear error otherwise)."""
    import numpy as np
    import torch

    fix = "save it with numpy.save(path, array) from a numeric array"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        reason = "not a .npy array file" if "pickle" in str(error) else str(error).splitlines()[0]
        raise VerikitError(f"cannot read the input: it must be a numeric .npy array ({reason})", path=path,
                           fix=fix) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        kind = "an .npz archive" if not isinstance(array, np.ndarray) else f"an array of {array.dtype}"
        raise VerikitError(f"the input must be a numeric .npy array, not {kind}", path=path, fix=fix)
    if array.size != size:
        raise VerikitError(f"the input has {array.size} entries but the model takes {size}", path=path,
                           fix=f"give an array of shape {list(shape)}")
    if not np.isfinite(array).all():
        raise VerikitError(f"the input has {int((~np.isfinite(array)).sum())} NaN or infinite entries", path=path,
                           fix="give finite values")
    return torch.from_numpy(array.astype(np.float64)).reshape(-1)


def _print_radius(result, input_path: str, norm: str, no_attack: bool) -> None:
    """The radius table on stdout, a note on stderr where the input is misclassified, the radius last."""
    from rich.table import Table

    table = Table("quantity", "value", title=f"L{norm} radius around {Path(input_path).name}, label {result.label}")
    table.add_row(f"certified ({result.method})", f"{result.certified:.6g}")
    table.add_row("upper bracket (did not certify)", f"{result.upper_bracket:.6g}")
    table.add_row("attack radius (misclassified)", f"{result.attack_radius:.6g}" if not no_attack else "-")
    table.add_row("seconds (certify / attack)", f"{result.seconds:.2f} / {result.attack_seconds:.2f}")
    console(stderr=False).print(table)
    if result.upper_bracket == 0.0:
        console().print(f"note: the model does not classify the input as {result.label} (radius 0)")
    click.echo(f"{result.certified:.6g}")
