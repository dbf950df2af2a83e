"""Spec reader fuzz, short fixed-seed part (the long run, in a memory-limited subprocess with a time limit
per input: benchmarks/spec_fuzz.py): mutants of valid VNN-LIB and YAML specs must each end in a valid
Property or a VerikitError, quickly. The mutator is seeded and needs nothing beyond the standard library."""
from __future__ import annotations

import gzip
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from verikit.errors import VerikitError
from verikit.spec import load_spec
from verikit.spec.property import Property
from verikit.spec.vnnlib import MAX_INPUT_BOUND

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
_NUMBER = re.compile(rb"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INDEX = re.compile(rb"(?<=[XY]_)\d+")
ODD_NUMBERS = (b"1e400", b"-1e400", b"1e-400", b"nan", b"inf", b"-inf", b".nan", b".inf", b"1e308", b"-1e308",
               b"1e31", b"1e200", b"4.9e-324", b"-0", b"0", b"1" * 400, b"1e999999", b"0x10", b"1_000")
ODD_INDICES = (b"0", b"1", b"2", b"7", b"1000000000", b"10000000000000000000000", b"9" * 5000, b"00")


@dataclass(frozen=True)
class Seed:
    """A valid spec file: its name, content and the model sizes it was written for."""

    name: str
    data: bytes
    n_inputs: int
    n_outputs: int


def seeds() -> list[Seed]:
    """The project's YAML examples and VNN-LIB specs of the acasxu and test suites (when present)."""
    paths = sorted((ROOT / "specs").glob("*.yaml"))
    paths += sorted(BENCHMARKS.glob("acasxu/prop_*.vnnlib")) + sorted(BENCHMARKS.glob("test/*.vnnlib"))
    result = []
    for path in paths:
        prop = load_spec(path)
        result.append(Seed(path.name, path.read_bytes(), prop.n_inputs, prop.n_outputs))
    return result


# ---- the mutator ---------------------------------------------------------------------------------
def _span(rng: random.Random, data: bytes) -> tuple[int, int]:
    start = rng.randrange(len(data) + 1)
    return start, min(len(data), start + rng.randint(1, 64))


def flip(rng: random.Random, data: bytes) -> bytes:
    """Flip one to three random bits."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def delete(rng: random.Random, data: bytes) -> bytes:
    start, end = _span(rng, data)
    return data[:start] + data[end:]


def duplicate(rng: random.Random, data: bytes) -> bytes:
    """Copy a span (a line, a key, a parenthesised form ...) somewhere else, up to 50 times."""
    start, end = _span(rng, data)
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[start:end] * rng.choice((1, 1, 2, 50)) + data[at:]


def parentheses(rng: random.Random, data: bytes) -> bytes:
    """Insert a few parentheses or brackets, or a deep run of them."""
    out = data
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        piece = rng.choice((b"(", b")", b"[", b"]", b"{", b"}", b"()", b"(and ", b"(" * 300, b"[" * 300))
        out = out[:at] + piece + out[at:]
    return out


def number(rng: random.Random, data: bytes) -> bytes:
    """Replace a number with a huge, tiny, non-finite or malformed one."""
    return _replace(rng, data, _NUMBER, ODD_NUMBERS)


def index(rng: random.Random, data: bytes) -> bytes:
    """Change the index of an X_i or Y_j."""
    return _replace(rng, data, _INDEX, ODD_INDICES)


def _replace(rng: random.Random, data: bytes, pattern: re.Pattern, choices: tuple[bytes, ...]) -> bytes:
    matches = list(pattern.finditer(data))
    if not matches:
        return flip(rng, data)
    match = rng.choice(matches)
    return data[:match.start()] + rng.choice(choices) + data[match.end():]


MUTATIONS = {"flip": flip, "delete": delete, "duplicate": duplicate, "parentheses": parentheses,
             "number": number, "index": index}


@dataclass(frozen=True)
class Mutant:
    """A mutated spec: the file name to write it under, its bytes, and how it was made."""

    name: str
    data: bytes
    how: str
    sizes: dict


def mutants(count: int, seed: int, corpus: list[Seed]) -> list[Mutant]:
    """`count` mutants, each one to three mutations of a random seed; some gzipped and cut (VNN-LIB), and
    half read with the seed's model sizes."""
    rng = random.Random(seed)
    result = []
    for number_ in range(count):
        base = rng.choice(corpus)
        data, hows = base.data, []
        for _ in range(rng.randint(1, 3)):
            how = rng.choice(sorted(MUTATIONS))
            data, hows = MUTATIONS[how](rng, data), hows + [how]
        name = f"m{number_}_{base.name}"
        if name.endswith(".vnnlib") and rng.random() < 0.05:
            packed = gzip.compress(data)
            data, name, hows = packed[:rng.randrange(len(packed) + 1)], name + ".gz", hows + ["gzip-cut"]
        sizes = {"n_inputs": base.n_inputs, "n_outputs": base.n_outputs} if rng.random() < 0.5 else {}
        result.append(Mutant(name, data, "+".join(hows), sizes))
    return result


# ---- running one --------------------------------------------------------------------------------
def invalid(prop: Property) -> str | None:
    """What is wrong with an accepted Property, or None: finite numbers, sane inputs, consistent shapes."""
    for spec in prop.regions:
        box = spec.region.bounding_box()
        lower, upper = box.lower, box.upper
        if lower.shape != (1, prop.n_inputs) or not (lower <= upper).all():
            return f"region box {lower.tolist()} .. {upper.tolist()}"
        if not (lower.isfinite().all() and upper.isfinite().all()) or max(
                lower.abs().max().item(), upper.abs().max().item()) > 2 * MAX_INPUT_BOUND:
            return "region box not finite or beyond the input limit"
        rows = [(clause.coefficients, clause.rhs, prop.n_outputs) for clause in spec.clauses]
        if spec.input_constraints is not None:
            rows.append((spec.input_constraints.coefficients, spec.input_constraints.rhs, prop.n_inputs))
        for coefficients, rhs, width in rows:
            if coefficients.shape != (len(rhs), width):
                return f"rows shaped {tuple(coefficients.shape)} for {width} variables"
            if not (coefficients.isfinite().all() and rhs.isfinite().all()):
                return "a row holds inf or nan"
    return None


def outcome(path: Path, sizes: dict) -> str:
    """'accepted', 'error' (a VerikitError), or 'invalid: ...' / 'exception: ...' (failures)."""
    try:
        prop = load_spec(path, **sizes)
    except VerikitError:
        return "error"
    except Exception as error:  # noqa: BLE001 - anything else is what the fuzz looks for
        return f"exception: {type(error).__name__}: {str(error)[:200]}"
    problem = invalid(prop)
    return "accepted" if problem is None else f"invalid: {problem}"


@dataclass
class Report:
    """Counts of outcomes (accepted, error, exception, and in the benchmark hang and crash), the failures
    (every outcome but accepted and error), and the slowest input."""

    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")

    def add(self, mutant: Mutant, result: str, seconds: float) -> None:
        self.counts["tried"] += 1
        self.counts[result if result in ("accepted", "error", "hang", "crash") else "exception"] += 1
        if result not in ("accepted", "error"):
            self.failures.append(f"{mutant.name} ({mutant.how}): {result}")
        self.slowest = max(self.slowest, (seconds, mutant.name))


def run(batch: list[Mutant], folder: Path, report: Report) -> Report:
    """Write each mutant to `folder` and read it back, timing each."""
    for mutant in batch:
        path = folder / mutant.name
        path.write_bytes(mutant.data)
        start = time.perf_counter()
        result = outcome(path, mutant.sizes)
        report.add(mutant, result, time.perf_counter() - start)
        path.unlink()
    return report


# ---- the CI part ---------------------------------------------------------------------------------
def test_mutants_end_in_a_property_or_a_clear_error(tmp_path):
    corpus = seeds()
    assert len(corpus) >= 2
    batch = mutants(400, seed=2024, corpus=corpus)
    start = time.perf_counter()
    report = run(batch, tmp_path, Report())
    seconds = time.perf_counter() - start
    assert not report.failures, "\n".join(report.failures)
    assert report.counts["error"] >= 100 and report.counts["accepted"] >= 20  # both paths are exercised
    assert seconds < 10 and report.slowest[0] < 2.0, (seconds, report.slowest)


def test_the_mutator_is_seeded_and_makes_each_kind():
    corpus = seeds()
    first, again = mutants(60, 7, corpus), mutants(60, 7, corpus)
    assert first == again and first != mutants(60, 8, corpus)
    made = {how for mutant in mutants(300, 1, corpus) for how in mutant.how.split("+")}
    assert made == set(MUTATIONS) | {"gzip-cut"}
    assert math.isclose(sum(bool(m.sizes) for m in first) / len(first), 0.5, abs_tol=0.2)
