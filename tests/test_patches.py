"""CNN-Cert's patch engine and the `cnn-cert` method: sound on random CNNs of every supported op
(sampled and gradient-attacked points, every intermediate value, every norm), equal to Fast-Lin /
CROWN on the same net unrolled into a dense MLP (and to the dense engine on the same net) for every
intermediate layer, and ada at least as tight as relu on average."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netgen import NetBuilder
from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.methods.cnn_cert import CnnCert, CnnCertOptions
from verikit.methods.linear_relaxation import Crown, FastLin, LinearRelaxationOptions
from verikit.onnx_import import load_model
from verikit.propagate.backward import values_to_relax
from verikit.propagate.patches import Patches
from verikit.radius import steepest
from verikit.region import Box, LpBall

F64 = torch.float64
CNN_CERT = CnnCert()


def plain(path, seed=0):
    """VALID conv -> BN -> relu -> SAME_UPPER stride-2 conv (asymmetric pads) -> sigmoid -> average
    pool with pads (count_include_pad=0) -> fc."""
    net = NetBuilder((1, 2, 10, 10), seed)
    net.conv(3, kernel=3, stride=1, pad=0)
    net.batchnorm()
    net.op("Relu")
    weight = net.constant(net.rng.normal(0, 0.4, (4, 3, 3, 3)))
    net.op("Conv", weight, net.constant(net.rng.normal(0, 0.1, 4)), kernel_shape=[3, 3], strides=[2, 2],
           auto_pad="SAME_UPPER", shape=(1, 4, 4, 4))
    net.op("Sigmoid")
    net.op("AveragePool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], shape=(1, 4, 4, 4))
    net.flatten()
    net.gemm(3)
    return net.save(path)


def pooled(path, seed=1):
    """SAME conv -> tanh -> padded 3x3/2 max pool -> depthwise dilated conv -> VALID conv -> relu ->
    2x2/2 max pool -> global average pool -> fc."""
    net = NetBuilder((1, 1, 10, 10), seed)
    net.conv(3, kernel=3, stride=1, pad=1)
    net.op("Tanh")
    net.op("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], shape=(1, 3, 5, 5))
    net.op("Conv", net.constant(net.rng.normal(0, 0.5, (3, 1, 3, 3))), kernel_shape=[3, 3], group=3,
           dilations=[2, 2], pads=[2, 2, 2, 2], shape=(1, 3, 5, 5))
    net.conv(4, kernel=2, stride=1, pad=0)
    net.op("Relu")
    net.pool("MaxPool", kernel=2, stride=2)
    net.op("GlobalAveragePool", shape=(1, 4, 1, 1))
    net.flatten()
    net.gemm(3)
    return net.save(path)


def residual(path, projection: bool, activation: str, seed=2):
    """conv -> act -> [conv(/2) -> BN -> act -> conv -> BN] + (identity | conv/2 -> BN) -> act -> fc."""
    net = NetBuilder((1, 2, 8, 8), seed)
    net.conv(3, kernel=3, pad=1)
    block_in = net.op(activation)
    net.conv(3, kernel=3, stride=2 if projection else 1, pad=1)
    net.batchnorm()
    net.op(activation)
    net.conv(3, kernel=3, pad=1)
    main, main_shape = net.batchnorm(), net.shape
    if projection:
        net.current, net.shape = block_in, (1, 3, 8, 8)
        net.conv(3, kernel=1, stride=2, pad=0)
        shortcut = net.batchnorm()
    else:
        shortcut = block_in
    net.op("Add", shortcut, source=main, shape=main_shape)
    net.op(activation)
    net.flatten()
    net.gemm(3)
    return net.save(path)


def fallback(path, seed=4):
    """conv -> relu -> (transpose twice, an op without patches) + conv -> sigmoid -> fc: the patch walk
    meets dense coefficients at the residual's input and continues densely."""
    net = NetBuilder((1, 1, 7, 7), seed)
    net.conv(2, kernel=3, pad=1)
    block_in = net.op("Relu")
    net.op("Transpose", perm=[0, 1, 3, 2])
    swapped = net.op("Transpose", perm=[0, 1, 3, 2])
    net.current = block_in
    main = net.conv(2, kernel=3, pad=1)
    net.op("Add", swapped, source=main)
    net.op("Sigmoid")
    net.flatten()
    net.gemm(3)
    return net.save(path)


BUILDERS = {
    "plain": plain,
    "pooled": pooled,
    "residual-identity-atan": lambda path: residual(path, False, "Atan"),
    "residual-projection-relu": lambda path: residual(path, True, "Relu", seed=3),
    "fallback": fallback,
}
UNROLLABLE = ("plain", "residual-identity-atan", "residual-projection-relu")


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnns")
    return {name: load_model(build(folder / f"{name}.onnx")).to(F64) for name, build in BUILDERS.items()}


def regions(n: int, seed: int = 0):
    """A box and Lp balls in every norm (the l2 one clipped by a domain box), one problem each."""
    center = torch.rand(1, n, generator=torch.Generator().manual_seed(seed), dtype=F64) - 0.5
    yield "box", Box(center - 0.05, center + 0.05)
    yield "linf", LpBall(center, torch.tensor([0.06], dtype=F64), float("inf"))
    yield "l2", LpBall(center, torch.tensor([0.5], dtype=F64), 2.0, Box(center - 0.1, center + 0.1))
    yield "l1", LpBall(center, torch.tensor([1.0], dtype=F64), 1.0)


def attacked_points(graph: Graph, region, names: list[str], per_value: int = 6, steps: int = 20) -> torch.Tensor:
    """Points pushed by gradient steps towards the max and the min of random neurons of each value."""
    generator = torch.Generator().manual_seed(3)
    goals = [(name, int(i), sign) for name in names
             for i in torch.randint(0, int(np.prod(graph.shapes[name])), (per_value,), generator=generator)
             for sign in (1.0, -1.0)]
    x = region.sample(len(goals), generator)[0]
    norm = getattr(region, "norm", float("inf"))
    size = float(getattr(region, "radius", torch.tensor([0.05]))[0])
    for step in range(steps):
        x.requires_grad_(True)
        values = graph.forward(x, keep_all=True)
        objective = sum(sign * values[name].flatten(1)[row, i] for row, (name, i, sign) in enumerate(goals))
        (gradient,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            x = region.project((x + 0.3 * size * (1 - step / steps) * steepest(gradient, norm)).unsqueeze(0))[0]
    return x.detach()


@pytest.mark.parametrize("family", list(BUILDERS))
def test_bounds_contain_sampled_and_attacked_values(networks, family):
    graph = networks[family]
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    for region_name, region in regions(graph.input_size):
        names = [node.output for node in graph.nodes]
        points = torch.cat([region.sample(1000, torch.Generator().manual_seed(2))[0],
                            attacked_points(graph, region, names)])
        with torch.no_grad():
            values = graph.forward(points, keep_all=True)
        for mode in ("relu", "ada", "zero"):
            intermediate = {}
            options = CnnCertOptions(mode=mode, dtype="float64", patch_limit=float("inf"))
            result = CNN_CERT.bound(graph, region, rows, options, intermediate)
            where = f"{family}/{region_name}/{mode}"
            assert set(intermediate) == set(values_to_relax(graph)), where
            for value, bound in intermediate.items():
                assert bound.contains(values[value], 1e-9), f"{where}: {value} escapes its bound"
            assert result.contains(values[graph.output_name].flatten(1), 1e-9), where


def test_padding_entries_contribute_nothing():
    """A window hanging over the map's edge: gathering gives zeros there, densifying drops nothing inside."""
    values = torch.arange(1, 1 + 2 * 3 * 3 * 3, dtype=F64).reshape(1, 1, 1, 2, 3, 3, 3).expand(1, 1, 2, 2, 3, 3, 3)
    patches = Patches(values.contiguous(), (2, 2), (1, 1), (3, 3)).masked()
    assert float(patches.values[0, 0, 0, 0, :, 0, :].abs().sum()) == 0  # first window row sits in the padding
    dense = patches.to_dense()  # [1, 4, 1, 3, 3, 3]
    assert torch.equal(dense.sum(), patches.values.sum())
    ones = torch.ones(1, 1, 3, 3, 3, dtype=F64)
    assert torch.equal(patches.dot(ones), dense.flatten(2).sum(-1))


def unrolled(graph: Graph, path) -> tuple[Graph, dict[str, str]]:
    """The net as a dense MLP: every run of one-input linear nodes (conv, BN, pooling, flatten, fc)
    becomes one Gemm whose matrix is their composed Toeplitz matrix (BN folded); residual Adds and
    activations stay. Returns the MLP and the MLP name of every value that feeds an activation."""
    nodes, weights, names, exact = [], [], {}, {}
    affine = {graph.input_name: ("x", None, None)}  # value -> (MLP base value, matrix, offset) or identity

    def materialize(value: str) -> str:
        base, matrix, offset = affine[value]
        if matrix is None:
            return base
        name = f"gemm_{len(nodes)}"
        weights.extend([numpy_helper.from_array(matrix.float().numpy(), f"{name}_w"),
                        numpy_helper.from_array(offset.float().numpy(), f"{name}_b")])
        nodes.append(helper.make_node("Gemm", [base, f"{name}_w", f"{name}_b"], [name], transB=1))
        exact[name] = (matrix, offset)
        affine[value] = (name, None, None)
        return name

    for node in graph.nodes:
        if node.linear and len(node.inputs) == 1:
            n_in = int(np.prod(graph.shapes[node.inputs[0]]))
            with torch.no_grad():
                offset = node.rule.forward(torch.zeros(1, *graph.shapes[node.inputs[0]], dtype=F64)).reshape(-1)
                basis = torch.eye(n_in, dtype=F64).reshape(n_in, *graph.shapes[node.inputs[0]])
                jacobian = (node.rule.forward(basis).reshape(n_in, -1) - offset).T
            base, matrix, previous = affine[node.inputs[0]]
            matrix, offset = (jacobian, offset) if matrix is None else (jacobian @ matrix, jacobian @ previous + offset)
            affine[node.output] = (base, matrix, offset)
        else:
            inputs = [materialize(value) for value in node.inputs]
            if not node.linear:
                names[node.inputs[0]] = inputs[0]
            op = node.op_type if node.op_type in ("Relu", "Sigmoid", "Tanh", "Atan", "Add", "Sub") else None
            assert op is not None, f"cannot unroll {node.op_type}"
            nodes.append(helper.make_node(op, inputs, [node.output]))
            affine[node.output] = (node.output, None, None)
    output = materialize(graph.output_name)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, graph.input_size])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, graph.output_size])
    model = helper.make_model(helper.make_graph(nodes, "mlp", [x], [y], initializer=weights),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    mlp = load_model(path).to(F64)
    for node in mlp.nodes:  # constants load as float32: restore the float64 matrices (BN folding rounds)
        if node.output in exact:
            node.rule.weight, node.rule.bias = exact[node.output][0].T.contiguous(), exact[node.output][1]
    return mlp, names


def assert_same(first: Interval, second: Interval, where: str) -> None:
    for a, b in ((first.lower, second.lower), (first.upper, second.upper)):
        a, b = a.flatten(1), b.flatten(1)
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9 * scale, msg=where)


@pytest.mark.parametrize("family", UNROLLABLE)
def test_relu_mode_is_fast_lin_and_ada_is_crown_on_the_unrolled_mlp(networks, family, tmp_path):
    graph = networks[family]
    mlp, names = unrolled(graph, tmp_path / "mlp.onnx")
    x = torch.rand(5, graph.input_size, dtype=F64)
    torch.testing.assert_close(mlp.forward_flat(x), graph.forward_flat(x))
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    for (region_name, region), (mode, dense) in zip(regions(graph.input_size, seed=4),
                                                    [("relu", FastLin()), ("ada", Crown())] * 2):
        patch_values, dense_values = {}, {}
        options = CnnCertOptions(mode=mode, dtype="float64", patch_limit=float("inf"))
        result = CNN_CERT.bound(graph, region, rows, options, patch_values)
        expected = dense.bound(mlp, region, rows, LinearRelaxationOptions("float64", intersect_ibp=False),
                               dense_values)
        where = f"{family}/{region_name}/{mode}"
        assert set(names) == set(patch_values), where
        for value, bound in patch_values.items():
            assert_same(bound, dense_values[names[value]], f"{where}: {value}")
        assert_same(result, expected, where)


@pytest.mark.parametrize("family", list(BUILDERS))
def test_equals_the_dense_engine_on_the_same_graph(networks, family):
    """Including max pooling, which has no dense-MLP form; windows kept throughout or dense once wide."""
    graph = networks[family]
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    for (region_name, region), mode in zip(regions(graph.input_size, seed=5), ["relu", "ada", "relu", "ada"]):
        dense = {"relu": FastLin(), "ada": Crown()}[mode]
        for limit, intersect in ((float("inf"), False), (1.0, True)):
            patch_values, dense_values = {}, {}
            options = CnnCertOptions(mode=mode, dtype="float64", intersect_ibp=intersect, patch_limit=limit)
            result = CNN_CERT.bound(graph, region, rows, options, patch_values)
            expected = dense.bound(graph, region, rows, LinearRelaxationOptions("float64", intersect), dense_values)
            where = f"{family}/{region_name}/{mode}/limit={limit}"
            for value, bound in dense_values.items():
                assert_same(patch_values[value], bound, f"{where}: {value}")
            assert_same(result, expected, where)


def test_batched_problems_and_small_chunks_agree(networks):
    """Three problems at once, channels bounded a few at a time, equal three separate runs."""
    graph = networks["residual-projection-relu"]
    center = torch.rand(3, graph.input_size, generator=torch.Generator().manual_seed(7), dtype=F64) - 0.5
    region = LpBall(center, torch.tensor([0.05, 0.1, 0.2], dtype=F64), 2.0, Box(center - 0.1, center + 0.1))
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    chunked = CnnCertOptions(dtype="float64", max_entries=5000)
    together = CNN_CERT.bound(graph, region, rows, chunked)
    for index in range(3):
        alone = CNN_CERT.bound(graph, region.select(slice(index, index + 1)), rows, CnnCertOptions(dtype="float64"))
        assert_same(Interval(together.lower[index:index + 1], together.upper[index:index + 1]), alone, str(index))


def test_ada_is_at_least_as_tight_as_relu_on_average(networks):
    widths = {"relu": [], "ada": []}
    for graph in networks.values():
        rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
        for _, region in regions(graph.input_size, seed=6):
            for mode in widths:
                bound = CNN_CERT.bound(graph, region, rows, CnnCertOptions(mode=mode, dtype="float64"))
                widths[mode].append(float((bound.upper - bound.lower).mean()))
    assert np.mean(widths["ada"]) <= np.mean(widths["relu"]), widths


def test_dense_nodes_lists_what_runs_without_patches(networks):
    assert CnnCert.dense_nodes(networks["plain"]) == [
        f"{node.op_type} '{node.name}'" for node in networks["plain"].nodes if node.op_type in ("Flatten", "Gemm")]
