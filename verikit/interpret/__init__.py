"""Interpretation maps and the interpretation-aware defence's tools (Boopathy et al., ICML'20).

`network` cuts a classifier at its last feature map (a verikit-trained nn.Sequential, or an ONNX model
with a GAP + bias-free linear head); `maps` computes CAM, GradCAM++ and Integrated Gradients;
`discrepancy` the 1-, 2- and all-class measures; `attacks` sign-gradient attacks, PGD accuracy and the
top-k CAM attack; `sneaking` the interpretability sneaking attack; `metrics` Kendall's tau and top-k
intersection; `pictures` PNG files for `verikit explain`. The trainers are `verikit.trainers.interpret`
and `verikit.trainers.trades`.
"""
from __future__ import annotations

from verikit.interpret.maps import METHODS, explain
from verikit.interpret.network import SplitNetwork, from_graph, from_sequential, load_network

__all__ = ["METHODS", "SplitNetwork", "explain", "from_graph", "from_sequential", "load_network"]
