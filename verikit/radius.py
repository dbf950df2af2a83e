"""Certified radius: CNN-Cert's log-space binary search (seed-papers 1.9), bracketed by an attack.

    result = certified_radius(graph, x0, label, norm="inf", method="cnn-cert")
    result.certified       largest radius tried at which the bound method proves the label (0 if none)
    result.upper_bracket   smallest radius tried at which it does not (inf if none)
    result.attack_radius   distance to x0 of the closest misclassified point PGD found (inf if none)

At radius eps the label is certified iff the lower bound of y_label - y_t over the Lp ball is > 0 for
the target t, or for every other class when no target is given. The search starts at 0.05 and moves
log(eps) by min(1, half the way to the other bracket) for 15 steps. The attack searches the same way
for the smallest radius at which PGD finds a point with y_t > y_label, starting from the upper bracket.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from math import ceil, exp, inf, log
from typing import Callable

import torch

from verikit.graph import Graph
from verikit.plugins import get_method
from verikit.region import Box, LpBall, parse_norm


@dataclass
class RadiusResult:
    """The outcome of `certified_radius` (radii in the input's units, for the norm `norm`)."""

    certified: float  # the last radius that certified (0.0 if none did)
    upper_bracket: float  # the smallest radius that did not certify (inf if all did)
    attack_radius: float  # ||x_adv - x0|| of the closest misclassified point found (inf: none found / not run)
    seconds: float  # time of the certification search
    attack_seconds: float  # time of the attack search
    label: int
    targets: tuple[int, ...]
    norm: float
    method: str
    history: list[tuple[float, bool]] = field(default_factory=list)  # (radius, certified) in search order
    adversarial: torch.Tensor | None = None  # the closest misclassified input found, flat


def certified_radius(graph: Graph, x0: torch.Tensor, label: int, target: int | None = None,
                     norm: str | float = "inf", method: str = "cnn-cert", options=None,
                     domain: Box | tuple[float, float] | None = None, steps: int = 15, start: float = 0.05,
                     attack: bool = True, attack_steps: int = 15) -> RadiusResult:
    """Certified radius around the flat input x0 [n] for `label` against `target` (None: every other
    class), by the bound method `method` (any registered one) with its `options`. `domain` (a Box of
    one problem, or (low, high) for every input) clips the ball. With `attack`, PGD brackets the
    radius from above (module doc)."""
    p = parse_norm(norm)
    x0 = x0.detach().reshape(-1).double()
    domain = _domain(domain, x0)
    n_out = graph.output_size
    targets = tuple(t for t in range(n_out) if t != label) if target is None else (int(target),)
    rows = margin_rows(label, targets, n_out)
    bound_method = get_method(method)
    options = options if options is not None else bound_method.default_options()

    def certifies(eps: float) -> bool:
        region = LpBall(x0.unsqueeze(0), torch.tensor([eps], dtype=torch.float64), p, domain)
        return bool((bound_method.bound(graph, region, rows, options).lower > 0).all())

    result = RadiusResult(0.0, inf, inf, 0.0, 0.0, label, targets, p, method)
    graph64 = graph.to(torch.float64)
    with torch.no_grad():
        if float(margins(graph64, x0.unsqueeze(0), rows).min()) <= 0:  # x0 itself is not classified as label
            result.upper_bracket, result.attack_radius, result.adversarial = 0.0, 0.0, x0.clone()
            return result
    clock = time.perf_counter()
    low, high = log_search(certifies, start, steps, result.history)
    result.certified, result.upper_bracket = _radius(low, 0.0), _radius(high, inf)
    result.seconds = time.perf_counter() - clock
    if attack:
        clock = time.perf_counter()
        _attack_search(result, graph64, x0, rows, domain, attack_steps, start)
        result.attack_seconds = time.perf_counter() - clock
    return result


def log_search(succeeds: Callable[[float], bool], start: float, steps: int,
               history: list[tuple[float, bool]] | None = None, low: float = -inf,
               high: float = inf) -> tuple[float, float]:
    """CNN-Cert's search: (log of the last radius that succeeded, log of the last that failed), from
    `start`, moving log(eps) up or down by min(1, half the way to the other bracket) each step."""
    log_eps = log(start)
    for _ in range(steps):
        passed = succeeds(exp(log_eps))
        if history is not None:
            history.append((exp(log_eps), passed))
        if passed:
            low = log_eps
            log_eps += min(1.0, (high - log_eps) / 2)
        else:
            high = log_eps
            log_eps -= min(1.0, (log_eps - low) / 2)
    return low, high


def margin_rows(label: int, targets: tuple[int, ...], n_out: int) -> torch.Tensor:
    """Coefficient rows [1, T, n_out] of y_label - y_t for each target t."""
    rows = torch.zeros(len(targets), n_out, dtype=torch.float64)
    rows[:, label] = 1.0
    rows[torch.arange(len(targets)), list(targets)] -= 1.0
    return rows.unsqueeze(0)


def margins(graph: Graph, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """y_label - y_t at flat points x [m, n] for every row: [m, T]."""
    return graph.forward_flat(x) @ rows[0].T.to(x.dtype)


def pgd(graph: Graph, x0: torch.Tensor, rows: torch.Tensor, norm: float, eps: float, domain: Box | None,
        restarts: int = 8, iterations: int = 40, seed: int = 0) -> torch.Tensor | None:
    """A flat point within `eps` of x0 (and in the domain) where some margin row is negative, or None:
    steepest-descent steps of 2.5 eps / iterations for the norm, from x0 and random starts."""
    region = LpBall(x0.unsqueeze(0), torch.tensor([eps], dtype=x0.dtype), norm, domain)
    starts = region.sample(restarts - 1, torch.Generator().manual_seed(seed))[0]
    x = torch.cat([region.project(x0.reshape(1, 1, -1))[0], starts])
    step = 2.5 * eps / iterations
    for _ in range(iterations + 1):
        x.requires_grad_(True)
        worst = margins(graph, x, rows).amin(-1)
        if bool((worst < 0).any()):
            return x[int(worst.argmin())].detach()
        (gradient,) = torch.autograd.grad(worst.sum(), x)
        with torch.no_grad():
            x = region.project((x - step * steepest(gradient, norm)).unsqueeze(0))[0]
    return None


def steepest(gradient: torch.Tensor, norm: float) -> torch.Tensor:
    """A unit-norm direction along the gradient for the norm: its sign (inf), itself normalised (2),
    or its sign on the top 1% of coordinates by magnitude (1, spread a little to move faster)."""
    if norm == inf:
        return gradient.sign()
    if norm == 2.0:
        return gradient / gradient.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    count = max(1, ceil(0.01 * gradient.shape[-1]))
    top = gradient.abs().topk(count, dim=-1).indices
    direction = torch.zeros_like(gradient).scatter_(-1, top, gradient.gather(-1, top).sign())
    return direction / count


def _attack_search(result: RadiusResult, graph: Graph, x0: torch.Tensor, rows: torch.Tensor,
                   domain: Box | None, steps: int, start: float) -> None:
    """Fill the attack radius: the log search for the smallest radius at which PGD succeeds, starting
    at the certification's upper bracket (no attack can succeed up to the certified radius)."""
    def attack_fails(eps: float) -> bool:
        found = pgd(graph, x0, rows, result.norm, eps, domain)
        if found is None:
            return True
        distance = float(torch.linalg.vector_norm(found - x0, ord=result.norm))
        if distance < result.attack_radius:
            result.attack_radius, result.adversarial = distance, found
        return False

    first = result.upper_bracket if result.upper_bracket < inf else start
    low = log(result.certified) if result.certified > 0 else -inf
    log_search(attack_fails, first, steps, low=low)


def _domain(domain: Box | tuple[float, float] | None, x0: torch.Tensor) -> Box | None:
    """A Box of one problem in float64, from a Box or a (low, high) pair applying to every input."""
    if domain is None:
        return None
    if isinstance(domain, Box):
        return Box(domain.lower.reshape(1, -1).double(), domain.upper.reshape(1, -1).double())
    low, high = domain
    return Box(torch.full_like(x0, float(low)).unsqueeze(0), torch.full_like(x0, float(high)).unsqueeze(0))


def _radius(log_value: float, default: float) -> float:
    return exp(log_value) if abs(log_value) < inf else default
