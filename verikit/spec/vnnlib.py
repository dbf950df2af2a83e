"""VNN-LIB reader and writer.

A VNN-LIB file is a list of SMT-LIB s-expressions: `(declare-const X_i Real)` for every flattened
input, `(declare-const Y_j Real)` for every output, then `(assert ...)` forms whose conjunction
describes the UNSAFE set. Reading goes in four steps:

1. `Source` (verikit.spec.sexpr): text -> tokens (parentheses and atoms); comments are dropped.
2. `parse` (verikit.spec.sexpr): tokens -> forms. A form is a list `[open, item, ...]` whose first entry
   is the token index of its `(`; an item is a form or the token index (an int) of an atom. A token index
   gives the line and column of anything on demand (`Source.place`), so the hot loop stores nothing else.
3. `_Reader`: forms -> linear rows `a . v <= b` (terms by `sexpr.linear`) combined by `and` / `or`, expanded
   into disjunctive normal form (DNF). Rows every disjunct shares are kept apart, so a box of 3072 bounds
   is read once.
4. `_Reader.regions`: each disjunct -> an input box (plus linear input constraints, if any) and an
   output clause; disjuncts with the same input part share one RegionSpec.

Strict comparisons `<` and `>` are read as `<=` and `>=`: the unsafe set is replaced by its closure,
which differs by a set of measure zero and is what sound bound methods reason about anyway.

Numbers: every literal is rounded to the nearest float64, so one below the smallest subnormal (1e-400)
reads as 0; one beyond the largest float64 (1e400) has no nearest value and is an error. Every
coefficient and bound after arithmetic must be finite, and input bounds within +-MAX_INPUT_BOUND.
Memory follows the text: the declarations are checked before anything is sized by them, nesting is at
most `sexpr.MAX_DEPTH` deep, and the expanded property holds at most MAX_SPEC_VALUES numbers.
"""
from __future__ import annotations

import gc
import math
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from verikit.errors import SpecError
from verikit.region import Box, LpBall
from verikit.spec.property import InputConstraints, OutputClause, Property, RegionSpec
from verikit.spec.sexpr import FINITE_FIX, Source, Term, finite, fold, linear, overflow, parse, read_text, shown

MAX_DISJUNCTS = 100_000
MAX_SPEC_VALUES = 20_000_000  # rows and disjuncts of the expanded DNF, and numbers of the Property built
MAX_INPUT_BOUND = 1e30  # float32 reaches 3.4e38: inputs beyond 1e30 leave no room for the network's arithmetic
COMPARISONS = frozenset(("<=", ">=", "<", ">", "="))
_SKIPPED_COMMANDS = ("check-sat", "get-model", "set-logic", "set-info", "set-option", "exit")
_NAME = re.compile(r"([XY])_(0|[1-9][0-9]{0,17})")  # indices below 10**18; int() refuses over 4300 digits
_NUMERAL = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_DECLARE_HINT = "declare every input as (declare-const X_i Real) and every output as (declare-const Y_j Real)"
_EXPANSION_FIX = "split the property into several files, or factor common conditions out"


class Row(NamedTuple):
    """One linear condition `sum coefficients[i] * v_i <= bound` over inputs ('X'), outputs ('Y') or
    no variable at all ('')."""

    kind: str
    coefficients: dict[int, float]
    bound: float


class _Reader:
    """Turns parsed forms into variables and rows in DNF, then into regions."""

    def __init__(self, source: Source):
        self.source, self.tokens = source, source.tokens
        self.variables: dict[str, tuple[str, int]] = {}  # name -> ("X" | "Y", index)
        self.declared_at: dict[str, int] = {}
        self.counts = {"X": 0, "Y": 0}
        self.expanded = 0  # rows and disjuncts made by expanding and/or, against MAX_SPEC_VALUES

    # ---- declarations -------------------------------------------------------------------------
    def declare(self, form: list) -> None:
        """(declare-const NAME Real), or (declare-fun NAME () Real) which declares a constant too."""
        if len(form) == 5 and type(form[3]) is list and len(form[3]) == 1:
            form = [*form[:3], form[4]]
        if len(form) != 4 or type(form[2]) is not int or type(form[3]) is not int:
            raise self.source.error(form[0], "malformed declaration", fix="write (declare-const X_0 Real)")
        name_at, sort_at = form[2], form[3]
        name, sort = self.tokens[name_at], self.tokens[sort_at]
        match = _NAME.fullmatch(name)
        if match is None:
            raise self.source.error(name_at, f"variable name '{shown(name)}' is not X_i or Y_j (i, j below 10^18)",
                                    fix=_DECLARE_HINT)
        if sort != "Real":
            raise self.source.error(sort_at, f"{name} has sort '{shown(sort)}'; only Real is supported",
                                    fix=f"declare it as (declare-const {name} Real)")
        if name in self.variables:
            raise self.source.error(name_at, f"{name} is declared twice", fix="remove one declaration")
        self.variables[name] = (match[1], int(match[2]))
        self.declared_at[name] = name_at

    def check_declarations(self, n_inputs: int | None, n_outputs: int | None) -> None:
        """Inputs must be X_0..X_{n-1}, outputs Y_0..Y_{m-1}, and agree with the model where given. Checked
        before anything is sized by an index, so the cost follows the declarations present, not X_1000000000."""
        for kind, word, expected in (("X", "inputs", n_inputs), ("Y", "outputs", n_outputs)):
            names = {index: name for name, (k, index) in self.variables.items() if k == kind}
            if not names:
                raise self.source.error(None, f"no {word} are declared", fix=_DECLARE_HINT)
            top = max(names)
            last = names[top]
            if expected is not None and top >= expected:
                raise self.source.error(self.declared_at[last], f"{last} is declared, but the model has "
                                        f"{expected} {word} ({kind}_0 .. {kind}_{expected - 1})",
                                        fix=f"declare only {kind}_0 .. {kind}_{expected - 1}, or pair the spec "
                                            "with the model it was written for")
            if top >= len(names):  # some index below the largest is missing
                missing = next(i for i in range(len(names)) if i not in names)
                raise self.source.error(self.declared_at[last], f"{kind}_{missing} is not declared, but "
                                        f"{last} is: {word} must be numbered from {kind}_0 without gaps",
                                        fix=f"add (declare-const {kind}_{missing} Real)")
            self.counts[kind] = len(names)
            if expected is not None and expected != len(names):
                raise self.source.error(None, f"the spec declares {len(names)} {word} ({kind}_0 .. "
                                        f"{kind}_{len(names) - 1}) but the model has {expected}",
                                        fix=f"use a spec written for this model (one with {expected} {word}), "
                                            "or check that the right model and spec are paired")

    # ---- formulas -> DNF ----------------------------------------------------------------------
    def formula(self, item: int | list) -> list[list[Row]]:
        """A boolean formula as DNF: a list of disjuncts, each a list of rows that must all hold."""
        if type(item) is list and len(item) > 1:
            op = self.source.head(item)
            if op in COMPARISONS:  # the common case, read without the stack of `fold`
                return [self.comparison(item, op)]
        return fold(item, self.subformulas, self.condition)

    def subformulas(self, item: int | list) -> list:
        """The operands of and / or, read before their operator; [] for a comparison, true or false."""
        if type(item) is int:
            return []
        op = self.source.head(item)
        if op == "and" or op == "or":
            return item[2:]
        if op in COMPARISONS:
            return []
        raise self.source.error(item[1], f"unknown operator '{shown(op)}' in a condition",
                                fix="use and, or, <=, >=, <, > or =")

    def condition(self, item: int | list, parts: list[list[list[Row]]]) -> list[list[Row]]:
        """The DNF of one condition, given the DNFs of its operands."""
        if type(item) is int:
            token = self.tokens[item]
            if token in ("true", "false"):
                return [[]] if token == "true" else []
            raise self.source.error(item, f"expected a condition, found '{shown(token)}'",
                                    fix="write a comparison such as (<= Y_0 Y_1), or (and ...) / (or ...)")
        op = self.tokens[item[1]]
        if op == "and":
            return self.conjoin(parts, item[0])
        if op == "or":
            size = sum(map(len, parts))
            self.check_size(size, item[0])
            self.count_expansion(size, item[0])
            return [disjunct for part in parts for disjunct in part]
        return [self.comparison(item, op)]

    def conjoin(self, parts: list[list[list[Row]]], at: int) -> list[list[Row]]:
        """AND of DNFs, distributed over their ORs. The operands' lists are fresh and used once, so the
        first single-disjunct operand is extended in place rather than copied."""
        if any(not part for part in parts):
            return []
        size = 1
        for part in parts:
            size *= len(part)
            self.check_size(size, at)
        if size > 1:  # each operand's rows are copied once per combination of the other operands
            self.count_expansion(size + sum(sum(map(len, part)) * (size // len(part)) for part in parts), at)
        result: list[list[Row]] = [[]]
        for part in parts:
            if len(part) > 1:
                result = [disjunct + choice for disjunct in result for choice in part]
            elif len(result) == 1 and not result[0]:
                result = [part[0]]
            else:
                for disjunct in result:
                    disjunct.extend(part[0])
        return result

    def check_size(self, size: int, at: int) -> None:
        if size > MAX_DISJUNCTS:
            raise self.source.error(at, f"expanding and/or into disjunctive normal form gives at least {size} "
                                    f"disjuncts, more than the limit of {MAX_DISJUNCTS}", fix=_EXPANSION_FIX)

    def count_expansion(self, made: int, at: int | None) -> None:
        """Add `made` rows or disjuncts to the expansion's total: refused beyond MAX_SPEC_VALUES."""
        self.expanded += made
        if self.expanded > MAX_SPEC_VALUES:
            raise self.source.error(at, f"the property expands to more than {MAX_SPEC_VALUES} rows, disjuncts "
                                    "and coefficients", fix=_EXPANSION_FIX)

    def comparison(self, form: list, op: str) -> list[Row]:
        """(op a b c ...) holds pairwise: a op b, b op c; `=` gives two rows per pair."""
        if len(form) == 4 and type(form[2]) is int and type(form[3]) is int:  # the common case: two atoms
            smaller, larger = (form[3], form[2]) if op == ">=" or op == ">" else (form[2], form[3])
            rows = [self.atom_row(smaller, larger, form[0])]
            if op == "=":
                rows.append(self.atom_row(larger, smaller, form[0]))
            return rows
        operands = [linear(self.source, item, self.atom) for item in form[2:]]
        if len(operands) < 2:
            raise self.source.error(form[0], f"'{op}' needs two operands", fix=f"write ({op} a b)")
        rows = []
        for left, right in zip(operands, operands[1:]):
            if op != ">=" and op != ">":
                rows.append(self.row(left, right, form[0]))
            if op != "<=" and op != "<":
                rows.append(self.row(right, left, form[0]))
        return rows

    def atom_row(self, smaller: int, larger: int, at: int) -> Row:
        """`smaller <= larger` for two atoms (token indices), each a variable or a number."""
        a, b = self.variables.get(self.tokens[smaller]), self.variables.get(self.tokens[larger])
        if a is None and b is None:
            bound = self.number(larger) - self.number(smaller)
            if not math.isfinite(bound):
                raise overflow(self.source, at, "comparison")
            return Row("", {}, bound)
        if b is None:
            return Row(a[0], {a[1]: 1.0}, self.number(larger))
        if a is None:
            return Row(b[0], {b[1]: -1.0}, -self.number(smaller))
        if a[0] != b[0]:
            raise self.mixed(at)
        return Row(a[0], {a[1]: 1.0, b[1]: -1.0} if a != b else {a[1]: 0.0}, 0.0)

    def row(self, smaller: Term, larger: Term, at: int) -> Row:
        """`smaller <= larger` for linear terms, as the row (smaller - larger) . v <= constant."""
        coefficients = dict(smaller[0])
        for name, value in larger[0].items():
            coefficients[name] = coefficients.get(name, 0.0) - value
        kinds = {self.variables[name][0] for name in coefficients}
        if len(kinds) > 1:
            raise self.mixed(at)
        indexed = {self.variables[name][1]: value for name, value in coefficients.items()}
        bound = larger[1] - smaller[1]
        finite(self.source, (indexed, bound), at, "comparison")
        return Row(kinds.pop() if kinds else "", indexed, bound)

    def mixed(self, at: int) -> SpecError:
        return self.source.error(at, "this comparison mixes inputs (X_i) and outputs (Y_j)",
                                 fix="state input conditions and output conditions in separate comparisons")

    def atom(self, index: int) -> Term:
        """A variable or a number as a linear term."""
        token = self.tokens[index]
        if token in self.variables:
            return {token: 1.0}, 0.0
        return {}, self.number(index)

    def number(self, index: int) -> float:
        """An atom that is not a variable must be a number (integer, decimal or scientific), rounded to the
        nearest float64: below the smallest subnormal it reads as 0, beyond the largest float64 it is refused."""
        token = self.tokens[index]
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and "_" not in token:  # float() also takes 'inf', 'nan' and '1_000'
            return value
        if _NUMERAL.fullmatch(token):
            raise self.source.error(index, f"the number {shown(token)} is beyond the largest float64 (1.8e308)",
                                    fix=f"write a number within +-1.8e308 (input bounds within "
                                        f"+-{MAX_INPUT_BOUND:g}); a tiny one such as 1e-400 reads as 0")
        if _NAME.fullmatch(token):
            raise self.source.error(index, f"unknown variable {token}: it is not declared",
                                    fix=f"add (declare-const {token} Real) before the asserts")
        raise self.source.error(index, f"'{shown(token)}' is neither a declared variable nor a number",
                                fix="write numbers as 3, -0.5 or 1.5e-05 and declare every variable")

    # ---- DNF -> regions -----------------------------------------------------------------------
    def regions(self, common: list[Row], disjuncts: list[list[Row]]) -> tuple[RegionSpec, ...]:
        """Group disjuncts with the same input part into one RegionSpec each. A disjunct's box is kept as
        the bounds it tightens beyond the common box, so the cost follows the rows, not disjuncts x inputs."""
        n_in, n_out = self.counts["X"], self.counts["Y"]
        lower, upper, inputs, outputs = {}, {}, [], []  # the common part: bounds by input index
        groups: dict[tuple, tuple[dict, dict, list, list]] = {}
        if self.sort(common, lower, upper, inputs, outputs):
            for rows in disjuncts:
                low, high, own_inputs, own_outputs = part = {}, {}, [], []
                if not self.sort(rows, *part):
                    continue
                low = {i: value for i, value in low.items() if value > lower.get(i, -math.inf)}
                high = {i: value for i, value in high.items() if value < upper.get(i, math.inf)}
                constraints = tuple((tuple(row.coefficients.items()), row.bound) for row in own_inputs)
                key = (tuple(sorted(low.items())), tuple(sorted(high.items())), constraints)
                if key not in groups:
                    groups[key] = (low, high, inputs + own_inputs, [])
                    self.count_expansion((2 + len(inputs) + len(own_inputs)) * n_in, None)
                groups[key][3].append(outputs + own_outputs)  # this disjunct's clause
                self.count_expansion((len(outputs) + len(own_outputs) + 1) * n_out, None)
        if not groups:
            raise self.source.error(None, "the assertions can never hold together (the unsafe set is empty)",
                                    fix="check the constant comparisons and the or-branches of the asserts")
        return tuple(self.region(_bounds(lower, low, n_in, -math.inf), _bounds(upper, high, n_in, math.inf),
                                 rows, clauses) for low, high, rows, clauses in groups.values())

    def sort(self, rows: list[Row], lower: dict, upper: dict, inputs: list, outputs: list) -> bool:
        """Tighten the bounds by single-input rows, file other rows; False if a constant row is false."""
        for row in rows:
            if row.kind == "Y":
                outputs.append(row)
                continue
            used = row.coefficients
            if len(used) != 1:
                used = {i: c for i, c in used.items() if c != 0.0}
            if len(used) > 1:
                inputs.append(row)
            elif not used or 0.0 in used.values():
                if row.bound < 0:
                    return False
            else:
                [(index, coefficient)] = used.items()
                value = row.bound / coefficient
                if math.isinf(value):
                    raise self.source.error(self.declared_at[f"X_{index}"], f"a bound on X_{index}, {row.bound:g} "
                                            f"/ {coefficient:g}, overflows float64", fix=FINITE_FIX)
                if coefficient > 0 and value < upper.get(index, math.inf):
                    upper[index] = value
                elif coefficient < 0 and value > lower.get(index, -math.inf):
                    lower[index] = value
        return True

    def region(self, lower: list, upper: list, inputs: list[Row], clauses: list[list[Row]]) -> RegionSpec:
        """One RegionSpec: the box must be bounded, within +-MAX_INPUT_BOUND and non-empty in every input."""
        for index, (low, high) in enumerate(zip(lower, upper)):
            name = f"X_{index}"
            if low == -math.inf or high == math.inf:
                raise self.source.error(self.declared_at[name], f"unbounded input {name}: it has no "
                                        f"{'lower' if low == -math.inf else 'upper'} bound",
                                        fix=f"add (assert (>= {name} LOW)) and (assert (<= {name} HIGH))")
            if max(abs(low), abs(high)) > MAX_INPUT_BOUND:
                raise self.source.error(self.declared_at[name], f"input {name} has bounds [{low:g}, {high:g}], "
                                        f"beyond +-{MAX_INPUT_BOUND:g}: float32 cannot compute with such inputs",
                                        fix=f"bound {name} within +-{MAX_INPUT_BOUND:g} (normalise the inputs)")
            if low > high:
                raise self.source.error(self.declared_at[name], f"input {name} has lower bound {low} above "
                                        f"its upper bound {high}", fix="swap or correct its bounds")
        box = Box(torch.tensor([lower], dtype=torch.float64), torch.tensor([upper], dtype=torch.float64))
        constraints = None
        if inputs:
            coefficients, rhs = _matrix(inputs, self.counts["X"])
            constraints = InputConstraints(coefficients, rhs)
        output_clauses = tuple(OutputClause(*_matrix(rows, self.counts["Y"])) for rows in clauses)
        return RegionSpec(box, output_clauses, constraints)


def _bounds(common: dict[int, float], own: dict[int, float], size: int, default: float) -> list[float]:
    """One side of a region's box as a list: the common bounds, overridden by the disjunct's own."""
    bounds = [default] * size
    for bound in (common, own):
        for index, value in bound.items():
            bounds[index] = value
    return bounds


def _matrix(rows: list[Row], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    coefficients = np.zeros((len(rows), width))
    for r, row in enumerate(rows):
        for index, value in row.coefficients.items():
            coefficients[r, index] = value
    rhs = np.array([row.bound for row in rows], dtype=np.float64)
    return torch.from_numpy(coefficients), torch.from_numpy(rhs)


def parse_vnnlib(text: str, path: str = "<vnnlib>", n_inputs: int | None = None,
                 n_outputs: int | None = None) -> Property:
    """Read VNN-LIB text into a Property; `n_inputs` / `n_outputs`, when given, must match the declarations."""
    collecting = gc.isenabled()
    gc.disable()  # parsing builds many small lists that live to the end: rescanning them is wasted time
    try:
        return _read(Source(text, path), n_inputs, n_outputs)
    finally:
        if collecting:
            gc.enable()


def _read(source: Source, n_inputs: int | None, n_outputs: int | None) -> Property:
    reader = _Reader(source)
    forms = parse(source)
    asserts = []
    for form in forms:
        command = source.head(form)
        if command in ("declare-const", "declare-fun"):
            reader.declare(form)
        elif command == "assert":
            asserts.append(form)
        elif command not in _SKIPPED_COMMANDS:
            raise source.error(form[1], f"unknown command '{command}'", fix="use declare-const and assert")
    reader.check_declarations(n_inputs, n_outputs)
    common: list[Row] = []  # rows of asserts without `or`: shared by every disjunct
    branching, branching_at = [], []
    for form in asserts:
        if len(form) != 3:
            raise source.error(form[0], "assert takes exactly one condition", fix="write (assert (<= X_0 1))")
        dnf = reader.formula(form[2])
        if len(dnf) == 1:
            common.extend(dnf[0])
        else:
            branching.append(dnf)
            branching_at.append(form[0])
    disjuncts = reader.conjoin(branching, branching_at[0] if branching_at else 0)
    regions = reader.regions(common, disjuncts)
    return Property(reader.counts["X"], reader.counts["Y"], regions, source=source.path)


def read_vnnlib(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Read a .vnnlib (or gzipped .vnnlib.gz) file into a Property."""
    text = read_text(Path(path), fix="give a VNN-LIB text file (optionally gzipped)")
    return parse_vnnlib(text, str(path), n_inputs, n_outputs)


# ---- writer -------------------------------------------------------------------------------------
def write_vnnlib(prop: Property, path: str | Path) -> None:
    """Write `prop` as VNN-LIB that reads back to an equal Property. Only boxes and L-inf balls can be
    written; on reading back, regions with identical input parts merge, and single-input constraint
    rows become box bounds."""
    lines = [f"; written by verikit from {prop.source or 'a Property'}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(prop.n_inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(prop.n_outputs)]
    shared = len(prop.regions) == 1  # one region: state its box once, as top-level asserts
    if shared:
        lines += [f"(assert {atom})" for atom in _input_atoms(prop.regions[0], path)]
    lines.append("(assert (or")
    for spec in prop.regions:
        inputs = [] if shared else _input_atoms(spec, path)
        for clause in spec.clauses:
            lines.append(f"    (and {' '.join(inputs + _rows(clause.coefficients, clause.rhs, 'Y'))})")
    lines.append("))")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _input_atoms(spec: RegionSpec, path: str | Path) -> list[str]:
    region = spec.region
    if isinstance(region, LpBall) and region.norm != math.inf:
        raise SpecError(f"an L{region.norm:g} ball cannot be written as VNN-LIB, which describes boxes",
                        path=str(path), fix="write the property as YAML, or use an L-inf ball or a box")
    bounds = region.bounding_box()  # an L-inf ball's box, clipped to its domain
    if bounds.lower.shape[0] != 1:
        raise SpecError(f"a region holds {bounds.lower.shape[0]} problems; VNN-LIB needs one per region",
                        path=str(path), fix="split the batch into separate regions")
    lower, upper = bounds.lower[0].tolist(), bounds.upper[0].tolist()
    atoms = [atom for i, (low, high) in enumerate(zip(lower, upper))
             for atom in (f"(>= X_{i} {low!r})", f"(<= X_{i} {high!r})")]
    if spec.input_constraints is not None:
        atoms += _rows(spec.input_constraints.coefficients, spec.input_constraints.rhs, "X")
    return atoms


def _rows(coefficients: torch.Tensor, rhs: torch.Tensor, prefix: str) -> list[str]:
    """Rows `c . v <= d` as VNN-LIB comparisons (terms with a zero coefficient are left out)."""
    rows = []
    for row, bound in zip(coefficients.tolist(), rhs.tolist()):
        terms = [_term(value, f"{prefix}_{i}") for i, value in enumerate(row) if value != 0.0]
        if not terms:  # keep an all-zero row as a row over the variables
            terms = [_term(0.0, f"{prefix}_0")]
        lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
        rows.append(f"(<= {lhs} {float(bound)!r})")
    return rows


def _term(value: float, name: str) -> str:
    if value == 1.0:
        return name
    if value == -1.0:
        return f"(- {name})"
    return f"(* {float(value)!r} {name})"
