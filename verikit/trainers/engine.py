"""Bounds for training from verikit's own engines, with autograd through them.

`LiveGraph` turns a live nn.Sequential into a verikit Graph whose layer rules are the registered ones
(built exactly as the ONNX importer builds them) but hold the module's own parameters, not float32
copies. The interval pass (`verikit.propagate.interval`) and back-substitution
(`verikit.propagate.backward.compute_bounds`) then run on it with gradients enabled: the training loss
of IBP and CROWN-IBP is the bound `verify` computes, differentiated.

The Gemm, Conv, Relu, Flatten and Add rules keep the autograd graph: Gemm and Conv push coefficients with
their own weight and bias (not `transpose_by_autograd`, whose offset is detached), the ReLU relaxation
is torch arithmetic on the bounds, and Flatten only reshapes.
"""
from __future__ import annotations

import copy
import weakref

import numpy as np
import torch
from torch import nn

from verikit.bounds import Interval
from verikit.errors import VerikitError
from verikit.graph import Graph, Node, NodeInfo
from verikit.propagate.backward import compute_bounds
from verikit.propagate.interval import affine_image, interval_pass
from verikit.region import Box
from verikit.trainers.architectures import Residual


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def _describe(module: nn.Module) -> tuple[str, dict, dict[str, np.ndarray]]:
    """(ONNX op type, attributes, constants by input position name) of one module, as torch exports it."""
    if isinstance(module, nn.Linear):
        constants = {"weight": _numpy(module.weight)}
        if module.bias is not None:
            constants["bias"] = _numpy(module.bias)
        return "Gemm", {"transB": 1}, constants
    if isinstance(module, nn.Conv2d):
        if not isinstance(module.padding, tuple) or module.padding_mode != "zeros":
            raise VerikitError(f"{module} has padding {module.padding!r} ({module.padding_mode})",
                               place="model", fix="use integer zero padding")
        pads = [int(p) for p in module.padding] * 2
        attributes = {"strides": list(module.stride), "pads": pads, "dilations": list(module.dilation),
                      "group": module.groups, "kernel_shape": list(module.kernel_size)}
        constants = {"weight": _numpy(module.weight)}
        if module.bias is not None:
            constants["bias"] = _numpy(module.bias)
        return "Conv", attributes, constants
    if isinstance(module, nn.ReLU):
        return "Relu", {}, {}
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise VerikitError(f"{module} flattens other dims than 1..-1", place="model", fix="use nn.Flatten()")
        return "Flatten", {"axis": 1}, {}
    raise VerikitError(f"a {type(module).__name__} layer cannot be bounded for training", place="model",
                       fix="build the model from Conv2d, Linear, ReLU, Flatten and Residual "
                           "(verikit.trainers.architectures)")


def _bind(rule, module: nn.Module) -> None:
    """Point the rule's weight and bias at the module's parameters, in the layout the rule built."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        weight = module.weight.t() if isinstance(module, nn.Linear) else module.weight
        assert tuple(rule.weight.shape) == tuple(weight.shape), "rule and module weights differ in layout"
        rule.weight, rule.bias = weight, module.bias


class LiveGraph:
    """A verikit Graph over a live nn.Sequential (residual blocks become an Add of the block's input and
    its body); `graph()` binds the current parameters."""

    def __init__(self, model: nn.Sequential, input_shape: tuple[int, ...]):
        self.model = model
        self.input_shape = (1, *input_shape)  # ONNX shapes carry the batch dim (exported with batch 1)
        self.shapes: dict[str, tuple[int, ...]] = {"input": self.input_shape}
        self.nodes: list[Node] = []
        self.modules: list[nn.Module | None] = []  # the module each node binds to (None for an Add)
        with torch.no_grad():
            value = torch.zeros(self.input_shape, dtype=next(model.parameters()).dtype)
            output, _ = self._add_all(model, "input", value)
        self.template = Graph("input", self.input_shape, output, self.nodes, self.shapes,
                              source="live nn.Sequential")

    def _add_all(self, modules: nn.Sequential, previous: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
        """Append the nodes of `modules` fed by `previous`; returns the last output's name and value."""
        for module in modules:
            if isinstance(module, Residual):
                skip = previous
                body, value = self._add_all(module.body, previous, value)
                previous = self._add_node("Add", {}, (skip, body), {}, value, None)
            else:
                op, attributes, constants = _describe(module)
                value = module(value)
                previous = self._add_node(op, attributes, (previous,), constants, value, module)
        return previous, value

    def _add_node(self, op: str, attributes: dict, inputs: tuple[str, ...], constants: dict[str, np.ndarray],
                  value: torch.Tensor, module: nn.Module | None) -> str:
        """Build one node with the registered rule for `op`, as the ONNX importer would; returns its output."""
        from verikit.plugins import registry

        index = len(self.nodes)
        names = {key: f"{index}.{key}" for key in constants}
        constant_names = tuple(names[k] for k in ("weight", "bias") if k in names)
        info = NodeInfo(f"{op}_{index}", op, attributes, (*inputs, *constant_names),
                        {names[k]: v for k, v in constants.items()},
                        (*(self.shapes[name] for name in inputs), *(constants[k].shape for k in ("weight", "bias")
                                                                   if k in names)),
                        tuple(value.shape))
        entry = registry().layer(op)
        output = f"v{index}"
        self.nodes.append(Node(info.name, op, inputs, output, entry.provider.build(info), entry.plugin))
        self.modules.append(module)
        self.shapes[output] = tuple(value.shape)
        return output

    def graph(self) -> Graph:
        """The graph with rules holding the module's parameters now (gradients flow into them)."""
        nodes = []
        for node, module in zip(self.template.nodes, self.modules):
            rule = copy.copy(node.rule)
            if module is not None:
                _bind(rule, module)
            nodes.append(Node(node.name, node.op_type, node.inputs, node.output, rule, node.plugin))
        t = self.template
        return Graph(t.input_name, t.input_shape, t.output_name, nodes, dict(t.shapes), t.source)


_TEMPLATES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, LiveGraph]]" = weakref.WeakKeyDictionary()


def live_graph(model: nn.Sequential, input_shape: tuple[int, ...]) -> Graph:
    """The graph over the model's current parameters; its template (rules built from a traced forward
    and copies of the weights) is made once per model and input shape, not at every training step."""
    templates = _TEMPLATES.setdefault(model, {})
    if tuple(input_shape) not in templates:
        templates[tuple(input_shape)] = LiveGraph(model, tuple(input_shape))
    return templates[tuple(input_shape)].graph()


def input_box(x: torch.Tensor, eps: float, domain: tuple[float, float] | None = None) -> Box:
    """The L-inf box of radius eps around each input, flat [B, n]; clipped to `domain` when given."""
    flat = x.flatten(1)
    lower, upper = flat - eps, flat + eps
    if domain is not None:
        lower, upper = lower.clamp(min=domain[0]), upper.clamp(max=domain[1])
    return Box(lower, upper)


def margin_rows(y: torch.Tensor, classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows e_y - e_j for every class j ([B, classes, classes]; row y is zero): lower bounds of
    y_true - y_j, all at least 0 exactly when the input's whole box is classified y."""
    eye = torch.eye(classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def ibp_bounds(graph: Graph, box: Box, dtype: torch.dtype) -> dict[str, Interval]:
    """The interval of every value (verikit's interval pass), differentiable in the weights."""
    return interval_pass(graph.to(dtype, box.lower.device), box.to(dtype, box.lower.device).bounding_box())


def ibp_margin(graph: Graph, box: Box, rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Lower bounds [B, K] of rows @ output by IBP, as the `ibp` method computes them."""
    output = ibp_bounds(graph, box, dtype)[graph.output_name]
    flat = Interval(output.lower.flatten(1), output.upper.flatten(1))
    return affine_image(rows.to(dtype), flat).lower


def crown_margin(graph: Graph, box: Box, rows: torch.Tensor, dtype: torch.dtype = torch.float32,
                 intermediate: dict[str, Interval] | None = None) -> torch.Tensor:
    """Lower bounds [B, K] of rows @ output by back-substitution with CROWN's relaxation: intermediate
    bounds by CROWN too (as the `crown` method), or the given ones (CROWN-IBP passes IBP's)."""
    result = compute_bounds(graph, box, rows, "adaptive", dtype, intermediate,
                            intersect_ibp=intermediate is None, sides="lower")
    return result.lower


def crown_ibp_margin(graph: Graph, box: Box, rows: torch.Tensor, beta: float,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CROWN-IBP: beta * (CROWN on IBP's intermediate bounds) + (1 - beta) * IBP, lower bounds [B, K]."""
    bounds = ibp_bounds(graph, box, dtype)
    output = bounds[graph.output_name]
    ibp = affine_image(rows.to(dtype), Interval(output.lower.flatten(1), output.upper.flatten(1))).lower
    if beta <= 0:
        return ibp
    known = {name: bound for name, bound in bounds.items() if name not in (graph.input_name, graph.output_name)}
    return beta * crown_margin(graph, box, rows, dtype, known) + (1 - beta) * ibp
