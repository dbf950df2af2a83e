"""The IR: a Graph of Nodes in topological order over named values.

Every value carries a leading *sample* dimension in front of its ONNX shape, so one graph evaluates
many inputs (or many bound problems) at once: a value with ONNX shape (1, 5) is a tensor [N, 1, 5].
Nodes hold built layer rules (weights and attributes only); bounds are never stored here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from verikit.layers.base import LayerRule


@dataclass(frozen=True)
class NodeInfo:
    """What a layer rule's `build` sees of one ONNX node: attributes, constants and shapes."""

    name: str
    op_type: str
    attributes: dict[str, Any]
    inputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    input_shapes: tuple[tuple[int, ...] | None, ...]
    output_shape: tuple[int, ...]
    opset: int = 13

    @property
    def computed_inputs(self) -> tuple[str, ...]:
        """Inputs that are values computed from the network input (not constants, not omitted)."""
        return tuple(n for n in self.inputs if n and n not in self.constants)

    def constant(self, index: int) -> np.ndarray | None:
        """The constant at input position `index`, or None when it is computed or omitted."""
        if index >= len(self.inputs) or not self.inputs[index]:
            return None
        return self.constants.get(self.inputs[index])


@dataclass(frozen=True)
class Node:
    """One operation: consumes computed values `inputs` (in the order its rule takes them)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    output: str
    rule: "LayerRule"
    plugin: str = ""

    @property
    def linear(self) -> bool:
        return self.rule.linear


@dataclass
class Graph:
    """A network: one input value, one output value, nodes in topological order."""

    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    source: str = ""

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[self.output_name]

    @property
    def input_size(self) -> int:
        return prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return prod(self.output_shape)

    def producer(self, value: str) -> Node | None:
        return next((n for n in self.nodes if n.output == value), None)

    def consumers(self, value: str) -> list[Node]:
        return [n for n in self.nodes if value in n.inputs]

    def forward(self, x: torch.Tensor, *, keep_all: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """Evaluate on inputs shaped [N, *input_shape] (or flat [N, input_size])."""
        x = self.shape_input(x)
        values = {self.input_name: x}
        for node in self.nodes:
            values[node.output] = node.rule.forward(*(values[name] for name in node.inputs))
        return values if keep_all else values[self.output_name]

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Flat inputs [N, input_size] to flat outputs [N, output_size] (VNN-LIB's X_i / Y_j order)."""
        return self.forward(x).reshape(x.shape[0], -1)

    def shape_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.input_shape)

    def to(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> "Graph":
        """A copy whose rules hold their tensors in `dtype` on `device`."""
        nodes = [Node(n.name, n.op_type, n.inputs, n.output, n.rule.to(dtype, device), n.plugin)
                 for n in self.nodes]
        return Graph(self.input_name, self.input_shape, self.output_name, nodes, dict(self.shapes),
                     self.source)

    def describe(self) -> str:
        lines = [f"input {self.input_name} {list(self.input_shape)}"]
        lines += [f"{n.op_type:<20} {n.name:<30} -> {n.output} {list(self.shapes.get(n.output, ()))}"
                  for n in self.nodes]
        return "\n".join(lines)
