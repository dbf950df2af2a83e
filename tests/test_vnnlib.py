"""VNN-LIB reader and writer: every benchmark spec, the semantics of specific ones, and clear errors."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from verikit.errors import SpecError
from verikit.region import Box, LpBall
from verikit.spec import load_spec
from verikit.spec.property import InputConstraints, OutputClause, Property, RegionSpec
from verikit.spec.vnnlib import parse_vnnlib, read_vnnlib, write_vnnlib

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"


def parse(body: str, **sizes) -> Property:
    return parse_vnnlib(HEADER + BOX + body, "spec.vnnlib", **sizes)


def rows(clause: OutputClause) -> list[tuple[list[float], float]]:
    return list(zip(clause.coefficients.tolist(), clause.rhs.tolist()))


def assert_same(a: Property, b: Property) -> None:
    assert (a.n_inputs, a.n_outputs, len(a.regions)) == (b.n_inputs, b.n_outputs, len(b.regions))
    for x, y in zip(a.regions, b.regions):
        assert torch.equal(x.region.lower, y.region.lower) and torch.equal(x.region.upper, y.region.upper)
        assert [rows(c) for c in x.clauses] == [rows(c) for c in y.clauses]
        assert (x.input_constraints is None) == (y.input_constraints is None)
        if x.input_constraints is not None:
            assert torch.equal(x.input_constraints.coefficients, y.input_constraints.coefficients)
            assert torch.equal(x.input_constraints.rhs, y.input_constraints.rhs)


# ---- every spec of the benchmark suites ----------------------------------------------------------
def test_every_benchmark_spec_parses(benchmarks):
    files = sorted(benchmarks.rglob("*.vnnlib"))
    assert len(files) > 250
    for path in files:
        prop = read_vnnlib(path)
        assert prop.regions, path
        for spec in prop.regions:
            box = spec.region
            assert box.lower.shape == (1, prop.n_inputs) and box.lower.dtype == torch.float64
            assert torch.isfinite(box.lower).all() and (box.lower <= box.upper).all(), path
            for clause in spec.clauses:
                assert clause.coefficients.shape == (len(clause.rhs), prop.n_outputs)
        if prop.n_inputs in (784, 3072):  # image classifiers: one box, "class j >= label" for 9 classes
            (spec,) = prop.regions
            assert prop.n_outputs == 10 and len(spec.clauses) == 9, path
            for clause in spec.clauses:
                (row,), (rhs,) = clause.coefficients.tolist(), clause.rhs.tolist()
                assert sorted(row) == [-1.0] + [0.0] * 8 + [1.0] and rhs == 0.0, path
            width = (spec.region.upper - spec.region.lower).amax()
            assert 0 < width < 0.5, path  # eps is at most 0.05 in pixel space


def test_acasxu_prop_1_is_y0_at_least_a_constant(benchmarks):
    prop = read_vnnlib(benchmarks / "acasxu" / "prop_1.vnnlib")
    (spec,) = prop.regions
    assert rows(spec.clauses[0]) == [([-1.0, 0.0, 0.0, 0.0, 0.0], -3.991125645861615)]
    assert spec.region.lower.tolist() == [[0.6, -0.5, -0.5, 0.45, -0.5]]
    assert spec.region.upper.tolist() == [[0.679857769, 0.5, 0.5, 0.5, -0.45]]
    x = spec.region.center[0]
    assert prop.is_counterexample(x, torch.tensor([4.0, 0, 0, 0, 0], dtype=torch.float64))
    assert not prop.is_counterexample(x, torch.tensor([3.9, 0, 0, 0, 0], dtype=torch.float64))


def test_acasxu_prop_6_has_two_regions(benchmarks):
    prop = read_vnnlib(benchmarks / "acasxu" / "prop_6.vnnlib")
    assert len(prop.regions) == 2
    first, second = prop.regions
    assert first.region.lower[0, 1] == 0.11140846 and first.region.upper[0, 1] == 0.499999896
    assert second.region.lower[0, 1] == -0.499999896 and second.region.upper[0, 1] == -0.11140846
    for spec in prop.regions:
        assert torch.equal(spec.region.lower[0, [0, 2, 3, 4]],
                           torch.tensor([-0.129289109, -0.499999896, -0.5, -0.5], dtype=torch.float64))
        assert [rows(c) for c in spec.clauses] == [[([-1.0] + [1.0 if k == j else 0.0 for k in range(1, 5)], 0.0)]
                                                   for j in range(1, 5)]


def test_acasxu_prop_7_and_8_have_multi_row_clauses(benchmarks):
    prop7 = read_vnnlib(benchmarks / "acasxu" / "prop_7.vnnlib")
    clauses = prop7.regions[0].clauses
    assert [len(c.rhs) for c in clauses] == [3, 3]
    assert rows(clauses[0]) == [([-1.0, 0, 0, 1.0, 0], 0.0), ([0, -1.0, 0, 1.0, 0], 0.0), ([0, 0, -1.0, 1.0, 0], 0.0)]
    prop8 = read_vnnlib(benchmarks / "acasxu" / "prop_8.vnnlib")
    assert [len(c.rhs) for c in prop8.regions[0].clauses] == [2, 2, 2]


@pytest.mark.parametrize("name", ["test_tiny", "test_small"])
def test_input_atoms_inside_the_disjunct_make_the_box(benchmarks, name):
    prop = read_vnnlib(benchmarks / "test" / f"{name}.vnnlib")
    (spec,) = prop.regions
    assert spec.region.lower.tolist() == [[-1.0]] and spec.region.upper.tolist() == [[1.0]]
    assert [rows(c) for c in spec.clauses] == [[([-1.0], -100.0)]]


def test_scientific_notation(benchmarks):
    path = benchmarks / "oval21" / "vnnlib" / "cifar_base_kw-img5303-eps0.017777777777777778.vnnlib"
    prop = read_vnnlib(path, n_inputs=3072, n_outputs=10)
    assert prop.regions[0].region.upper[0, 2219].item() == 5.8147645177086815e-05


# ---- semantics on small texts --------------------------------------------------------------------
def test_nested_and_or_distribute_into_clauses():
    prop = parse("(assert (and (or (<= Y_0 1) (>= Y_1 2)) (or (<= Y_0 Y_1) (and (< Y_1 3) (> Y_0 -4)))))")
    (spec,) = prop.regions
    assert [rows(c) for c in spec.clauses] == [
        [([1, 0], 1), ([1, -1], 0)], [([1, 0], 1), ([0, 1], 3), ([-1, 0], 4)],
        [([0, -1], -2), ([1, -1], 0)], [([0, -1], -2), ([0, 1], 3), ([-1, 0], 4)]]


def test_linear_terms_constants_equalities_and_number_forms():
    prop = parse("; a comment (with parentheses\n\t(assert (<= (+ (* 2 Y_0) (- Y_1) 1.5e1) (- 3 (* 0.5 Y_1))))\n"
                 "(assert (= (- Y_0 Y_1) 7))")
    (clause,) = prop.regions[0].clauses
    # 2 y0 - y1 + 15 <= 3 - 0.5 y1  ->  2 y0 - 0.5 y1 <= -12 ; y0 - y1 = 7 -> two rows
    assert rows(clause) == [([2.0, -0.5], -12.0), ([1.0, -1.0], 7.0), ([-1.0, 1.0], -7.0)]


def test_input_constraints_and_bounds():
    prop = parse("(assert (<= (+ X_0 X_1) 0.5))\n(assert (>= 3 (* 2 X_0)))\n(assert (<= Y_0 0))")
    (spec,) = prop.regions
    assert spec.region.lower.tolist() == [[0.0, -1.0]] and spec.region.upper.tolist() == [[1.0, 1.0]]
    assert spec.input_constraints.coefficients.tolist() == [[1.0, 1.0]]
    assert spec.input_constraints.rhs.tolist() == [0.5]
    inside, outside = torch.tensor([0.2, 0.2]), torch.tensor([0.9, 0.9])
    y = torch.tensor([-1.0, 0.0])
    assert prop.is_counterexample(inside, y) and not prop.is_counterexample(outside, y)


def test_disjunct_without_output_atoms_is_an_always_true_clause():
    prop = parse("(assert (or (and (<= X_0 0.5)) (and (>= X_0 0.5) (<= Y_0 -1))))")
    first, second = prop.regions
    assert first.region.upper[0, 0] == 0.5 and first.clauses[0].coefficients.shape == (0, 2)
    assert second.region.lower[0, 0] == 0.5 and rows(second.clauses[0]) == [([1.0, 0.0], -1.0)]
    assert prop.is_counterexample(torch.tensor([0.2, 0.0]), torch.tensor([5.0, 5.0]))
    assert not prop.is_counterexample(torch.tensor([0.8, 0.0]), torch.tensor([5.0, 5.0]))


def test_model_sizes_that_agree_are_accepted():
    assert parse("(assert (<= Y_0 Y_1))", n_inputs=2, n_outputs=2).n_outputs == 2


# ---- errors name the file, the line and column, and the fix --------------------------------------
def error_of(text: str, **sizes) -> str:
    with pytest.raises(SpecError) as caught:
        parse_vnnlib(text, "bad.vnnlib", **sizes)
    message = str(caught.value)
    assert message.startswith("bad.vnnlib") and "fix:" in message
    return message


def test_unclosed_parenthesis_says_where_it_opened():
    message = error_of(HEADER + "(assert (<= X_0 1)\n(assert (>= X_0 0))\n")
    assert "line 5, column 1" in message and "never closed" in message and "missing ')'" in message


def test_extra_closing_parenthesis():
    message = error_of(HEADER + BOX + "(assert (<= Y_0 1)))\n")
    assert "line 9, column 20" in message and "closes nothing" in message


def test_unknown_variable():
    message = error_of(HEADER + BOX + "(assert (<= Y_0  Y_7))")
    assert "line 9, column 18" in message and "unknown variable Y_7" in message
    assert "(declare-const Y_7 Real)" in message


def test_positions_survive_comments_tabs_and_crlf():
    text = ("; header ( with a parenthesis\r\n(declare-const X_0 Real) ; (note)\r\n\t(declare-const Y_0 Real)"
            "(assert (<= X_0 1))(assert(>= X_0 0))\n  ; ((\n\t\t(assert (<=  Y_0\tY_9))")
    offset = text.index("Y_9")
    line, column = text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
    assert (line, column) == (5, 20)
    assert f"line {line}, column {column}" in error_of(text)


def test_unbounded_input():
    message = error_of(HEADER + "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (<= X_1 1))\n(assert (<= Y_0 1))")
    assert "unbounded input X_1" in message and "line 2, column 16" in message  # its declaration
    assert "(assert (>= X_1 LOW))" in message


def test_mixed_input_output_atom():
    message = error_of(HEADER + BOX + "(assert (or (and (<= X_0 Y_0))))")
    assert "line 9, column 18" in message and "mixes inputs (X_i) and outputs (Y_j)" in message


def test_count_mismatch_names_both_counts():
    message = error_of(HEADER + BOX + "(assert (<= Y_0 1))", n_inputs=784)
    assert "declares 2 inputs" in message and "model has 784" in message
    message = error_of(HEADER + BOX + "(assert (<= Y_0 1))", n_outputs=10)
    assert "declares 2 outputs" in message and "model has 10" in message


@pytest.mark.parametrize("body, place, words", [
    ("(assert (<== Y_0 1))", "line 9, column 10", "unknown operator '<=='"),
    ("(assert (<= (^ Y_0 2) 1))", "line 9, column 14", "unknown operator '^'"),
    ("(assert (<= Y_0 1.2.3))", "line 9, column 17", "'1.2.3' is neither"),
    ("(assert (<= Y_0 nan))", "line 9, column 17", "'nan' is neither"),
    ("(assert (<= (* Y_0 Y_1) 1))", "line 9, column 13", "product of two variables"),
    ("(assert (<= Y_0))", "line 9, column 9", "needs two operands"),
    ("(push 1)", "line 9, column 2", "unknown command 'push'"),
    ("(assert (>= X_0 2))", None, "lower bound 2.0 above its upper bound 1.0"),
])
def test_malformed_conditions(body, place, words):
    message = error_of(HEADER + BOX + body)
    assert words in message and (place is None or place in message)


def test_declarations_must_be_real_and_without_gaps():
    message = error_of("(declare-const X_0 Int)")
    assert "line 1, column 20" in message and "only Real" in message
    assert "is not X_i or Y_j" in error_of("(declare-const input Real)")
    message = error_of("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)")
    assert "X_1 is not declared" in message and "line 2" in message


def test_dnf_expansion_is_bounded():
    clause = "(assert (or " + " ".join(f"(<= Y_0 {k})" for k in range(20)) + "))\n"
    message = error_of(HEADER + BOX + clause * 4)
    assert "160000 disjuncts" in message and "line 9" in message


# ---- writer --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["acasxu/prop_1.vnnlib", "acasxu/prop_6.vnnlib", "acasxu/prop_7.vnnlib",
                                  "test/test_tiny.vnnlib", "mnistfc/prop_0_0.03.vnnlib"])
def test_write_then_read_gives_the_same_property(benchmarks, tmp_path, name):
    original = read_vnnlib(benchmarks / name)
    write_vnnlib(original, tmp_path / "copy.vnnlib")
    assert_same(read_vnnlib(tmp_path / "copy.vnnlib"), original)


def test_round_trip_of_constraints_empty_clauses_and_gzip(tmp_path):
    f64 = torch.float64
    box = Box(torch.tensor([[0.0, -1.0]], dtype=f64), torch.tensor([[1.0, 1.0 / 3.0]], dtype=f64))
    constraints = InputConstraints(torch.tensor([[1.0, -2.5]], dtype=f64), torch.tensor([0.1], dtype=f64))
    clauses = (OutputClause(torch.tensor([[0.5, -1.0], [0.0, 0.0]], dtype=f64), torch.tensor([1e-7, 2.0], dtype=f64)),
               OutputClause(torch.zeros(0, 2, dtype=f64), torch.zeros(0, dtype=f64)))
    other = Box(torch.tensor([[2.0, 2.0]], dtype=f64), torch.tensor([[3.0, 3.0]], dtype=f64))
    prop = Property(2, 2, (RegionSpec(box, clauses, constraints), RegionSpec(other, clauses[:1])))
    write_vnnlib(prop, tmp_path / "p.vnnlib")
    assert_same(read_vnnlib(tmp_path / "p.vnnlib"), prop)
    with gzip.open(tmp_path / "p.vnnlib.gz", "wt") as file:
        file.write((tmp_path / "p.vnnlib").read_text())
    assert_same(load_spec(tmp_path / "p.vnnlib.gz", n_inputs=2, n_outputs=2), prop)


def test_linf_ball_is_written_as_its_box_and_other_norms_are_refused(tmp_path):
    f64 = torch.float64
    clause = OutputClause(torch.tensor([[1.0, -1.0]], dtype=f64), torch.zeros(1, dtype=f64))
    ball = LpBall(torch.tensor([[0.5, 0.5]], dtype=f64), torch.tensor([0.25], dtype=f64))
    write_vnnlib(Property(2, 2, (RegionSpec(ball, (clause,)),)), tmp_path / "b.vnnlib")
    box = read_vnnlib(tmp_path / "b.vnnlib").regions[0].region
    assert box.lower.tolist() == [[0.25, 0.25]] and box.upper.tolist() == [[0.75, 0.75]]
    l2 = LpBall(ball.center, ball.radius, 2.0)
    with pytest.raises(SpecError, match="L2 ball cannot be written"):
        write_vnnlib(Property(2, 2, (RegionSpec(l2, (clause,)),)), tmp_path / "c.vnnlib")


def test_plugin_spec_readers_handle_other_suffixes(tmp_path):
    from verikit.hookspecs import hookimpl
    from verikit.plugins import manager

    class ToyFormat:
        @hookimpl
        def verikit_spec_readers(self, register):
            register(lambda path: parse_vnnlib(HEADER + BOX + Path(path).read_text(), str(path)), ".toy")

    (tmp_path / "a.toy").write_text("(assert (<= Y_0 Y_1))")
    manager().register(ToyFormat(), "toy-format")
    try:
        assert rows(load_spec(tmp_path / "a.toy", n_outputs=2).regions[0].clauses[0]) == [([1.0, -1.0], 0.0)]
        with pytest.raises(SpecError, match="the spec has 2 inputs but the model has 3"):
            load_spec(tmp_path / "a.toy", n_inputs=3)
    finally:
        manager().unregister("toy-format")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        read_vnnlib(tmp_path / "absent.vnnlib")
    (tmp_path / "spec.txt").write_text("")
    with pytest.raises(SpecError, match="unknown spec format"):
        load_spec(tmp_path / "spec.txt")
