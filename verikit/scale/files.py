"""Models and specs sent to a cluster's workers as bytes, so that no worker needs the client's files.

Here, each distinct file (by content hash) is read and sent once, as a task that returns its bytes
(`keep`); workers fetch the bytes from each other as their tasks need them. On a worker, a model is
parsed once and kept (by content hash, the MODELS_KEPT most recently used), its file written under a
folder of the worker's own so that onnxruntime can re-check counterexamples against it; a spec is
parsed for each task. Errors name the client's path, not the worker's copy.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from verikit.errors import VerikitError

MODELS_KEPT = 8  # parsed models a worker keeps


@dataclass(frozen=True)
class Shipped:
    """A file as the cluster knows it: the client's path and the SHA-256 of its bytes."""

    path: str
    digest: str


def keep(client, value, key: str):
    """A Dask future of `value` that outlives any worker: a task returning it, whose spec the scheduler
    holds and runs again if every worker holding the value died (data scattered from here would be
    lost with them, and with it every task that needs it)."""
    with warnings.catch_warnings():  # the size warning advises scattering, which is what this avoids
        warnings.filterwarnings("ignore", message="Sending large graph")
        return client.submit(_itself, value, key=key, pure=True)


def _itself(value):
    return value


class FileStore:
    """The files sent to one client's cluster: each distinct content once."""

    def __init__(self, client):
        self.client = client
        self.files: dict[str, Shipped | None] = {}  # None: unreadable here (the worker's own loader says why)
        self.data: dict[str, object] = {}  # digest -> the Dask future of its bytes

    def ship(self, paths: Iterable[str]) -> None:
        """Read each path not sent yet and send each content the cluster does not hold yet."""
        for path in dict.fromkeys(paths):
            if path in self.files:
                continue
            try:
                data = Path(path).read_bytes()
            except OSError:
                self.files[path] = None
                continue
            digest = hashlib.sha256(data).hexdigest()
            self.files[path] = Shipped(path, digest)
            if digest not in self.data:
                self.data[digest] = keep(self.client, data, f"verikit-file-{digest}")

    def get(self, path: str) -> tuple[Shipped | None, object]:
        """The shipped file and the future of its bytes (None, None: the worker reads the path itself)."""
        shipped = self.files[path]
        return (shipped, self.data[shipped.digest]) if shipped is not None else (None, None)


_MODELS: OrderedDict[str, object] = OrderedDict()  # digest -> Graph, on a worker
_LOCK = threading.Lock()
_FOLDER: list[Path] = []  # the worker's folder of model files, made on first use


def cached_model(original: str, shipped: Shipped | None, data: bytes | None):
    """The model's Graph on a worker, parsed from `data` once per content (or read from the client's
    path `original` where the client could not read it: the loader then says why)."""
    from verikit.api import load_model
    from verikit.results import write_atomically

    if shipped is None:
        return load_model(original)
    with _LOCK:
        graph = _MODELS.get(shipped.digest)
        if graph is not None:
            _MODELS.move_to_end(shipped.digest)
            return graph
    path = _model_folder() / shipped.digest / Path(shipped.path).name
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        write_atomically(path, data)
    with reported_as(path, shipped.path):
        graph = load_model(path)
    with _LOCK:
        _MODELS[shipped.digest] = graph
        while len(_MODELS) > MODELS_KEPT:
            _MODELS.popitem(last=False)
    return graph


def spec_from_bytes(original: str, shipped: Shipped | None, data: bytes | None, graph):
    """The spec's Property for `graph`, parsed on a worker from a temporary copy of `data` (or from the
    client's path `original` where the client could not read it)."""
    from verikit.api import load_spec

    if shipped is None:
        return load_spec(original, graph)
    with tempfile.TemporaryDirectory(prefix="verikit-spec-") as folder:
        path = Path(folder) / Path(shipped.path).name
        path.write_bytes(data)
        with reported_as(path, shipped.path):
            return load_spec(path, graph)


@contextlib.contextmanager
def reported_as(copy: Path, original: str) -> Iterator[None]:
    """Errors raised inside name the client's `original` path instead of the worker's `copy`."""
    try:
        yield
    except VerikitError as error:
        if error.path != str(copy):
            raise
        raise type(error)(error.detail, path=original, place=error.place, fix=error.fix) from None


def _model_folder() -> Path:
    """This worker's folder of model files: inside its Dask scratch directory, which Dask removes with
    the worker (and purges if the worker was killed); elsewhere a temporary folder removed at exit."""
    with _LOCK:
        if not _FOLDER:
            try:
                from distributed import get_worker

                _FOLDER.append(Path(get_worker().local_directory) / "verikit-models")
                _FOLDER[0].mkdir(exist_ok=True)
            except (ImportError, ValueError):
                _FOLDER.append(Path(tempfile.mkdtemp(prefix="verikit-models-")))
                atexit.register(shutil.rmtree, _FOLDER[0], ignore_errors=True)
        return _FOLDER[0]
