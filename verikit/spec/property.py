"""Property: an OR over input regions, each with an output condition in DNF describing the UNSAFE set.

The answer is `sat` when some input of some region satisfies every row of some clause
(`coefficients @ y <= rhs`), and `unsat` when no input can. Inputs and outputs are flattened in
VNN-LIB order (X_0, X_1, ... and Y_0, Y_1, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verikit.region import Box, LpBall, Region


@dataclass(frozen=True)
class OutputClause:
    """An AND of linear rows over the outputs: coefficients [R, n_out] @ y <= rhs [R]."""

    coefficients: torch.Tensor
    rhs: torch.Tensor

    def slack(self, outputs: torch.Tensor) -> torch.Tensor:
        """Largest row violation `c . y - d` per output row of outputs [..., n_out]: <= 0 means satisfied.
        A clause with no rows always holds: its slack is -inf."""
        values = outputs @ self.coefficients.T.to(outputs.dtype) - self.rhs.to(outputs.dtype)
        if values.shape[-1] == 0:
            return values.new_full(values.shape[:-1], float("-inf"))
        return values.amax(-1)


@dataclass(frozen=True)
class InputConstraints:
    """Linear constraints beyond the box: coefficients [R, n_in] @ x <= rhs [R]."""

    coefficients: torch.Tensor
    rhs: torch.Tensor

    def slack(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs @ self.coefficients.T.to(inputs.dtype) - self.rhs.to(inputs.dtype)).amax(-1)


@dataclass(frozen=True)
class RegionSpec:
    """One input region (batch of 1) and the unsafe clauses that must be refuted on it."""

    region: Region
    clauses: tuple[OutputClause, ...]
    input_constraints: InputConstraints | None = None

    def rows(self, clauses: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows `c . y <= d` of the given clauses (default all), stacked: coefficients [R, n_out],
        right-hand sides [R], and the clause (its position in that list) each row belongs to [R]."""
        chosen = [self.clauses[i] for i in (range(len(self.clauses)) if clauses is None else clauses)]
        owner = [torch.full((c.coefficients.shape[0],), k, dtype=torch.long) for k, c in enumerate(chosen)]
        return (torch.cat([c.coefficients for c in chosen]), torch.cat([c.rhs for c in chosen]),
                torch.cat(owner) if owner else torch.zeros(0, dtype=torch.long))

    def violation(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """How far each point is from satisfying the best clause: <= 0 means it is a counterexample
        (region membership is checked separately). Shapes: inputs [..., n_in], outputs [..., n_out]."""
        value = torch.stack([clause.slack(outputs) for clause in self.clauses], -1).amin(-1)
        if self.input_constraints is not None:
            value = torch.maximum(value, self.input_constraints.slack(inputs))
        return value


@dataclass(frozen=True)
class Property:
    """OR over regions; `sat` iff some point of some region lies in one of its unsafe clauses."""

    n_inputs: int
    n_outputs: int
    regions: tuple[RegionSpec, ...]
    source: str = ""

    def is_counterexample(self, inputs: torch.Tensor, outputs: torch.Tensor, tolerance: float = 0.0) -> bool:
        """True when the flat point (inputs [n_in], outputs [n_out]) violates the property in some region."""
        x, y = inputs.reshape(1, 1, -1), outputs.reshape(1, -1)
        for spec in self.regions:
            region = spec.region.to(x.dtype)
            if bool(region.contains(x, tolerance)[0, 0]) and float(spec.violation(x[0], y)[0]) <= tolerance:
                return True
        return False


def robustness_property(center: torch.Tensor, label: int, epsilon: float, n_outputs: int, norm: float = float("inf"),
                        domain: Box | None = None, targets: tuple[int, ...] | None = None,
                        source: str = "") -> Property:
    """Local robustness around `center` (flat [n_in]): unsafe where some target output (default: every
    other class) reaches the label's, Y_label - Y_j <= 0, within the eps ball (clipped to `domain`)."""
    clauses = []
    for j in targets if targets is not None else [j for j in range(n_outputs) if j != label]:
        row = torch.zeros(1, n_outputs, dtype=torch.float64)
        row[0, label], row[0, j] = 1.0, -1.0
        clauses.append(OutputClause(row, torch.zeros(1, dtype=torch.float64)))
    flat = torch.as_tensor(center, dtype=torch.float64).reshape(1, -1)
    ball = LpBall(flat, torch.tensor([float(epsilon)], dtype=torch.float64), norm, domain)
    return Property(flat.shape[1], n_outputs, (RegionSpec(ball, tuple(clauses)),), source=source)
