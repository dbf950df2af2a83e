"""`cnn-cert`: CNN-Cert (Boopathy et al., AAAI'19): layer-by-layer back-substitution that keeps each
neuron's coefficients over its receptive field only (verikit.propagate.patches).

The bounds equal Fast-Lin's (mode "relu") or CROWN's (mode "ada") on the same network; only the cost
differs. Nodes whose rule cannot push patches (Flatten, Gemm, Concat, 1-D/3-D convs, a plugin's op
without `backward_patches`, ...) get dense coefficients from there to the input instead: nothing is
refused for lack of patch support, the node just costs what it costs in the dense engine. What every
method of this family needs (backward and relax on every node) is listed in `needs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.propagate.patches import patch_bounds, patch_capable
from verikit.region import Region

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# CNN-Cert's activation modes -> the layer rules' relaxation modes (seed-papers 1.3). S-shaped
# activations get their tangent/chord lines in every mode, so "general" is "ada" in practice.
MODES = {"relu": "same-slope", "ada": "adaptive", "zero": "zero", "general": "adaptive"}


@dataclass
class CnnCertOptions:
    """Options of `cnn-cert`."""

    mode: str = "ada"  # "relu" (Fast-Lin slopes) | "ada" (CROWN-adaptive) | "zero" | "general"
    dtype: str = "float32"  # "float32" | "float64": precision of the whole computation
    intersect_ibp: bool = False  # intersect intermediate bounds with IBP (tighter; off keeps CNN-Cert's numbers)
    batch_rows: int = 2048  # problems x dense rows per backward pass (memory cap of the dense parts)
    max_entries: int = 2 ** 24  # coefficient entries per pass of patch rows (memory cap of the patch parts)
    patch_limit: float = 1.0  # switch to dense once a window covers more than this times its map


class CnnCert(Method):
    name = "cnn-cert"
    kind = "bound"
    summary = "CNN-Cert: back-substitution over receptive-field patches (Boopathy et al. 2019)"
    Options: ClassVar[type] = CnnCertOptions
    needs: ClassVar[tuple[str, ...]] = ("forward", "interval", "backward", "relax")

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options: CnnCertOptions | None = None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Bounds [B, K] of `coefficients @ output` over the region (see Method.bound)."""
        options = options or self.default_options()
        if options.mode not in MODES:
            raise ValueError(f"cnn-cert: mode {options.mode!r} is not one of {', '.join(MODES)}")
        if options.dtype not in DTYPES:
            raise ValueError(f"cnn-cert: dtype {options.dtype!r} is not one of {', '.join(DTYPES)}")
        with torch.no_grad():
            return patch_bounds(graph, region, coefficients, MODES[options.mode], DTYPES[options.dtype],
                                intermediate, intersect_ibp=options.intersect_ibp, batch_rows=options.batch_rows,
                                max_entries=options.max_entries, patch_limit=options.patch_limit)

    @staticmethod
    def dense_nodes(graph: Graph) -> list[str]:
        """Names of the nodes whose rules cannot take patches (they run on dense coefficients)."""
        return [f"{node.op_type} '{node.name}'" for node in graph.nodes if not patch_capable(node)]


@hookimpl
def verikit_methods(register) -> None:
    register(CnnCert())
