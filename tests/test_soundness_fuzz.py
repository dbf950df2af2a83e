"""Soundness fuzz, short fixed-seed part (the long run: benchmarks/soundness_fuzz.py): on random small
nets and specs, every bound method's bounds hold the sampled and attacked values, and verify's verdicts
agree with an exact MILP (Gemm + (Leaky)ReLU nets) or are not refuted by a falsifier (the others)."""
from __future__ import annotations

import numpy as np
import torch

from fuzz import default_dtype, run_fuzz
from fuzz_models import FuzzNet, ModelInfo, random_model, random_spec
from fuzz_oracle import BAND, SpecRegion, exact_answer, read_dense_layers, run_onnx
from verikit.api import load_model
from verikit.methods.base import Verdict
from verikit.plugins import registry

# Image, dense and exact nets that cost a second or two each; the first (an image net with a residual
# block) runs with float64 as torch's default dtype, and group-dual applies to seed 10's.
MIXED_SEEDS = (3, 10, 13, 18, 5, 8, 17, 9, 1)
ALL_OPS = {"Gemm", "MatMul", "Add", "Conv", "MaxPool", "AveragePool", "BatchNormalization", "Relu", "LeakyRelu",
           "Sigmoid", "Tanh", "Flatten", "Reshape"}


def _failures(report) -> str:
    return "\n".join(str(finding) for finding in report.failures())


def test_bounds_and_verdicts_on_every_family(tmp_path):
    report = run_fuzz(MIXED_SEEDS, tmp_path, verify_timeout=3.0, specs_per_model=2)
    assert torch.get_default_dtype() == torch.float32 and report.float64_default_models == 1
    assert report.models == len(MIXED_SEEDS) and report.specs == 2 * len(MIXED_SEEDS)
    assert not report.failures(), _failures(report)
    assert report.containment_checks >= 500
    assert all(report.skipped_methods.get(entry.name, 0) < report.specs for entry in registry().methods("bound"))
    assert report.sat_rechecks == report.verdicts.get("sat", 0) > 0
    assert report.falsifier_checks >= 8 and report.falsified >= 2 and report.verdicts.get("unsat", 0) >= 2


def test_verdicts_agree_with_the_exact_milp(tmp_path):
    report = run_fuzz(range(12), tmp_path, verify_timeout=3.0, specs_per_model=4, methods=[], family="exact")
    assert not report.failures(), _failures(report)
    assert report.verdict_comparisons >= 40 and report.exact_sat >= 10 and report.exact_unsat >= 10
    assert report.sat_rechecks == report.verdicts.get("sat", 0) > 0


def test_the_checks_catch_a_loose_method_and_a_wrong_verdict(tmp_path, monkeypatch):
    """An IBP whose lower bounds are raised by half their width breaks containment, and a verify that
    always answers unsat contradicts the MILP on sat specs: the checks above can fail."""
    import verikit.api
    from verikit.bounds import Interval
    from verikit.plugins import get_method

    ibp = get_method("ibp")
    honest = type(ibp).bound

    def raised(self, *args, **kwargs):
        result = honest(self, *args, **kwargs)
        return Interval(result.lower + (result.upper - result.lower) / 2, result.upper)

    monkeypatch.setattr(type(ibp), "bound", raised)
    monkeypatch.setattr(verikit.api, "verify", lambda *args, **kwargs: Verdict("unsat"))
    report = run_fuzz(range(3), tmp_path, specs_per_model=3, methods=["ibp"], family="exact", keep=None)
    assert report.containment_violations and report.exact_sat
    assert len(report.wrong_verdicts) == report.exact_sat


def _two_input_net(path) -> ModelInfo:
    net = FuzzNet((1, 2), seed=5)
    net.gemm(6)
    net.activation("Relu")
    net.gemm(5)
    net.activation("LeakyRelu")
    net.gemm(2)
    net.save(path)
    return ModelInfo(path, "exact", (1, 2), 2, tuple(node.op_type for node in net.nodes))


def _grid(region: SpecRegion, side: int = 201) -> np.ndarray:
    axes = [np.linspace(low, high, side) for low, high in zip(region.lower, region.upper)]
    return np.stack(np.meshgrid(*axes), -1).reshape(-1, 2)


def test_milp_oracle_agrees_with_dense_sampling(tmp_path):
    """On a 2-input net, the MILP's minimum slack is at most that of a 201 x 201 grid (and close to it),
    and it answers sat wherever a grid point violates the spec."""
    model = _two_input_net(tmp_path / "two.onnx")
    layers = read_dense_layers(model.path)
    graph64 = load_model(model.path).to(torch.float64)
    answers = []
    for seed in range(12):
        spec = random_spec(tmp_path / f"s{seed}.vnnlib", model, seed)
        grid_lowest = np.inf
        for region in spec.regions:
            x = _grid(region)
            with torch.no_grad():
                y = graph64.forward_flat(torch.from_numpy(x)).numpy()
            slack = np.min([clause.slack(y) for clause in region.clauses], 0)
            grid_lowest = min(grid_lowest, float(slack.min()))
        answer = exact_answer(model.path, layers, spec.regions)
        answers.append(answer.status)
        assert answer.lowest <= grid_lowest + 1e-9, seed
        assert answer.lowest >= grid_lowest - 0.05, seed  # the grid's spacing times the net's slope
        if grid_lowest < -BAND:
            assert answer.status == "sat", seed
        if answer.status == "unsat":
            assert grid_lowest > 0, seed
    assert {"sat", "unsat"} <= set(answers), answers


def test_milp_witnesses_are_confirmed_by_onnxruntime(tmp_path):
    model = _two_input_net(tmp_path / "two.onnx")
    layers, witnesses = read_dense_layers(model.path), 0
    for seed in range(8):
        spec = random_spec(tmp_path / f"s{seed}.vnnlib", model, seed)
        answer = exact_answer(model.path, layers, spec.regions)
        if answer.status == "sat":
            y = run_onnx(model.path, answer.witness[None])
            assert any(region.holds(answer.witness) and min(c.slack(y)[0] for c in region.clauses) <= 0
                       for region in spec.regions), seed
            witnesses += 1
    assert witnesses >= 2


def test_generator_covers_every_op_and_spec_feature(tmp_path):
    """Forty seeds of models and specs draw every op, asymmetric conv pads and every spec feature, and
    every model loads (verikit compares it with onnxruntime)."""
    ops, features, asymmetric = set(), set(), False
    for seed in range(40):
        model = random_model(tmp_path / f"m{seed}.onnx", seed)
        load_model(model.path)
        ops |= set(model.ops)
        features |= set(random_spec(tmp_path / f"s{seed}.vnnlib", model, seed).features)
        asymmetric |= _has_asymmetric_pads(model.path)
    assert ALL_OPS <= ops, ALL_OPS - ops
    assert {"single", "and", "or", "boxes", "tiny", "medium", "wide", "pinned"} <= features
    assert asymmetric


def _has_asymmetric_pads(path) -> bool:
    import onnx

    for node in onnx.load(str(path)).graph.node:
        pads = [list(a.ints) for a in node.attribute if a.name == "pads"]
        if node.op_type == "Conv" and pads and pads[0][:2] != pads[0][2:]:
            return True
    return False


def test_pinned_inputs_are_written_at_values_float32_cannot_hold(tmp_path):
    model = random_model(tmp_path / "m.onnx", 6, family="exact")
    pinned = [region.lower[region.lower == region.upper]
              for seed in range(30) for region in random_spec(tmp_path / "s.vnnlib", model, seed).regions]
    values = np.concatenate(pinned)
    assert values.size and np.all(values.astype(np.float32).astype(np.float64) != values)


def test_average_pool_with_pads_loads_with_float64_default_dtype(tmp_path):
    """AveragePool's count_include_pad=0 correction must not take torch's default dtype: a float64
    tensor in the float32 graph would fail the next Gemm while loading."""
    net = FuzzNet((1, 1, 5, 7), seed=0)
    net.padded_pool("AveragePool", 1, [0, 1, 1, 0])
    net.flatten()
    net.gemm(2)
    with default_dtype(torch.float64):
        load_model(net.save(tmp_path / "pool.onnx"))


def test_default_dtype_is_restored():
    with default_dtype(torch.float64):
        assert torch.get_default_dtype() == torch.float64
    assert torch.get_default_dtype() == torch.float32
