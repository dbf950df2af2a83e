"""VNN-COMP result files: the verdict on the first line, and for `sat` the counterexample block
`((X_0 v) ... (Y_0 v) ...)`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from verikit.methods.base import Verdict

STATUSES = ("sat", "unsat", "unknown", "timeout", "error")


def format_result(verdict: Verdict) -> str:
    lines = [verdict.status]
    if verdict.status == "sat" and verdict.counterexample is not None:
        x, y = verdict.counterexample
        entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(x.reshape(-1))]
        entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(y.reshape(-1))]
        lines.append("(" + "\n ".join(entries) + ")")
    return "\n".join(lines) + "\n"


def write_result(path: str | Path, verdict: Verdict) -> None:
    """Write atomically, so a crash never leaves half a result file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as file:
        file.write(format_result(verdict))
    os.replace(temporary, path)


def read_result(path: str | Path) -> str:
    """The status word of a result file ('unknown' when the file is empty or unreadable)."""
    try:
        first = Path(path).read_text().split(maxsplit=1)
    except OSError:
        return "unknown"
    word = first[0].lower() if first else "unknown"
    return {"violated": "sat", "holds": "unsat"}.get(word, word if word in STATUSES else "unknown")
