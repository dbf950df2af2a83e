"""VNN-COMP result files: the verdict on the first line, and for `sat` the counterexample block
`((X_0 v) ... (Y_0 v) ...)`; and the checks and atomic writes every output file of the CLI goes through."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from verikit.errors import VerikitError
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
    """Write atomically, so a crash never leaves half a result file (an existing one is replaced, as
    VNN-COMP's tool interface expects). Creates a missing parent directory: the command line refuses
    one first (check_output_path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, format_result(verdict))


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: readers see the old
    file or the whole new one. The file gets the permissions an ordinary new file would (0666 less the
    umask), not mkstemp's 0600."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_path(path: str | Path, inputs: Iterable[str | Path], option: str) -> Path:
    """Refuse, before any work, an output file that would replace one of `inputs` (compared as files,
    so through symbolic and hard links too), that is a directory, or whose directory does not exist.
    An existing file of another name is fine: it will be replaced."""
    path = Path(path)
    if path.is_dir():
        raise VerikitError("is a directory, not a file", path=str(path), place=option,
                           fix=f"give {option} a file name")
    directory = path.parent
    if not directory.is_dir():
        raise VerikitError(f"the directory {directory} does not exist", path=str(path), place=option,
                           fix=f"create {directory} first, or give {option} a file in an existing directory")
    for source in inputs:
        if same_file(path, source):
            raise VerikitError(f"would overwrite the input file {source}", path=str(path),
                               place=option, fix=f"give {option} a new file name")
    return path


def same_file(first: str | Path, second: str | Path) -> bool:
    """Whether two paths name the same file: the same inode where both exist (symbolic or hard links),
    else the same resolved path."""
    first, second = Path(first), Path(second)
    try:
        if first.exists() and second.exists():
            return os.path.samefile(first, second)
        return first.resolve() == second.resolve()
    except OSError:
        return False


def read_result(path: str | Path) -> str:
    """The status word of a result file ('unknown' when the file is empty or unreadable)."""
    try:
        first = Path(path).read_text().split(maxsplit=1)
    except (OSError, UnicodeDecodeError):
        return "unknown"
    word = first[0].lower() if first else "unknown"
    return {"violated": "sat", "holds": "unsat"}.get(word, word if word in STATUSES else "unknown")
