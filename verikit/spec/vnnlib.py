"""VNN-LIB reader and writer.

A VNN-LIB file is a list of SMT-LIB s-expressions: `(declare-const X_i Real)` for every flattened
input, `(declare-const Y_j Real)` for every output, then `(assert ...)` forms whose conjunction
describes the UNSAFE set. Reading goes in four steps:

1. `_Source`: text -> tokens (parentheses and atoms); comments (`;` to end of line) are dropped.
2. `parse`: tokens -> forms. A form is a list `[open, item, ...]` whose first entry is the token index
   of its `(`; an item is a form or the token index (an int) of an atom. A token index gives the line
   and column of anything on demand (`_Source.place`), so the hot loop stores nothing else.
3. `_Reader`: forms -> linear rows `a . v <= b` combined by `and` / `or`, expanded into disjunctive
   normal form (DNF). Rows every disjunct shares are kept apart, so a box of 3072 bounds is read once.
4. `_Reader.regions`: each disjunct -> an input box (plus linear input constraints, if any) and an
   output clause; disjuncts with the same input part share one RegionSpec.

Strict comparisons `<` and `>` are read as `<=` and `>=`: the unsafe set is replaced by its closure,
which differs by a set of measure zero and is what sound bound methods reason about anyway.
"""
from __future__ import annotations

import gc
import gzip
import math
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from verikit.errors import SpecError
from verikit.region import Box, LpBall
from verikit.spec.property import InputConstraints, OutputClause, Property, RegionSpec

MAX_DISJUNCTS = 100_000
COMPARISONS = frozenset(("<=", ">=", "<", ">", "="))
_SKIPPED_COMMANDS = ("check-sat", "get-model", "set-logic", "set-info", "set-option", "exit")
_COMMENT = re.compile(r";[^\n]*")
_TOKEN = re.compile(r";[^\n]*|[()]|[^\s();]+")  # the same tokens as _Source.tokens, with offsets
_NAME = re.compile(r"([XY])_(0|[1-9][0-9]*)")
_DECLARE_HINT = "declare every input as (declare-const X_i Real) and every output as (declare-const Y_j Real)"


class Row(NamedTuple):
    """One linear condition `sum coefficients[i] * v_i <= bound` over inputs ('X'), outputs ('Y') or
    no variable at all ('')."""

    kind: str
    coefficients: dict[int, float]
    bound: float


class _Source:
    """The text being read and its tokens; turns a token index into 'line L, column C' on demand."""

    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        # tokens: parentheses and atoms, with `;` comments dropped
        self.tokens = _COMMENT.sub("", text).replace("(", " ( ").replace(")", " ) ").split()
        self._offsets: list[int] | None = None

    def place(self, index: int) -> str:
        if self._offsets is None:
            self._offsets = [m.start() for m in _TOKEN.finditer(self.text) if m.group()[0] != ";"]
        offset = self._offsets[index] if index < len(self._offsets) else len(self.text)
        line = self.text.count("\n", 0, offset) + 1
        column = offset - self.text.rfind("\n", 0, offset)
        return f"line {line}, column {column}"

    def error(self, index: int | None, message: str, fix: str | None = None) -> SpecError:
        place = self.place(index) if index is not None else None
        return SpecError(message, path=self.path, place=place, fix=fix)


def parse(source: _Source) -> list[list]:
    """Nest the tokens into forms (see the module docstring); returns the top-level forms."""
    top: list = [-1]
    stack: list[list] = []
    current = top
    for index, token in enumerate(source.tokens):
        if token == "(":
            form = [index]
            current.append(form)
            stack.append(current)
            current = form
        elif token == ")":
            if not stack:
                raise source.error(index, "unbalanced parentheses: this ')' closes nothing",
                                   fix="remove it, or add the '(' it should close")
            current = stack.pop()
        else:
            current.append(index)
    if stack:
        raise source.error(current[0], "unbalanced parentheses: the '(' opened here is never closed",
                           fix="add the missing ')'")
    for item in top[1:]:
        if isinstance(item, int):
            raise source.error(item, f"'{source.tokens[item]}' stands outside any form",
                               fix="write commands as (declare-const ...) or (assert ...)")
    return top[1:]


class _Reader:
    """Turns parsed forms into variables and rows in DNF, then into regions."""

    def __init__(self, source: _Source):
        self.source, self.tokens = source, source.tokens
        self.variables: dict[str, tuple[str, int]] = {}  # name -> ("X" | "Y", index)
        self.declared_at: dict[str, int] = {}
        self.counts = {"X": 0, "Y": 0}

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
            raise self.source.error(name_at, f"variable name '{name}' is not X_i or Y_j", fix=_DECLARE_HINT)
        if sort != "Real":
            raise self.source.error(sort_at, f"{name} has sort '{sort}'; only Real is supported",
                                    fix=f"declare it as (declare-const {name} Real)")
        if name in self.variables:
            raise self.source.error(name_at, f"{name} is declared twice", fix="remove one declaration")
        self.variables[name] = (match[1], int(match[2]))
        self.declared_at[name] = name_at

    def check_declarations(self, n_inputs: int | None, n_outputs: int | None) -> None:
        """Inputs must be X_0..X_{n-1}, outputs Y_0..Y_{m-1}, and agree with the model where given."""
        for kind, word, expected in (("X", "inputs", n_inputs), ("Y", "outputs", n_outputs)):
            indices = sorted(i for k, i in self.variables.values() if k == kind)
            if not indices:
                raise self.source.error(None, f"no {word} are declared", fix=_DECLARE_HINT)
            missing = sorted(set(range(indices[-1] + 1)) - set(indices))
            if missing:
                last = f"{kind}_{indices[-1]}"
                raise self.source.error(self.declared_at[last], f"{kind}_{missing[0]} is not declared, but "
                                        f"{last} is: {word} must be numbered from {kind}_0 without gaps",
                                        fix=f"add (declare-const {kind}_{missing[0]} Real)")
            self.counts[kind] = len(indices)
            if expected is not None and expected != len(indices):
                raise self.source.error(None, f"the spec declares {len(indices)} {word} ({kind}_0 .. "
                                        f"{kind}_{len(indices) - 1}) but the model has {expected}",
                                        fix=f"use a spec written for this model (one with {expected} {word}), "
                                            "or check that the right model and spec are paired")

    # ---- formulas -> DNF ----------------------------------------------------------------------
    def head(self, form: list) -> str:
        """The operator (first atom) of a form."""
        if len(form) < 2 or type(form[1]) is not int:
            raise self.source.error(form[0], "expected an operator after '('", fix="write (op arg ...)")
        return self.tokens[form[1]]

    def formula(self, item: int | list) -> list[list[Row]]:
        """A boolean formula as DNF: a list of disjuncts, each a list of rows that must all hold."""
        if type(item) is int:
            token = self.tokens[item]
            if token in ("true", "false"):
                return [[]] if token == "true" else []
            raise self.source.error(item, f"expected a condition, found '{token}'",
                                    fix="write a comparison such as (<= Y_0 Y_1), or (and ...) / (or ...)")
        op = self.head(item)
        if op in COMPARISONS:
            return [self.comparison(item, op)]
        if op == "and":
            return self.conjoin([self.formula(child) for child in item[2:]], item[0])
        if op == "or":
            disjuncts = [d for child in item[2:] for d in self.formula(child)]
            self.check_size(len(disjuncts), item[0])
            return disjuncts
        raise self.source.error(item[1], f"unknown operator '{op}' in a condition",
                                fix="use and, or, <=, >=, <, > or =")

    def conjoin(self, parts: list[list[list[Row]]], at: int) -> list[list[Row]]:
        """AND of DNFs, distributed over their ORs."""
        self.check_size(math.prod(len(part) for part in parts), at)
        result: list[list[Row]] = [[]]
        for part in parts:
            if len(part) == 1:
                for disjunct in result:
                    disjunct.extend(part[0])
            else:
                result = [disjunct + choice for disjunct in result for choice in part]
        return result

    def check_size(self, size: int, at: int) -> None:
        if size > MAX_DISJUNCTS:
            raise self.source.error(at, f"expanding and/or into disjunctive normal form gives {size} "
                                    f"disjuncts, more than the limit of {MAX_DISJUNCTS}",
                                    fix="split the property into several files, or factor common conditions out")

    def comparison(self, form: list, op: str) -> list[Row]:
        """(op a b c ...) holds pairwise: a op b, b op c; `=` gives two rows per pair."""
        if len(form) == 4 and type(form[2]) is int and type(form[3]) is int:  # the common case: two atoms
            smaller, larger = (form[3], form[2]) if op == ">=" or op == ">" else (form[2], form[3])
            rows = [self.atom_row(smaller, larger, form[0])]
            if op == "=":
                rows.append(self.atom_row(larger, smaller, form[0]))
            return rows
        operands = [self.linear(item) for item in form[2:]]
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
            return Row("", {}, self.number(larger) - self.number(smaller))
        if b is None:
            return Row(a[0], {a[1]: 1.0}, self.number(larger))
        if a is None:
            return Row(b[0], {b[1]: -1.0}, -self.number(smaller))
        if a[0] != b[0]:
            raise self.mixed(at)
        return Row(a[0], {a[1]: 1.0, b[1]: -1.0} if a != b else {a[1]: 0.0}, 0.0)

    def row(self, smaller: tuple[dict, float], larger: tuple[dict, float], at: int) -> Row:
        """`smaller <= larger` for linear terms, as the row (smaller - larger) . v <= constant."""
        coefficients = dict(smaller[0])
        for name, value in larger[0].items():
            coefficients[name] = coefficients.get(name, 0.0) - value
        kinds = {self.variables[name][0] for name in coefficients}
        if len(kinds) > 1:
            raise self.mixed(at)
        indexed = {self.variables[name][1]: value for name, value in coefficients.items()}
        return Row(kinds.pop() if kinds else "", indexed, larger[1] - smaller[1])

    def mixed(self, at: int) -> SpecError:
        return self.source.error(at, "this comparison mixes inputs (X_i) and outputs (Y_j)",
                                 fix="state input conditions and output conditions in separate comparisons")

    def atom(self, index: int) -> tuple[dict[str, float], float]:
        """A variable or a number as a linear term."""
        token = self.tokens[index]
        if token in self.variables:
            return {token: 1.0}, 0.0
        return {}, self.number(index)

    def linear(self, item: int | list) -> tuple[dict[str, float], float]:
        """A term built from +, -, * and / by constants, as ({variable name: coefficient}, constant)."""
        if type(item) is int:
            return self.atom(item)
        op = self.head(item)
        terms = [self.linear(child) for child in item[2:]]
        if op == "+" and terms:
            return _add(terms)
        if op == "-" and len(terms) == 1:
            return _scale(terms[0], -1.0)
        if op == "-" and terms:
            return _add([terms[0]] + [_scale(term, -1.0) for term in terms[1:]])
        if op == "*" and terms:
            variable_terms = [term for term in terms if term[0]]
            if len(variable_terms) > 1:
                raise self.source.error(item[0], "product of two variables: VNN-LIB terms must be linear",
                                        fix="multiply variables by constants only")
            factor = math.prod(term[1] for term in terms if not term[0])
            return _scale(variable_terms[0], factor) if variable_terms else ({}, factor)
        if op == "/" and len(terms) == 2 and not terms[1][0] and terms[1][1] != 0:
            return _scale(terms[0], 1.0 / terms[1][1])
        raise self.source.error(item[1], f"unknown operator '{op}' (or wrong operands) in a term",
                                fix="use (+ a b ...), (- a b), (- a), (* constant variable) or (/ term constant)")

    def number(self, index: int) -> float:
        """An atom that is not a variable must be a finite number (integer, decimal or scientific)."""
        token = self.tokens[index]
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and "_" not in token:  # float() also takes 'inf', 'nan' and '1_000'
            return value
        if _NAME.fullmatch(token):
            raise self.source.error(index, f"unknown variable {token}: it is not declared",
                                    fix=f"add (declare-const {token} Real) before the asserts")
        raise self.source.error(index, f"'{token}' is neither a declared variable nor a number",
                                fix="write numbers as 3, -0.5 or 1.5e-05 and declare every variable")

    # ---- DNF -> regions -----------------------------------------------------------------------
    def regions(self, common: list[Row], disjuncts: list[list[Row]]) -> tuple[RegionSpec, ...]:
        """Group disjuncts with the same input box and input constraints into one RegionSpec each."""
        n_in = self.counts["X"]
        base = ([-math.inf] * n_in, [math.inf] * n_in, [], [])  # lower, upper, input rows, output rows
        groups: dict[tuple, tuple[list, list, list, list]] = {}
        if self.sort(common, *base):
            for rows in disjuncts:
                lower, upper, inputs, outputs = part = tuple(list(items) for items in base)
                if self.sort(rows, *part):
                    constraints = tuple((tuple(row.coefficients.items()), row.bound) for row in inputs)
                    group = groups.setdefault((tuple(lower), tuple(upper), constraints), (lower, upper, inputs, []))
                    group[3].append(outputs)  # this disjunct's clause
        if not groups:
            raise self.source.error(None, "the assertions can never hold together (the unsafe set is empty)",
                                    fix="check the constant comparisons and the or-branches of the asserts")
        return tuple(self.region(*group) for group in groups.values())

    def sort(self, rows: list[Row], lower: list, upper: list, inputs: list, outputs: list) -> bool:
        """Tighten the box by single-input rows, file other rows; False if a constant row is false."""
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
                if coefficient > 0 and value < upper[index]:
                    upper[index] = value
                elif coefficient < 0 and value > lower[index]:
                    lower[index] = value
        return True

    def region(self, lower: list, upper: list, inputs: list[Row], clauses: list[list[Row]]) -> RegionSpec:
        """One RegionSpec: the box must be bounded and non-empty in every input."""
        for index, (low, high) in enumerate(zip(lower, upper)):
            name = f"X_{index}"
            if not (math.isfinite(low) and math.isfinite(high)):
                raise self.source.error(self.declared_at[name], f"unbounded input {name}: it has no "
                                        f"{'lower' if not math.isfinite(low) else 'upper'} bound",
                                        fix=f"add (assert (>= {name} LOW)) and (assert (<= {name} HIGH))")
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


def _add(terms: list[tuple[dict, float]]) -> tuple[dict[str, float], float]:
    total: dict[str, float] = {}
    for coefficients, _ in terms:
        for name, value in coefficients.items():
            total[name] = total.get(name, 0.0) + value
    return total, sum(constant for _, constant in terms)


def _scale(term: tuple[dict, float], factor: float) -> tuple[dict[str, float], float]:
    return {name: value * factor for name, value in term[0].items()}, term[1] * factor


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
        return _read(_Source(text, path), n_inputs, n_outputs)
    finally:
        if collecting:
            gc.enable()


def _read(source: _Source, n_inputs: int | None, n_outputs: int | None) -> Property:
    reader = _Reader(source)
    forms = parse(source)
    asserts = []
    for form in forms:
        command = reader.head(form)
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
    path = Path(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise SpecError("no such file", path=str(path), fix="check the path of the spec") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read the file: {error}", path=str(path),
                        fix="give a VNN-LIB text file (optionally gzipped)") from None
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
