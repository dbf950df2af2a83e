"""BatchNormalization in inference mode: a per-channel affine map y = x * a + b with
a = scale / sqrt(var + epsilon) and b = B - mean * a (the ScaleShift rule of linear.py)."""
from __future__ import annotations

import numpy as np

from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.linear import ScaleShift, as_tensor


class BatchNormalization(ScaleShift):
    """Inference-mode batch normalisation over channel dim 1 of [batch, channels, *space]."""

    op_types = ("BatchNormalization",)

    @classmethod
    def build(cls, node: NodeInfo) -> "BatchNormalization":
        params = [node.constant(i) for i in range(1, 5)]
        if len(node.computed_inputs) != 1 or any(p is None for p in params):
            raise cls.reject(node, "scale, B, mean and var must be constants",
                             "export the model in eval mode with constant statistics")
        if int(node.attributes.get("training_mode", 0)):
            raise cls.reject(node, "training_mode=1 (batch statistics) is not supported",
                             "export the model in eval mode")
        in_shape = tuple(node.input_shapes[0])
        if len(in_shape) < 2:
            raise cls.reject(node, f"input shape {in_shape} has no channel dim", "use [batch, channels, ...]")
        scale, shift, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        epsilon = float(node.attributes.get("epsilon", 1e-5))
        factor = scale / np.sqrt(var + epsilon)
        offset = shift - mean * factor
        spatial = int(node.attributes.get("spatial", 1))  # opset < 9: spatial=0 normalises per activation
        shape = in_shape[1:] if not spatial else (in_shape[1],) + (1,) * (len(in_shape) - 2)
        if factor.size != int(np.prod(shape)) or offset.size != factor.size:
            raise cls.reject(node, f"parameters of size {factor.size} do not fit the input shape {in_shape}",
                             "check the exported model")
        return cls(node, scale=as_tensor(factor.reshape(shape)), shift=as_tensor(offset.reshape(shape)))


@hookimpl
def verikit_layers(register) -> None:
    register(BatchNormalization)
