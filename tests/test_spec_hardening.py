"""Spec readers on hostile input: cost that follows the text, no recursion, finite numbers only, strict
YAML, and one clear SpecError for broken files (gzip, encodings). Each test is a reported defect."""
from __future__ import annotations

import gzip
import inspect
import sys
import time
import tracemalloc

import pytest

from verikit import api
from verikit.errors import SpecError
from verikit.spec import load_spec
from verikit.spec import vnnlib
from verikit.spec.sexpr import MAX_DEPTH
from verikit.spec.vnnlib import MAX_INPUT_BOUND, parse_vnnlib
from verikit.spec.yaml_spec import MAX_NESTING, parse_yaml_spec

HEADER = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
ROBUST = "input: [0.5, 0.5]\nepsilon: 0.1\nlabel: 0\nn_outputs: 2\n"


def parse_error(parse, name: str, text: str, **sizes) -> str:
    """The SpecError message of parsing `text` as the file `name`: it names the file and a fix."""
    with pytest.raises(SpecError) as caught:
        parse(text, name, **sizes)
    message = str(caught.value)
    assert message.startswith(name) and "fix:" in message
    return message


def vnnlib_error(text: str, **sizes) -> str:
    return parse_error(parse_vnnlib, "bad.vnnlib", text, **sizes)


def yaml_error(text: str, **sizes) -> str:
    return parse_error(parse_yaml_spec, "bad.yaml", text, **sizes)


def cost(read) -> tuple[float, int]:
    """Seconds and peak bytes that `read()` takes."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        read()
    except SpecError:
        pass
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


# ---- 1. a declaration costs what the declarations present cost -----------------------------------
def test_a_huge_index_is_refused_before_anything_is_sized_by_it():
    text = HEADER.replace("X_0", "X_1000000000") + BOX.replace("X_0", "X_1000000000") + "(assert (<= Y_0 0))"
    seconds, peak = cost(lambda: parse_vnnlib(text, "bad.vnnlib"))
    assert seconds < 1.0 and peak < 10e6
    message = vnnlib_error(text)
    assert "line 1, column 16" in message and "X_0 is not declared, but X_1000000000 is" in message


def test_an_index_beyond_the_model_names_the_declaration():
    text = HEADER + "(declare-const Y_9 Real)\n" + BOX + "(assert (<= Y_0 0))"
    message = vnnlib_error(text, n_inputs=1, n_outputs=3)
    assert "line 4, column 16" in message and "Y_9 is declared, but the model has 3 outputs (Y_0 .. Y_2)" in message
    message = vnnlib_error(HEADER.replace("X_0", "X_7") + BOX, n_inputs=5)
    assert "X_7 is declared, but the model has 5 inputs" in message


def test_an_index_of_many_digits_is_not_a_variable_name():
    message = vnnlib_error(HEADER.replace("X_0", "X_" + "9" * 5000) + BOX)
    assert "is not X_i or Y_j" in message and len(message) < 400


def test_api_passes_the_model_sizes(tmp_path, benchmarks):
    spec = tmp_path / "huge.vnnlib"
    spec.write_text(HEADER.replace("X_0", "X_1000000000") + "(assert (<= Y_0 0))")
    model = api.load_model(benchmarks / "test" / "test_tiny.onnx", check=False)
    with pytest.raises(SpecError, match="X_1000000000 is declared, but the model has 1 inputs"):
        api.load_spec(spec, model)


# ---- 2. parse cost and recursion -----------------------------------------------------------------
@pytest.mark.parametrize("operator, operand", [("and", "(<= Y_0 1)"), ("+", "1")])
def test_nesting_beyond_the_limit_is_one_clear_error(operator, operand):
    text = HEADER + BOX + "(assert (<= Y_0 " + f"({operator} {operand} " * 500 + "Y_1" + ")" * 501 + ")"
    message = vnnlib_error(text)
    assert f"nest more than {MAX_DEPTH} levels" in message and "line 6" in message
    assert f"at most {MAX_DEPTH} levels" in message  # the limit is in the fix


def test_deep_legal_nesting_reads_without_recursion():
    """200 levels of `and` and of `+` read even with the stack 40 frames from Python's limit."""
    text = (HEADER + BOX + "(assert " + "(and (<= Y_0 1) " * 200 + "(<= Y_1 2)" + ")" * 201 + "\n"
            "(assert (<= " + "(+ 1 " * 200 + "Y_0" + ")" * 200 + " Y_1))")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 40)
    try:
        prop = parse_vnnlib(text)
    finally:
        sys.setrecursionlimit(limit)
    (clause,) = prop.regions[0].clauses
    assert len(clause.rhs) == 202 and clause.rhs[-1] == -200.0 and clause.coefficients[-1].tolist() == [1.0, -1.0]


@pytest.mark.parametrize("junk", ["(" * 5_000_000, "()" * 2_500_000, "x " * 2_500_000,
                                  "(assert " + "(and " * 1_000_000], ids=["open", "empty", "atoms", "and"])
def test_megabytes_of_junk_are_refused_quickly_in_little_memory(junk):
    seconds, peak = cost(lambda: parse_vnnlib(HEADER + junk, "bad.vnnlib"))
    assert seconds < 5.0 and peak < 400e6  # the tokens alone take ~8 bytes a character
    vnnlib_error(HEADER + junk)


def test_the_dnf_expansion_is_bounded_in_rows(monkeypatch):
    monkeypatch.setattr(vnnlib, "MAX_SPEC_VALUES", 1000)
    branch = "(assert (or " + " ".join(f"(and (<= Y_0 {k}) (<= Y_1 {k}))" for k in range(10)) + "))\n"
    message = vnnlib_error(HEADER + BOX + branch * 3)
    assert "expands to more than 1000 rows" in message and "line 6" in message


def test_disjuncts_with_the_same_box_share_one_region():
    text = HEADER + "(declare-const X_1 Real)\n" + BOX + "(assert (<= X_1 1))\n(assert (>= X_1 -1))\n" \
        "(assert (or (and (<= X_0 0.5) (>= X_1 0)) (and (>= X_1 0) (<= Y_0 1) (<= X_0 0.5)) (and (<= Y_1 3))))"
    first, second = parse_vnnlib(text).regions
    assert first.region.lower.tolist() == [[0.0, 0.0]] and first.region.upper.tolist() == [[0.5, 1.0]]
    assert [clause.coefficients.shape[0] for clause in first.clauses] == [0, 1]
    assert second.region.lower.tolist() == [[0.0, -1.0]] and len(second.clauses) == 1


# ---- 3. numbers must stay finite -------------------------------------------------------------------
@pytest.mark.parametrize("body, place, words", [
    ("(assert (<= (* 1e200 1e200 Y_0) 0))", "line 6, column 13", "term evaluates to inf or nan"),
    ("(assert (<= (* 0 (* 1e200 1e200) X_0) 0))", "line 6, column 18", "term evaluates to inf or nan"),
    ("(assert (<= (/ Y_0 (* 1e200 1e200)) 0))", "line 6, column 20", "term evaluates to inf or nan"),
    ("(assert (<= (+ 1e308 1e308) Y_0))", "line 6, column 13", "term evaluates to inf or nan"),
    ("(assert (<= -1e308 1e308))", "line 6, column 9", "comparison evaluates to inf or nan"),
    ("(assert (<= (* 1e308 Y_0) (* -1e308 Y_0)))", "line 6, column 9", "comparison evaluates to inf or nan"),
    ("(assert (<= Y_0 1e400))", "line 6, column 17", "the number 1e400 is beyond the largest float64"),
])
def test_non_finite_values_name_their_place(body, place, words):
    message = vnnlib_error(HEADER + BOX + body)
    assert place in message and words in message


def test_input_bounds_beyond_the_limit_are_refused():
    message = vnnlib_error(HEADER + "(assert (>= X_0 0))\n(assert (<= X_0 1e308))\n(assert (<= Y_0 0))")
    assert "line 1, column 16" in message and "X_0 has bounds [0, 1e+308]" in message
    assert f"within +-{MAX_INPUT_BOUND:g}" in message
    message = vnnlib_error(HEADER + "(assert (>= X_0 0))\n(assert (<= (* 1e-300 X_0) 1e300))\n(assert (<= Y_0 0))")
    assert "a bound on X_0, 1e+300 / 1e-300, overflows float64" in message


def test_literals_round_to_the_nearest_float64():
    """1e-400 has a nearest float64 (0); 1e400 has none and is refused (above)."""
    prop = parse_vnnlib(HEADER + "(assert (>= X_0 -1e-400))\n(assert (<= X_0 1e-400))\n(assert (<= Y_0 4.9e-324))")
    spec = prop.regions[0]
    assert spec.region.lower.tolist() == [[0.0]] and spec.region.upper.tolist() == [[0.0]]
    assert spec.clauses[0].rhs.tolist() == [5e-324]


# ---- 4. strict YAML --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, place, words", [
    (ROBUST + "epsilon: 0.2\n", "line 5, column 1", "duplicate key 'epsilon' (first given on line 2)"),
    (ROBUST + "domain: {lower: 0, upper: 1, lower: 0.5}\n", "line 5, column 30", "duplicate key 'lower'"),
    ("a: &a [0.5, 0.5]\ninput: *a\nepsilon: 0.1\nlabel: 0\nn_outputs: 2\n", "line 2, column 8", "aliases"),
    ("input: " + "[" * 100 + "1" + "]" * 100 + "\nepsilon: 0.1\n", "line 1", f"more than {MAX_NESTING} levels"),
    ("input: [1, 2]\nepsilon: " + "1" * 5000 + "\n", "line 2, column 10", "cannot read this value"),
])
def test_yaml_that_parses_but_is_refused(text, place, words):
    message = yaml_error(text)
    assert place in message and words in message and len(message) < 400


def test_a_control_character_in_yaml_names_its_place():
    message = yaml_error(ROBUST.replace("0.1", "0.\x001"))
    assert "line 2, column 12" in message and "U+0000 is not allowed" in message


@pytest.mark.parametrize("text, words", [
    (ROBUST.replace("0.1", ".nan"), ["key 'epsilon'", "expected a finite number"]),
    (ROBUST.replace("0.1", "1e400"), ["key 'epsilon'", "expected a finite number"]),
    (ROBUST.replace("0.1", "1" + "0" * 400), ["key 'epsilon'", "expected a finite number"]),
    (ROBUST.replace("[0.5, 0.5]", "[0.5, .inf]"), ["key 'input'", "inf/nan"]),
    (ROBUST.replace("[0.5, 0.5]", "[0.5, 1e31]"), ["key 'input'", "1e+31 at position 1 is beyond +-1e+30"]),
    (ROBUST.replace("n_outputs: 2", "n_outputs: 100000"), ["key 'n_outputs'", "more than the limit"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"1e200 * 1e200 * Y_0 <= 1\"]\n",
     ["key 'unsafe[0][0]'", "beyond float64"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"Y_0 <= 1e999\"]\n", ["key 'unsafe[0][0]'", "beyond float64"]),
    ("inputs: {lower: [0], upper: [1]}\nunsafe: [\"Y_99999999999 <= 1\"]\n", ["more than the limit"]),
])
def test_yaml_numbers_must_be_finite_and_sized(text, words):
    message = yaml_error(text)
    for word in words:
        assert word in message


# ---- 5, 6. broken files ----------------------------------------------------------------------------
def test_truncated_or_corrupt_gzip(tmp_path):
    data = gzip.compress((HEADER + BOX + "(assert (<= Y_0 0))\n").encode())
    for name, content in (("cut.vnnlib.gz", data[: len(data) // 2]), ("plain.vnnlib.gz", HEADER.encode()),
                          ("flipped.vnnlib.gz", data[:12] + bytes(b ^ 0xFF for b in data[12:]))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SpecError, match="the file is truncated or not gzip") as caught:
            load_spec(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value) and "fix:" in str(caught.value)


def test_a_byte_order_mark_is_not_text(tmp_path):
    (tmp_path / "bom.vnnlib").write_bytes(b"\xef\xbb\xbf" + (HEADER + BOX + "(assert (<= Y_0 0))").encode())
    assert load_spec(tmp_path / "bom.vnnlib").n_outputs == 2


@pytest.mark.parametrize("name, content", [
    ("latin1.vnnlib", (HEADER + "; caf\xe9\n" + BOX).encode("latin-1")),
    ("latin1.yaml", "input: [0.5]\ndescription: caf\xe9\n".encode("latin-1")),
])
def test_non_utf8_names_the_byte(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / name)
    offset = content.index(b"\xe9")
    message = str(caught.value)
    assert f"{tmp_path / name} (line" in message and f"byte 0xe9 at byte offset {offset}" in message
