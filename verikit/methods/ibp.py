"""`ibp`: interval bound propagation (Gowal et al. 2018): push the region's bounding box through
every layer's interval rule."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.propagate.backward import region_device
from verikit.propagate.interval import affine_image, interval_pass
from verikit.region import Region


@dataclass
class IBPOptions:
    """dtype: 'float32' (fast) or 'float64' (tighter rounding)."""

    dtype: str = "float32"


class IBP(Method):
    name = "ibp"
    kind = "bound"
    summary = "interval bound propagation (Gowal et al. 2018)"
    Options = IBPOptions
    needs = ("forward", "interval")

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options: IBPOptions | None = None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        options = options or IBPOptions()
        dtype = getattr(torch, options.dtype)
        device = region_device(region)
        graph, region = graph.to(dtype, device), region.to(dtype, device)
        with torch.no_grad():
            bounds = interval_pass(graph, region.bounding_box(), intermediate)
        output = bounds[graph.output_name]
        flat = Interval(output.lower.flatten(1), output.upper.flatten(1))
        return affine_image(coefficients.to(dtype=dtype, device=device), flat)


@hookimpl
def verikit_methods(register) -> None:
    register(IBP())
