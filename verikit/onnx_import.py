"""ONNX file -> Graph. Checks the file, infers static shapes, folds constants, finds a layer plugin
for every node (reporting every unsupported op at once) and builds each node's rule once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from verikit.errors import ModelError, VerikitError
from verikit.graph import Graph, Node, NodeInfo
from verikit.plugins import manager, registry


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file; any failure is a ModelError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("file not found", path=str(path), fix="check the path to the .onnx model")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError and friends
        raise ModelError(f"not a readable ONNX model ({type(error).__name__}: {error})", path=str(path),
                         fix="the file is truncated or corrupt; export or download it again") from None
    if not model.graph.node:
        raise ModelError("the model has no nodes", path=str(path), fix="export the network again")
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        raise ModelError(f"the ONNX checker rejects the model: {str(error).splitlines()[0]}", path=str(path),
                         fix="re-export the model with a current exporter (torch.onnx.export)") from None
    return model


def load_model(path: str | Path, check: bool = True) -> Graph:
    """Read an ONNX file into a Graph; with `check`, compare its forward with onnxruntime."""
    path = Path(path)
    model = read_onnx(path)
    try:
        graph = _build_graph(model, str(path))
    except VerikitError as error:
        if error.path is None:
            raise type(error)(error.detail, path=str(path), place=error.place, fix=error.fix) from None
        raise
    if check:
        from verikit.onnx_runtime import check_against_onnxruntime
        check_against_onnxruntime(graph, path)
    return graph


def _real_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one graph input that is not an initializer (old exporters list weights as inputs too)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(f"verikit needs exactly one network input, found {len(inputs)} ({names})",
                         fix="export the network with a single input tensor")
    return inputs[0]


def _initializer(tensor: onnx.TensorProto) -> np.ndarray:
    """An initializer as a numpy array; an unknown data type or unreadable data is a ModelError naming
    it, and so are non-finite weights (a NaN anywhere, an infinity in a tensor of more than one entry:
    a scalar infinity can be a legitimate bound, as in Clip)."""
    try:
        value = numpy_helper.to_array(tensor)
    except Exception as error:  # onnx raises KeyError for an unknown data type, ValueError for short data
        raise ModelError(f"initializer {tensor.name!r} cannot be read ({type(error).__name__}: {error}; "
                         f"data type {tensor.data_type})",
                         fix="the file is corrupt; export or download it again") from None
    if value.dtype.kind == "f" and (np.isnan(value).any() or (value.size > 1 and not np.isfinite(value).all())):
        bad = int((~np.isfinite(value)).sum())
        raise ModelError(f"initializer {tensor.name!r} holds {bad} non-finite value{'s' if bad > 1 else ''} "
                         "(NaN or infinity)", fix="the weights must be finite: check the training run or export")
    return value


def _input_type(value: onnx.ValueInfoProto) -> None:
    """The network input must be a float tensor (float32 or float64): verikit bounds real-valued inputs."""
    allowed = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
    element = value.type.tensor_type.elem_type
    if element not in allowed:
        name = onnx.TensorProto.DataType.Name(element) if element in onnx.TensorProto.DataType.values() else element
        raise ModelError(f"input '{value.name}' has element type {name}; verikit needs FLOAT or DOUBLE",
                         fix="export the network with a float32 input (or the file is corrupt)")


def _static_shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = []
    for index, dim in enumerate(value.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value <= 0:
            raise ModelError(f"input '{value.name}' has dimension {index} of size {dim.dim_value}",
                             fix="export the model with a positive input shape (the file may be corrupt)")
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif index == 0:
            dims.append(1)  # a symbolic batch dimension is evaluated one sample at a time
        else:
            raise ModelError(f"input '{value.name}' has a symbolic dimension {index} ({dim.dim_param!r})",
                             fix="export the model with a fixed input shape")
    return tuple(dims)


def _fix_input_shape(model: onnx.ModelProto, name: str, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A copy of the model whose input has concrete dims, so shape inference yields static shapes."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name == name:
            for dim, size in zip(value.type.tensor_type.shape.dim, shape):
                dim.Clear()
                dim.dim_value = size
    return shape_inference.infer_shapes(fixed)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
        elif value.type.tensor_type.HasField("shape") and not dims:
            shapes[value.name] = ()
    return shapes


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        values[attribute.name] = value
    return values


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attributes = _attributes(node)
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attributes:
            return np.asarray(attributes[key])
    raise ModelError(f"Constant node '{node.name}' has no supported value attribute",
                     fix="use a tensor, float(s) or int(s) constant")


def _fold_with_runtime(node: onnx.NodeProto, constants: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants (e.g. shape arithmetic) with onnxruntime."""
    import onnxruntime

    inputs = [numpy_helper.from_array(constants[n], n) for n in node.input if n]
    outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output]
    graph = onnx.helper.make_graph([node], "fold", [], outputs, initializer=inputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {})


def _build_graph(model: onnx.ModelProto, source: str) -> Graph:
    """Turn a checked ModelProto into a Graph of built rules."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    input_value = _real_input(model)
    _input_type(input_value)
    input_shape = _static_shape(input_value)
    model = _fix_input_shape(model, input_value.name, input_shape)
    shapes = _shapes(model)
    shapes[input_value.name] = input_shape
    constants = {init.name: _initializer(init) for init in model.graph.initializer}
    if len(model.graph.output) != 1:
        raise ModelError(f"verikit needs exactly one network output, found {len(model.graph.output)}",
                         fix="export the network with a single output tensor")
    output_name = model.graph.output[0].name

    pending, missing = [], {}
    for index, proto in enumerate(model.graph.node):
        name = proto.name or f"{proto.op_type}_{index}"
        if proto.op_type == "Constant":
            constants[proto.output[0]] = _constant_value(proto)
            continue
        if proto.op_type == "Shape" and proto.input[0] in shapes and proto.input[0] not in constants:
            constants[proto.output[0]] = np.asarray(shapes[proto.input[0]], dtype=np.int64)
            continue
        if all(n in constants for n in proto.input if n):  # shape arithmetic and the like
            for out, value in zip(proto.output, _fold_with_runtime(proto, constants, opset)):
                constants[out] = value
            continue
        if registry().layer(proto.op_type) is None:
            missing.setdefault(proto.op_type, []).append(name)
        pending.append((name, proto))
    if missing:
        listing = "; ".join(f"{op} (node {', '.join(repr(n) for n in names)})" for op, names in missing.items())
        broken = "; ".join(manager().failures.values())
        raise ModelError(f"unsupported ONNX op{'s' if len(missing) > 1 else ''}: {listing}"
                         + (f" (skipped: {broken})" if broken else ""),
                         fix="install a verikit plugin that provides "
                             f"{'these ops' if len(missing) > 1 else 'this op'} (`verikit plugins` lists "
                             "what is available), or export the model without them")

    nodes, produced = [], {input_value.name}
    for name, proto in pending:
        node = _build_node(name, proto, constants, shapes, opset)
        unknown = [value for value in node.inputs if value not in produced]
        if unknown:
            raise ModelError(f"{proto.op_type} node '{name}' reads {unknown}, which is not the first output of "
                             "an earlier node (verikit uses one output per node, in topological order)",
                             fix="export the model without multi-output ops such as MaxPool with indices")
        produced.add(node.output)
        nodes.append(node)
    nodes = _prune(nodes, output_name)
    if output_name in constants or not nodes:
        raise ModelError("the network output does not depend on its input", fix="check the exported graph")
    return Graph(input_value.name, input_shape, output_name, nodes, shapes, source)


def _build_node(name: str, proto: onnx.NodeProto, constants: dict[str, np.ndarray],
                shapes: dict[str, tuple[int, ...]], opset: int) -> Node:
    entry = registry().layer(proto.op_type)
    output = proto.output[0]
    if output not in shapes:
        raise ModelError(f"cannot infer the shape of '{output}' ({proto.op_type} node '{name}')",
                         fix="export the model with static shapes (onnx.shape_inference must resolve them)")
    used = {n: constants[n] for n in proto.input if n in constants}
    info = NodeInfo(name=name, op_type=proto.op_type, attributes=_attributes(proto), inputs=tuple(proto.input),
                    constants=used, input_shapes=tuple(shapes.get(n) for n in proto.input),
                    output_shape=shapes[output], opset=opset)
    if not info.computed_inputs:
        raise ModelError(f"{proto.op_type} node '{name}' has no computed input", fix="fold constants first")
    try:
        rule = entry.provider.build(info)
    except VerikitError:
        raise
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError, ZeroDivisionError) as error:
        # a rule's arithmetic on attributes and shapes the file makes inconsistent (a window wider than
        # its input, say); the chained error keeps the rule's own traceback for --debug
        raise ModelError(f"{proto.op_type} node '{name}' cannot be built from its attributes and shapes "
                         f"({type(error).__name__}: {error})", place=f"node '{name}'",
                         fix="re-export the model with consistent shapes; if the model is valid, this is a "
                             f"bug in the layer plugin {entry.plugin!r}: run with --debug and report it") from error
    return Node(name, proto.op_type, info.computed_inputs, output, rule, entry.plugin)


def _prune(nodes: list[Node], output_name: str) -> list[Node]:
    """Drop nodes the output does not depend on (in reverse topological order)."""
    needed, kept = {output_name}, []
    for node in reversed(nodes):
        if node.output in needed:
            kept.append(node)
            needed.update(node.inputs)
    return list(reversed(kept))
