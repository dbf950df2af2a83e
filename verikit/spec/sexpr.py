"""Spec text: reading a spec file's text, and the s-expressions of VNN-LIB (tokens, forms, linear terms).

`read_text` gives a file's text (gunzipped for .gz) or a SpecError naming the byte it cannot decode.
`Source` splits the text into tokens (parentheses and atoms; `;` comments are dropped) and turns a token
index into 'line L, column C' on demand. `parse` nests the tokens into forms without recursion: a form is
a list `[open, item, ...]` whose first entry is the token index of its `(`, an item is a form or the token
index (an int) of an atom. `fold` evaluates a form bottom-up with an explicit stack, so no depth of
nesting can exhaust Python's stack; `linear` evaluates arithmetic terms with it. Time and memory are
linear in the size of the text, and nesting is at most MAX_DEPTH deep.
"""
from __future__ import annotations

import gzip
import math
import re
import zlib
from itertools import islice
from pathlib import Path
from typing import Any, Callable

from verikit.errors import SpecError

Term = tuple[dict[str, float], float]  # a linear term: ({variable name: coefficient}, constant)

MAX_DEPTH = 256  # real specs nest about 6 levels deep; deeper files are refused before they cost anything
_COMMENT = re.compile(r";[^\n]*")
_TOKEN = re.compile(r";[^\n]*|[()]|[^\s();]+")  # the same tokens as Source.tokens, with offsets
_SHOWN = 40  # characters of a token quoted in a message
_TERM_OPERATORS = frozenset(("+", "-", "*", "/"))
_TERM_FIX = "use (+ a b ...), (- a b), (- a), (* constant variable) or (/ term constant)"
FINITE_FIX = "scale the numbers down: coefficients and bounds must stay finite float64 numbers"


def shown(token: str) -> str:
    """A token as quoted in an error message: shortened, since a broken file can hold megabyte atoms."""
    return token if len(token) <= _SHOWN else token[:_SHOWN - 3] + "..."


def read_text(path: Path, fix: str) -> str:
    """The UTF-8 text of a spec file, gunzipped when its name ends in .gz; every failure is a SpecError."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as file:
                data = file.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file", path=str(path), fix="check the path of the spec") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise SpecError(f"the file is truncated or not gzip ({error})", path=str(path),
                        fix="compress the spec again with gzip, or give the plain text file") from None
    except OSError as error:
        raise SpecError(f"cannot read the file: {error}", path=str(path), fix=fix) from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not text
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise SpecError(f"byte 0x{data[error.start]:02x} at byte offset {error.start} is not UTF-8 text",
                        path=str(path), place=f"line {line}, column {column}",
                        fix="save the file as UTF-8 (plain ASCII is UTF-8)") from None


class Source:
    """The text being read and its tokens; turns a token index into 'line L, column C' on demand."""

    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        self.tokens = _COMMENT.sub("", text).replace("(", " ( ").replace(")", " ) ").split()

    def place(self, index: int) -> str:
        """Where token `index` starts; the scan stops there and keeps nothing, so an error costs no memory."""
        atoms = (match.start() for match in _TOKEN.finditer(self.text) if match.group()[0] != ";")
        offset = next(islice(atoms, index, None), len(self.text))
        line = self.text.count("\n", 0, offset) + 1
        column = offset - self.text.rfind("\n", 0, offset)
        return f"line {line}, column {column}"

    def head(self, form: list) -> str:
        """The operator (first atom) of a form."""
        if len(form) < 2 or type(form[1]) is not int:
            raise self.error(form[0], "expected an operator after '('", fix="write (op arg ...)")
        return self.tokens[form[1]]

    def error(self, index: int | None, message: str, fix: str | None = None) -> SpecError:
        place = self.place(index) if index is not None else None
        return SpecError(message, path=self.path, place=place, fix=fix)


def parse(source: Source) -> list[list]:
    """Nest the tokens into forms (see the module docstring); returns the top-level forms. Every form
    starts with an operator atom, except the empty argument list of `(declare-fun NAME () Real)`: other
    shapes are refused where they occur, before the rest of the file costs memory."""
    tokens = source.tokens
    top: list = [-1]
    stack: list[list] = []
    current = top
    for index, token in enumerate(tokens):
        if token == "(":
            if len(current) == 1 and stack:
                raise source.error(index, "expected an operator after '(', found another '('",
                                   fix="write (op arg ...)")
            if len(stack) == MAX_DEPTH:
                raise source.error(index, f"the parentheses nest more than {MAX_DEPTH} levels deep here",
                                   fix=f"flatten the formula: (and a b c ...) instead of nested ands; "
                                       f"at most {MAX_DEPTH} levels are read")
            form = [index]
            current.append(form)
            stack.append(current)
            current = form
        elif token == ")":
            if not stack:
                raise source.error(index, "unbalanced parentheses: this ')' closes nothing",
                                   fix="remove it, or add the '(' it should close")
            parent = stack.pop()
            if len(current) == 1 and (parent is top or tokens[parent[1]] != "declare-fun"):
                raise source.error(current[0], "empty parentheses '()'", fix="write (op arg ...), or remove them")
            current = parent
        elif stack:
            current.append(index)
        else:
            raise source.error(index, f"'{shown(token)}' stands outside any form",
                               fix="write commands as (declare-const ...) or (assert ...)")
    if stack:
        raise source.error(current[0], "unbalanced parentheses: the '(' opened here is never closed",
                           fix="add the missing ')'")
    return top[1:]


def fold(root: Any, children: Callable[[Any], list], combine: Callable[[Any, list], Any]) -> Any:
    """Evaluate a tree bottom-up with an explicit stack instead of recursion: `children(node)` lists the
    nodes whose values `combine(node, values)` needs ([] for a leaf); children are visited left to right."""
    values: list = []
    stack: list[tuple[Any, list | None]] = [(root, None)]
    while stack:
        node, kids = stack.pop()
        if kids is None:
            kids = children(node)
            if kids:
                stack.append((node, kids))
                stack.extend((child, None) for child in reversed(kids))
                continue
        start = len(values) - len(kids)
        value = combine(node, values[start:])
        del values[start:]
        values.append(value)
    return values[0]


# ---- linear terms -------------------------------------------------------------------------------
def linear(source: Source, item: int | list, atom: Callable[[int], Term]) -> Term:
    """A term built from +, -, * and / by constants over atoms (`atom(index)` reads a variable or a
    number), as ({variable name: coefficient}, constant). Every value along the way must be finite: an inf
    can vanish later ((/ 1 inf) is 0) and 0 * inf is nan."""

    def operands(node: int | list) -> list:
        if type(node) is int:
            return []
        op = source.head(node)
        if op not in _TERM_OPERATORS:
            raise source.error(node[1], f"unknown operator '{shown(op)}' in a term", fix=_TERM_FIX)
        return node[2:]

    def value(node: int | list, terms: list[Term]) -> Term:
        return atom(node) if type(node) is int else finite(source, _combine(source, node, terms), node[0], "term")

    return fold(item, operands, value)


def _combine(source: Source, form: list, terms: list[Term]) -> Term:
    """The value of (op term ...) given its operands' values."""
    op = source.tokens[form[1]]
    if op == "+" and terms:
        return _add(terms)
    if op == "-" and len(terms) == 1:
        return _scale(terms[0], -1.0)
    if op == "-" and terms:
        return _add([terms[0]] + [_scale(term, -1.0) for term in terms[1:]])
    if op == "*" and terms:
        variable_terms = [term for term in terms if term[0]]
        if len(variable_terms) > 1:
            raise source.error(form[0], "product of two variables: VNN-LIB terms must be linear",
                               fix="multiply variables by constants only")
        factor = math.prod(term[1] for term in terms if not term[0])
        return _scale(variable_terms[0], factor) if variable_terms else ({}, factor)
    if op == "/" and len(terms) == 2 and not terms[1][0] and terms[1][1] != 0:
        return _scale(terms[0], 1.0 / terms[1][1])
    raise source.error(form[1], f"wrong operands for '{op}' in a term", fix=_TERM_FIX)


def finite(source: Source, term: Term, at: int, what: str) -> Term:
    """`term` itself, once its constant and coefficients are checked to be finite numbers."""
    if not (math.isfinite(term[1]) and all(map(math.isfinite, term[0].values()))):
        raise overflow(source, at, what)
    return term


def overflow(source: Source, at: int, what: str) -> SpecError:
    return source.error(at, f"this {what} evaluates to inf or nan: its arithmetic overflows float64", fix=FINITE_FIX)


def _add(terms: list[Term]) -> Term:
    total: dict[str, float] = {}
    for coefficients, _ in terms:
        for name, value in coefficients.items():
            total[name] = total.get(name, 0.0) + value
    return total, sum(constant for _, constant in terms)


def _scale(term: Term, factor: float) -> Term:
    return {name: value * factor for name, value in term[0].items()}, term[1] * factor
