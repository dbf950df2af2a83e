"""A classifier cut at its last feature map, for interpretation maps: `forward(x)` gives the feature map
F [B, C, H, W] and the logits computed from it (gradients w.r.t. F flow), and, when the network ends
with global average pooling and a bias-free linear head, `pooled_head` maps a pooled vector [M, C] to
logits [M, K], so CAM_k(i, j) = pooled_head(F[:, :, i, j])_k and logit k is the spatial mean of CAM_k.

Built from a verikit-trained nn.Sequential (`from_sequential`) or from an ONNX model loaded with
verikit (`from_graph`, `load_network`): the cut is the input of the last GlobalAveragePool, else the
output of the last convolution (GradCAM++ still works there), else none (only IG works).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from verikit.errors import VerikitError
from verikit.graph import Graph

NO_GAP = "has no global average pooling followed by a bias-free linear head, so CAM is undefined for it"


@dataclass
class SplitNetwork:
    """A classifier cut at a feature map; `why_no_cam` / `why_no_features` say what a map cannot use."""

    forward: Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]]  # x -> (F or None, logits)
    pooled_head: Callable[[torch.Tensor], torch.Tensor] | None
    input_shape: tuple[int, ...]  # (C, H, W) of one input
    source: str
    why_no_cam: str = ""
    why_no_features: str = ""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits [B, K] for inputs [B, C, H, W]."""
        return self.forward(x)[1]

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        """CAM of every class, [B, K, H, W], from the feature map [B, C, H, W]."""
        if self.pooled_head is None:
            raise VerikitError(f"the model {self.why_no_cam}", path=self.source,
                               fix="use --method gradcam++ or ig, or train a GAP architecture (--arch small-gap)")
        batch, channels, height, width = features.shape
        per_position = self.pooled_head(features.permute(0, 2, 3, 1).reshape(-1, channels))
        return per_position.reshape(batch, height, width, -1).permute(0, 3, 1, 2)

    def features_and_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F, CAM [B, K, H, W], logits) of inputs x."""
        features, logits = self.forward(x)
        return features, self.cam(features), logits


def _is_gap(module: nn.Module) -> bool:
    return isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1))


def _bias_free_linear(modules: list[nn.Module]) -> bool:
    return all(isinstance(m, nn.Flatten) or (isinstance(m, nn.Linear) and m.bias is None) for m in modules)


def from_sequential(model: nn.Sequential, input_shape: tuple[int, ...], source: str = "nn.Sequential",
                    ) -> SplitNetwork:
    """Cut a torch nn.Sequential at its last GAP's input (CAM available when only Flatten and bias-free
    Linear follow), else after its last Conv2d."""
    modules = list(model)
    gaps = [index for index, module in enumerate(modules) if _is_gap(module)]
    convs = [index for index, module in enumerate(modules) if isinstance(module, nn.Conv2d)]
    cut = gaps[-1] if gaps else (convs[-1] + 1 if convs else None)
    if cut is None:
        return SplitNetwork(lambda x: (None, model(x)), None, tuple(input_shape), source, NO_GAP,
                            "has no convolution, so it has no feature map for GradCAM++")
    body, rest = nn.Sequential(*modules[:cut]), nn.Sequential(*modules[cut:])

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = body(x)
        return features, rest(features)

    tail = modules[cut + 1:]
    if gaps and _bias_free_linear(tail):
        head = nn.Sequential(*tail)
        return SplitNetwork(forward, lambda pooled: head(pooled[:, :, None, None]), tuple(input_shape), source)
    return SplitNetwork(forward, None, tuple(input_shape), source, NO_GAP)


def from_graph(graph: Graph) -> SplitNetwork:
    """Cut a verikit Graph (ONNX batch dim 1) at its last GlobalAveragePool's input, else at its last
    Conv's output; CAM needs only linear, bias-free nodes after the pooling."""
    if len(graph.input_shape) != 4 or graph.input_shape[0] != 1:
        raise VerikitError(f"the model takes inputs of shape {list(graph.input_shape)}", path=graph.source,
                           fix="interpretation maps need image inputs [1, C, H, W]")
    positions = {node.output: index for index, node in enumerate(graph.nodes)}
    gaps = [n for n in graph.nodes if n.op_type == "GlobalAveragePool"]
    convs = [n for n in graph.nodes if n.op_type == "Conv" and len(graph.shapes.get(n.output, ())) == 4]
    if gaps:
        cut_value = gaps[-1].inputs[0]
    elif convs:
        cut_value = convs[-1].output
    else:
        return SplitNetwork(lambda x: (None, graph.forward(x).reshape(len(x), -1)), None, graph.input_shape[1:],
                            graph.source, NO_GAP, "has no convolution, so it has no feature map for GradCAM++")
    channels_shape = graph.shapes[cut_value][1:]

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = {graph.input_name: graph.shape_input(x)}
        features = None
        for node in graph.nodes:
            values[node.output] = node.rule.forward(*(values[name] for name in node.inputs))
            if node.output == cut_value:
                features = values[cut_value].reshape(len(x), *channels_shape)
                values[cut_value] = features.reshape(len(x), 1, *channels_shape)  # the logits depend on `features`
        return features, values[graph.output_name].reshape(len(x), -1)

    head = _pooled_head(graph, gaps[-1], positions) if gaps else None
    return SplitNetwork(forward, head, graph.input_shape[1:], graph.source, "" if head else NO_GAP)


def _pooled_head(graph: Graph, gap, positions: dict[str, int]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pooled [M, C] -> logits [M, K] through the nodes after the GAP, when they are linear, read only
    the GAP's chain and map 0 to 0 (no bias); None otherwise."""
    tail = graph.nodes[positions[gap.output] + 1:]
    known = {gap.output}
    for node in tail:
        if not node.linear or not set(node.inputs) <= known:
            return None
        known.add(node.output)
    if graph.output_name not in known:
        return None
    pooled_shape = graph.shapes[gap.output]

    def head(pooled: torch.Tensor) -> torch.Tensor:
        values = {gap.output: pooled.reshape(len(pooled), *pooled_shape)}
        for node in tail:
            values[node.output] = node.rule.forward(*(values[name] for name in node.inputs))
        return values[graph.output_name].reshape(len(pooled), -1)

    with torch.no_grad():
        at_zero = head(torch.zeros(1, pooled_shape[1]))
    return head if float(at_zero.abs().max()) == 0.0 else None


def load_network(path: str) -> SplitNetwork:
    """An ONNX file, loaded (and checked against onnxruntime) by verikit, cut for interpretation maps."""
    from verikit.api import load_model

    return from_graph(load_model(path))
