"""YAML specs: the two documented forms, the examples in specs/, and one clear error per mistake."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from verikit.errors import SpecError
from verikit.region import LpBall
from verikit.spec import load_spec
from verikit.spec.property import Property
from verikit.spec.yaml_spec import parse_yaml_spec

SPECS = Path(__file__).resolve().parents[1] / "specs"


def rows(clause) -> list[tuple[list[float], float]]:
    return list(zip(clause.coefficients.tolist(), clause.rhs.tolist()))


def spec(text: str, **sizes) -> Property:
    return parse_yaml_spec(text, "spec.yaml", **sizes)


# ---- the examples --------------------------------------------------------------------------------
def test_acasxu_example_equals_the_vnnlib_property_3(benchmarks):
    ours = load_spec(SPECS / "acasxu_prop3.yaml", n_inputs=5, n_outputs=5)
    theirs = load_spec(benchmarks / "acasxu" / "prop_3.vnnlib")
    (a,), (b,) = ours.regions, theirs.regions
    assert torch.equal(a.region.lower, b.region.lower) and torch.equal(a.region.upper, b.region.upper)
    assert [rows(c) for c in a.clauses] == [rows(c) for c in b.clauses]


def test_robustness_example():
    prop = load_spec(SPECS / "robustness_example.yaml")
    (region,) = prop.regions
    ball = region.region
    assert isinstance(ball, LpBall) and ball.norm == float("inf") and ball.radius.tolist() == [0.05]
    assert ball.center.tolist() == [[0.1, 0.5, 0.9, 0.3, 0.7]] and ball.domain.upper.tolist() == [[1.0] * 5]
    assert [rows(c) for c in region.clauses] == [[([-1.0, 1.0, 0.0], 0.0)], [([0.0, 1.0, -1.0], 0.0)]]
    x = ball.center[0]
    assert prop.is_counterexample(x, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    assert not prop.is_counterexample(x, torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
    assert not prop.is_counterexample(x + 0.2, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))


# ---- robustness form -----------------------------------------------------------------------------
def test_robustness_from_npy_with_l2_norm_target_and_model_sizes(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 10)
    (tmp_path / "r.yml").write_text("input: x.npy\nepsilon: 1e-3\nnorm: 2\nlabel: 4\ntarget: 0\n")
    prop = load_spec(tmp_path / "r.yml", n_inputs=6, n_outputs=5)
    (region,) = prop.regions
    assert region.region.norm == 2.0 and region.region.radius.tolist() == [0.001]
    assert torch.allclose(region.region.center, torch.arange(6, dtype=torch.float64)[None] / 10)
    assert region.region.domain is None
    assert [rows(c) for c in region.clauses] == [[([-1.0, 0.0, 0.0, 0.0, 1.0], 0.0)]]


def test_robustness_domain_lists_and_nested_input():
    prop = spec("input: [[0.5, 0.5], [0.2, 0.9]]\nepsilon: 0.1\nlabel: 0\nn_outputs: 2\n"
                "domain: {lower: [0, 0, 0, 0], upper: 1}\n")
    ball = prop.regions[0].region
    assert ball.center.shape == (1, 4) and ball.domain.lower.tolist() == [[0.0] * 4]


# ---- explicit form -------------------------------------------------------------------------------
def test_explicit_boxes_and_unsafe_rows():
    prop = spec("boxes:\n  - {lower: [0, 0], upper: [1, 1]}\n  - {lower: 2, upper: 3}\nn_inputs: 2\n"
                "unsafe:\n  - [\"Y_0 - Y_1 <= 0\", \"Y_2 >= 3.5\"]\n  - \"2*Y_1 + 0.5 * Y_2 - 1 > -Y_0\"\n"
                "  - [\"Y_2 = 1e-3\"]\n")
    assert prop.n_inputs == 2 and prop.n_outputs == 3 and len(prop.regions) == 2
    assert prop.regions[1].region.lower.tolist() == [[2.0, 2.0]]
    first, second, third = prop.regions[0].clauses
    assert rows(first) == [([1.0, -1.0, 0.0], 0.0), ([0.0, 0.0, -1.0], -3.5)]
    assert rows(second) == [([-1.0, -2.0, -0.5], -1.0)]  # -Y_0 <= 2 Y_1 + 0.5 Y_2 - 1
    assert rows(third) == [([0.0, 0.0, 1.0], 0.001), ([0.0, 0.0, -1.0], -0.001)]


def test_safe_rows_are_negated_into_unsafe_clauses():
    prop = spec("inputs: {lower: [0], upper: [1]}\nsafe: [\"Y_0 <= 2\", \"Y_1 >= Y_0\"]\nn_outputs: 4\n")
    assert prop.n_outputs == 4
    assert [rows(c) for c in prop.regions[0].clauses] == [[([-1.0, 0, 0, 0], -2.0)], [([-1.0, 1.0, 0, 0], 0.0)]]
    x = torch.tensor([0.5], dtype=torch.float64)
    assert prop.is_counterexample(x, torch.tensor([3.0, 5.0, 0, 0], dtype=torch.float64))
    assert not prop.is_counterexample(x, torch.tensor([1.0, 5.0, 0, 0], dtype=torch.float64))


# ---- errors --------------------------------------------------------------------------------------
def error_of(text: str, **sizes) -> str:
    with pytest.raises(SpecError) as caught:
        spec(text, **sizes)
    message = str(caught.value)
    assert message.startswith("spec.yaml") and "fix:" in message
    return message


def test_yaml_syntax_error_gives_line_and_column():
    message = error_of("input: [1, 2\nepsilon: 0.1\n")
    assert "invalid YAML" in message and "line 2, column 8" in message


@pytest.mark.parametrize("text, words", [
    ("input: [1, 2]\nlabel: 0\nn_outputs: 2\n", ["missing key 'epsilon'"]),
    ("input: [1, 2]\nepsilon: wide\nlabel: 0\nn_outputs: 2\n", ["line 2, key 'epsilon'", "expected a number"]),
    ("input: [1, 2]\nepsilon: 0.1\nlabel: 0\nn_outputs: 2\nradius: 3\n",
     ["line 5, key 'radius'", "unknown key 'radius'", "input, epsilon, norm, label"]),
    ("input: [1, 2]\nepsilon: 0.1\nlabel: 7\nn_outputs: 3\n", ["key 'label'", "0..2"]),
    ("input: [1, 2]\nepsilon: 0.1\nlabel: 1\n", ["number of outputs is unknown", "n_outputs: 10"]),
    ("input: [1, 2]\nepsilon: 0.1\nlabel: 1\nnorm: 3\nn_outputs: 2\n", ["unsupported norm 3"]),
    ("input: [1, 2]\nepsilon: 0.1\nlabel: 1\nn_outputs: 2\ndomain: {lower: 0, upper: 0.5}\n",
     ["outside the domain"]),
    ("inputs: {lower: [0, 0], upper: [1]}\nunsafe: [\"Y_0 <= 1\"]\n", ["key 'inputs.upper'", "expected 2 numbers"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"Y_0 <= Y_1 <= 2\"]\n", ["key 'unsafe[0][0]'", "exactly one"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"Y_0 + * 2 <= 1\"]\n", ["column 7", "a number or an output"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"X_0 <= 1\"]\n", ["column 1", "a number or an output"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"Y_0 Y_1 <= 1\"]\n", ["column 5", "expected + or -"]),
    ("inputs: {lower: [0], upper: [1]}\nsafe: [\"Y_0 = 1\"]\n", ["key 'safe[0]'", "two inequalities"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"Y_3 <= 1\"]\nn_outputs: 2\n", ["Y_3 is used"]),
    ("inputs: {lower: [2], upper: [1]}\nunsafe: [\"Y_0 <= 1\"]\n", ["above upper bound"]),
    ("inputs: {lower: 0, upper: 1}\nunsafe: [\"Y_0 <= 1\"]\n", ["needs the input size", "n_inputs"]),
    ("boxes: []\nunsafe: [\"Y_0 <= 1\"]\n", ["key 'boxes'", "non-empty list"]),
    ("region: [0, 1]\n", ["cannot tell which form"]),
    ("- 1\n- 2\n", ["must be a YAML mapping"]),
])
def test_mistakes_give_one_clear_error(text, words):
    message = error_of(text)
    for word in words:
        assert word in message


def test_model_sizes_must_agree():
    text = "input: [1, 2]\nepsilon: 0.1\nlabel: 0\nn_outputs: 3\n"
    assert "the spec says 3 outputs but the model has 10" in error_of(text, n_outputs=10)
    assert "expected 784 numbers, got 2" in error_of(text, n_inputs=784)


def test_missing_npy_file(tmp_path):
    (tmp_path / "r.yaml").write_text("input: nowhere.npy\nepsilon: 0.1\nlabel: 0\nn_outputs: 2\n")
    with pytest.raises(SpecError, match="cannot load"):
        load_spec(tmp_path / "r.yaml")
