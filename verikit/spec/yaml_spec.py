"""YAML specs: a human way to write a Property (the format is documented in specs/README.md).

Two forms, told apart by their keys:
- robustness around a point: `input`, `epsilon`, `norm`, `label`, optional `target`, `domain`,
  `n_outputs`. The region is an Lp ball; the unsafe clauses are "class j scores at least the label's".
- explicit: `inputs: {lower, upper}` (or `boxes:` a list of them, an OR of boxes) with `unsafe:` clauses
  (each an AND of rows like "Y_0 - Y_1 <= 0") or `safe:` rows that must all hold.
Every problem is one SpecError naming the file, the place (line and key) and the fix. The YAML itself is
read strictly: a key given twice, an alias (*name) or nesting deeper than MAX_NESTING is an error, and
numbers follow the VNN-LIB reader's rules (finite float64, inputs within +-MAX_INPUT_BOUND, at most
MAX_SPEC_VALUES numbers in the Property).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from verikit.errors import SpecError
from verikit.region import Box, parse_norm
from verikit.spec.property import OutputClause, Property, RegionSpec, robustness_property
from verikit.spec.sexpr import FINITE_FIX, read_text, shown
from verikit.spec.vnnlib import MAX_INPUT_BOUND, MAX_SPEC_VALUES

ROBUSTNESS_KEYS = ("input", "epsilon", "norm", "label", "target", "domain", "n_outputs", "description")
EXPLICIT_KEYS = ("inputs", "boxes", "unsafe", "safe", "n_inputs", "n_outputs", "description")
_ROW_TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
                        r"|(?P<op><=|>=|==|=|<|>|[-+*])|(?P<bad>\S))")
_COMPARISONS = ("<=", ">=", "==", "=", "<", ">")
MAX_NESTING = 64  # specs nest lists about 3 deep; PyYAML composes nested nodes recursively


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but that a spec may not hold, with the fix to name."""

    def __init__(self, problem: str, mark: yaml.Mark, fix: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in a mapping (PyYAML keeps the last one silently), aliases
    (a few lines of them can expand to billions of numbers), nesting deeper than MAX_NESTING, and values
    whose construction fails (PyYAML raises a bare ValueError there)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _Refused("aliases (*name) are not read in specs", self.peek_event().start_mark,
                           fix="write the values out where the alias stands")
        if self.depth == MAX_NESTING:
            raise _Refused(f"the YAML nests more than {MAX_NESTING} levels deep", self.peek_event().start_mark,
                           fix="give inputs as a flat list of numbers or a .npy file")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:  # an integer of over 4300 digits, a 13th month ...
            raise _Refused(f"cannot read this value ({str(error).split(';')[0]})", node.start_mark,
                           fix="write a plain number or text there") from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in first_lines:
                    raise _Refused(f"duplicate key '{key}' (first given on line {first_lines[key]})",
                                   key_node.start_mark, fix="keep one of the two entries")
                first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class _Document:
    """The loaded YAML mapping, with the line of each top-level key for error messages."""

    def __init__(self, text: str, path: str, base: Path):
        self.path, self.base = path, base
        try:
            loader = _StrictLoader(text)
        except yaml.reader.ReaderError as error:  # a control character: its position is in characters
            line = text.count("\n", 0, error.position) + 1
            column = error.position - text.rfind("\n", 0, error.position)
            raise SpecError(f"invalid YAML: the character U+{error.character:04X} is not allowed", path=path,
                            place=f"line {line}, column {column}", fix="remove the control character there") from None
        try:
            node = loader.get_single_node()
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            place = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
            problem = getattr(error, "problem", None) or str(error)
            fix = getattr(error, "fix", "fix the YAML syntax there (indentation, colons, brackets, quotes)")
            raise SpecError(f"invalid YAML: {problem}", path=path, place=place, fix=fix) from None
        finally:
            loader.dispose()
        self.lines = {}
        if isinstance(node, yaml.MappingNode):
            self.lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}

    def error(self, key: str, message: str, fix: str) -> SpecError:
        top = re.split(r"[.\[]", key)[0]
        line = self.lines.get(top)
        place = f"line {line}, key '{key}'" if line else f"key '{key}'"
        return SpecError(message, path=self.path, place=place, fix=fix)

    # ---- typed values -------------------------------------------------------------------------
    def require(self, key: str) -> Any:
        if key not in self.data:
            raise SpecError(f"missing key '{key}'", path=self.path, fix=f"add '{key}: ...' (see specs/README.md)")
        return self.data[key]

    def number(self, value: Any, key: str) -> float:
        """A finite number; strings such as '1e-3' (which YAML 1.1 reads as text) are accepted. Like VNN-LIB
        literals, 1e-400 reads as 0 and a number beyond the largest float64 (1e400, .inf, .nan) is refused."""
        try:
            result = float(value) if not isinstance(value, bool) else None
        except OverflowError:  # an integer beyond the float64 range
            result = math.inf
        except (TypeError, ValueError):
            result = None
        if result is None:
            raise self.error(key, f"expected a number, got {_shown(value)}",
                             fix=f"write e.g. '{key.split('.')[-1]}: 0.5'")
        if not math.isfinite(result):
            raise self.error(key, f"expected a finite number, got {_shown(value)}",
                             fix="write a number within +-1.8e308 (the float64 range)")
        return result

    def integer(self, value: Any, key: str, limit: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise self.error(key, f"expected a class index in 0..{limit - 1}, got {_shown(value)}",
                             fix=f"give an integer between 0 and {limit - 1}")
        return value

    def vector(self, value: Any, key: str, size: int | None) -> np.ndarray:
        """A flat float64 vector from a (nested) list, a scalar broadcast to `size`, or a .npy path."""
        if isinstance(value, str) and value.endswith(".npy"):
            file = self.base / value
            try:
                value = np.load(file)
            except (OSError, ValueError) as error:
                raise self.error(key, f"cannot load {file}: {error}", fix="give an existing .npy file "
                                 "(paths are relative to the spec file)") from None
        if isinstance(value, str) and not re.fullmatch(r"\s*[-+]?[\d.]+([eE][-+]?\d+)?\s*", value):
            raise self.error(key, f"expected numbers or a .npy file, got {_shown(value)}",
                             fix="give a list of numbers, a single number or a path ending in .npy")
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            if size is None:
                raise self.error(key, "a single number needs the input size",
                                 fix="add 'n_inputs: N', or give a full list of numbers")
            number = self.number(value, key)
            self.check_inputs(np.array([number]), key)
            return np.full(size, number)
        try:
            array = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise self.error(key, "expected a list of numbers (or a .npy path)",
                             fix="write e.g. '[0.1, 0.2, 0.3]'") from None
        if not np.isfinite(array).all() or array.size == 0:
            raise self.error(key, "the list is empty or holds inf/nan", fix="give finite numbers")
        if size is not None and array.size != size:
            raise self.error(key, f"expected {size} numbers, got {array.size}",
                             fix=f"give exactly {size} numbers (one per flattened input)")
        self.check_inputs(array, key)
        return array

    def check_inputs(self, values: np.ndarray, key: str) -> None:
        """Input-space numbers must lie within +-MAX_INPUT_BOUND, as in VNN-LIB: float32 cannot bound more."""
        if values.size and np.abs(values).max() > MAX_INPUT_BOUND:
            index = int(np.argmax(np.abs(values) > MAX_INPUT_BOUND))
            raise self.error(key, f"value {values[index]:g} at position {index} is beyond +-{MAX_INPUT_BOUND:g}, "
                             "more than float32 can compute with", fix=f"keep inputs within +-{MAX_INPUT_BOUND:g}")

    def size(self, key: str, given: int | None, word: str) -> int | None:
        """The count in `key` (when present) reconciled with the one the caller (the model) gave."""
        if key not in self.data:
            return given
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(key, f"expected a positive integer, got {_shown(value)}", fix=f"write '{key}: 10'")
        if given is None and value > MAX_SPEC_VALUES:
            raise self.error(key, f"{_shown(value)} {word} are more than the limit of {MAX_SPEC_VALUES}",
                             fix="give the model's real size, or load the spec together with its model")
        if given is not None and given != value:
            raise self.error(key, f"the spec says {value} {word} but the model has {given}",
                             fix=f"set '{key}: {given}', or pair the spec with the right model")
        return value


def _robustness(doc: _Document, n_inputs: int | None, n_outputs: int | None) -> Property:
    center = doc.vector(doc.require("input"), "input", n_inputs)
    epsilon = doc.number(doc.require("epsilon"), "epsilon")
    if epsilon < 0:
        raise doc.error("epsilon", f"epsilon must be >= 0, got {epsilon}", fix="give a non-negative radius")
    doc.check_inputs(np.array([epsilon]), "epsilon")
    try:
        norm = parse_norm(doc.data.get("norm", "inf"))
    except ValueError:
        raise doc.error("norm", f"unsupported norm {doc.data['norm']!r}", fix="use inf, 2 or 1") from None
    n_out = doc.size("n_outputs", n_outputs, "outputs")
    if n_out is None:
        raise doc.error("label", "the number of outputs is unknown",
                        fix="add 'n_outputs: 10' (or load the spec together with its model)")
    _check_values(doc, "n_outputs", n_out * n_out)  # one clause of n_out coefficients per other class
    label = doc.integer(doc.require("label"), "label", n_out)
    others = [j for j in range(n_out) if j != label]
    if "target" in doc.data:
        target = doc.integer(doc.data["target"], "target", n_out)
        if target == label:
            raise doc.error("target", "target equals label", fix="choose another class, or drop 'target'")
        others = [target]
    domain = None
    if "domain" in doc.data:
        domain = _box(doc, doc.data["domain"], "domain", center.size)
        if ((center < domain.lower.numpy()[0]) | (center > domain.upper.numpy()[0])).any():
            raise doc.error("domain", "the input lies outside the domain", fix="widen the domain or fix the input")
    return robustness_property(torch.from_numpy(center), label, epsilon, n_out, norm, domain, tuple(others),
                               source=doc.path)


def _check_values(doc: _Document, key: str, values: int) -> None:
    """The Property may hold at most MAX_SPEC_VALUES numbers, as for VNN-LIB."""
    if values > MAX_SPEC_VALUES:
        raise doc.error(key, f"the spec would hold {values} coefficients, more than the limit of {MAX_SPEC_VALUES}",
                        fix="check the number of outputs and the Y_j indices, or split the property")


def _shown(value: Any) -> str:
    """A value as quoted in a message, shortened: a broken file can hold long lists."""
    return shown(repr(value))


def _box(doc: _Document, value: Any, key: str, size: int | None) -> Box:
    if not isinstance(value, dict) or set(value) != {"lower", "upper"}:
        raise doc.error(key, "expected a mapping with exactly the keys lower and upper",
                        fix=f"write '{key}: {{lower: [...], upper: [...]}}'")
    lower = doc.vector(value["lower"], f"{key}.lower", size)
    upper = doc.vector(value["upper"], f"{key}.upper", size if size is not None else lower.size)
    if (lower > upper).any():
        index = int(np.argmax(lower > upper))
        raise doc.error(key, f"lower bound {lower[index]} is above upper bound {upper[index]} at input {index}",
                        fix="swap or correct the bounds")
    return Box(torch.from_numpy(lower)[None], torch.from_numpy(upper)[None])


def _explicit(doc: _Document, n_inputs: int | None, n_outputs: int | None) -> Property:
    if ("inputs" in doc.data) == ("boxes" in doc.data):
        raise doc.error("inputs", "give exactly one of 'inputs' (one box) and 'boxes' (a list of boxes)",
                        fix="keep one of the two keys")
    size = doc.size("n_inputs", n_inputs, "inputs")
    if "inputs" in doc.data:
        boxes = [_box(doc, doc.data["inputs"], "inputs", size)]
    else:
        items = doc.data["boxes"]
        if not isinstance(items, list) or not items:
            raise doc.error("boxes", "expected a non-empty list of boxes", fix="write '- {lower: [...], upper: [...]}'")
        boxes = []
        for i, item in enumerate(items):
            boxes.append(_box(doc, item, f"boxes[{i}]", size))
            size = boxes[0].lower.shape[1]
    clauses = _clauses(doc)
    n_out = doc.size("n_outputs", n_outputs, "outputs")
    used = max((j for rows in clauses for coefficients, _ in rows for j in coefficients), default=-1) + 1
    if n_out is None and used == 0:
        raise doc.error("n_outputs", "no output Y_j is mentioned, so the number of outputs is unknown",
                        fix="add 'n_outputs: N'")
    if n_out is None:
        n_out = used
    elif used > n_out:
        raise doc.error("unsafe" if "unsafe" in doc.data else "safe", f"Y_{used - 1} is used but there are "
                        f"only {n_out} outputs", fix=f"use Y_0 .. Y_{n_out - 1}")
    _check_values(doc, "n_outputs", sum(map(len, clauses)) * n_out)
    output_clauses = tuple(_clause(rows, n_out) for rows in clauses)
    regions = tuple(RegionSpec(box, output_clauses) for box in boxes)
    return Property(boxes[0].lower.shape[1], n_out, regions, source=doc.path)


def _clauses(doc: _Document) -> list[list[tuple[dict[int, float], float]]]:
    """The unsafe clauses as lists of rows ({j: coefficient}, bound) meaning c . y <= bound."""
    if ("unsafe" in doc.data) == ("safe" in doc.data):
        raise doc.error("unsafe", "give exactly one of 'unsafe' (clauses) and 'safe' (rows that must hold)",
                        fix="keep one of the two keys")
    key = "unsafe" if "unsafe" in doc.data else "safe"
    items = doc.data[key]
    items = [items] if isinstance(items, str) else items
    if not isinstance(items, list) or not items:
        raise doc.error(key, "expected a non-empty list", fix=f"write '{key}: [\"Y_0 - Y_1 <= 0\"]'")
    if key == "safe":  # unsafe = some safe row fails: not(d <= 0) is d > 0, read as -d <= 0
        clauses = []
        for i, text in enumerate(items):
            difference, op = _row(doc, text, f"safe[{i}]")
            if op == "=":
                raise doc.error(f"safe[{i}]", "a safe equality fails on an open set that cannot be bounded",
                                fix="write it as two inequalities with a tolerance")
            clauses.append([_negate(difference) if op == "<=" else difference])
        return clauses
    clauses = []
    for i, clause in enumerate(items):
        rows = [clause] if isinstance(clause, str) else clause
        if not isinstance(rows, list):
            raise doc.error(f"unsafe[{i}]", "a clause is a row string or a list of row strings",
                            fix="write '- [\"Y_0 >= Y_1\", \"Y_0 >= 2\"]'")
        clause_rows = []
        for r, text in enumerate(rows):
            difference, op = _row(doc, text, f"unsafe[{i}][{r}]")
            negated = _negate(difference)
            clause_rows += {"<=": [difference], ">=": [negated], "=": [difference, negated]}[op]
        clauses.append(clause_rows)
    return clauses


def _negate(row: tuple[dict[int, float], float]) -> tuple[dict[int, float], float]:
    return {j: -c for j, c in row[0].items()}, -row[1]


def _row(doc: _Document, text: Any, key: str) -> tuple[tuple[dict[int, float], float], str]:
    """Parse 'lhs OP rhs' over Y_j into ((lhs - rhs) as {j: c}, bound) with OP one of <=, >=, =."""
    if not isinstance(text, str):
        raise doc.error(key, f"expected a row such as \"Y_0 - Y_1 <= 0\", got {_shown(text)}", fix="quote the row")
    tokens = [(m.lastgroup, m[m.lastgroup], m.start(m.lastgroup) + 1) for m in _ROW_TOKEN.finditer(text.rstrip())]
    ops = [i for i, token in enumerate(tokens) if token[1] in _COMPARISONS]
    if len(ops) != 1:
        raise doc.error(key, f"'{shown(text)}' needs exactly one of <=, >=, =", fix="write e.g. \"Y_0 - Y_1 <= 0\"")
    left, left_constant = _linear(doc, text, tokens[:ops[0]], key)
    right, right_constant = _linear(doc, text, tokens[ops[0] + 1:], key)
    for j, c in right.items():
        left[j] = left.get(j, 0.0) - c
    if not all(map(math.isfinite, [right_constant - left_constant, *left.values()])):
        raise doc.error(key, f"'{shown(text)}' has a coefficient or bound beyond float64 (inf or nan)",
                        fix=FINITE_FIX)
    op = {"<": "<=", ">": ">=", "==": "="}.get(tokens[ops[0]][1], tokens[ops[0]][1])
    return (left, right_constant - left_constant), op


def _linear(doc: _Document, text: str, tokens: list[tuple[str, str, int]], key: str) -> tuple[dict[int, float], float]:
    """A sum of terms like `2.5 * Y_3`, `- Y_1`, `4` into ({j: coefficient}, constant)."""
    coefficients: dict[int, float] = {}
    constant, i = 0.0, 0

    def fail(column: int, what: str) -> SpecError:
        return doc.error(key, f"in '{shown(text)}' at column {column}: expected {what}",
                         fix="write rows as sums of terms like 2 * Y_0, -Y_1 or 3.5")

    while True:
        sign, term_start = 1.0, i
        while i < len(tokens) and tokens[i][1] in ("+", "-"):
            sign, i = (-sign if tokens[i][1] == "-" else sign), i + 1
        if i == term_start and term_start > 0:
            raise fail(tokens[i][2] if i < len(tokens) else len(text) + 1, "+ or -")
        value, variable = sign, None
        while True:
            if i >= len(tokens):
                raise fail(len(text) + 1, "a number or Y_j")
            kind, token, column = tokens[i]
            if kind == "number":
                value *= float(token)
            elif kind == "name" and re.fullmatch(r"Y_[0-9]{1,18}", token) and variable is None:
                variable = int(token[2:])
            else:
                raise fail(column, "a number or an output Y_j (one per term)")
            i += 1
            if i < len(tokens) and tokens[i][1] == "*":
                i += 1
                continue
            break
        if variable is None:
            constant += value
        else:
            coefficients[variable] = coefficients.get(variable, 0.0) + value
        if i >= len(tokens):
            return coefficients, constant


def _clause(rows: list[tuple[dict[int, float], float]], n_outputs: int) -> OutputClause:
    coefficients = torch.zeros(len(rows), n_outputs, dtype=torch.float64)
    for r, (row, _) in enumerate(rows):
        for j, c in row.items():
            coefficients[r, j] += c
    rhs = torch.tensor([bound for _, bound in rows], dtype=torch.float64)
    return OutputClause(coefficients, rhs)


def parse_yaml_spec(text: str, path: str = "<yaml>", n_inputs: int | None = None, n_outputs: int | None = None,
                    base: Path | None = None) -> Property:
    """Read YAML spec text into a Property; relative .npy paths are resolved against `base`."""
    doc = _Document(text, path, base if base is not None else Path("."))
    if not isinstance(doc.data, dict):
        raise SpecError("the spec must be a YAML mapping of keys", path=path,
                        fix="start from an example in specs/ (see specs/README.md)")
    keys = {str(key) for key in doc.data}
    if keys & {"input", "epsilon", "label"}:
        form, allowed, build = "robustness", ROBUSTNESS_KEYS, _robustness
    elif keys & {"inputs", "boxes"}:
        form, allowed, build = "explicit", EXPLICIT_KEYS, _explicit
    else:
        raise SpecError("cannot tell which form this spec is", path=path,
                        fix="give 'input', 'epsilon' and 'label' (robustness) or 'inputs'/'boxes' with "
                            "'unsafe'/'safe' (explicit); see specs/README.md")
    unknown = sorted(keys - set(allowed))
    if unknown:
        raise doc.error(unknown[0], f"unknown key '{unknown[0]}' in a {form} spec",
                        fix=f"use only these keys: {', '.join(allowed)}")
    return build(doc, n_inputs, n_outputs)


def read_yaml_spec(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Read a .yaml / .yml spec file into a Property."""
    path = Path(path)
    text = read_text(path, fix="give a YAML text file")
    return parse_yaml_spec(text, str(path), n_inputs, n_outputs, base=path.parent)
