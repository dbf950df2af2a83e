"""Fast-Lin and CROWN: back-substitution with per-neuron linear relaxations (seed papers 3.1, 3.2).

Both run the dense engine of verikit.propagate.backward; they differ only in the ReLU relaxation:
Fast-Lin gives both lines the same slope u/(u-l), CROWN picks the lower slope adaptively (1 when
u >= -l, else 0). Sigmoid, tanh and arctan use their tangent/chord lines in either method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.propagate.backward import compute_bounds
from verikit.region import Region

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LinearRelaxationOptions:
    """Options of the back-substitution methods."""

    dtype: str = "float32"  # "float32" | "float64": precision of the whole computation
    intersect_ibp: bool = True  # intersect every intermediate bound with interval propagation (sound, tighter)
    batch_rows: int = 2048  # problems x coefficient rows per backward pass (memory cap)


class LinearRelaxationMethod(Method):
    """A bound method: layer-by-layer back-substitution with the relaxation mode `mode`."""

    kind: ClassVar[str] = "bound"
    mode: ClassVar[str] = ""
    Options: ClassVar[type] = LinearRelaxationOptions
    needs: ClassVar[tuple[str, ...]] = ("forward", "interval", "backward", "relax")

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options=None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Bounds [B, K] of `coefficients @ output` over the region (see Method.bound)."""
        options = options or self.default_options()
        if options.dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype {options.dtype!r} is not one of {', '.join(DTYPES)}")
        with torch.no_grad():
            return compute_bounds(graph, region, coefficients, self.mode, DTYPES[options.dtype], intermediate,
                                  intersect_ibp=options.intersect_ibp, batch_rows=options.batch_rows)


class FastLin(LinearRelaxationMethod):
    name = "fast-lin"
    mode = "same-slope"
    summary = "back-substitution, ReLU lines with the same slope u/(u-l) (Weng et al. 2018)"


class Crown(LinearRelaxationMethod):
    name = "crown"
    mode = "adaptive"
    summary = "back-substitution, adaptive ReLU lower slope, tangent/chord S-shapes (Zhang et al. 2018)"


@hookimpl
def verikit_methods(register) -> None:
    register(FastLin())
    register(Crown())
