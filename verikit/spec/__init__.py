"""Specifications: the Property form, and readers for VNN-LIB and YAML.

`load_spec(path)` picks the reader by the file's suffix: .vnnlib (or .vnnlib.gz) and .yaml / .yml are
built in; plugins may register readers for other suffixes through the `verikit_spec_readers` hook.
"""
from __future__ import annotations

from pathlib import Path

from verikit.errors import SpecError
from verikit.spec.property import InputConstraints, OutputClause, Property, RegionSpec, robustness_property
from verikit.spec.vnnlib import read_vnnlib, write_vnnlib

__all__ = ["InputConstraints", "OutputClause", "Property", "RegionSpec", "load_spec", "read_vnnlib",
           "read_yaml_spec", "robustness_property", "write_vnnlib"]


def load_spec(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Read a spec file into a Property. `n_inputs` / `n_outputs` (from the model), when given, must
    match the spec's own sizes (a YAML robustness spec takes its number of outputs from them)."""
    name = str(path).lower()
    if name.endswith((".vnnlib", ".vnnlib.gz")):
        return read_vnnlib(path, n_inputs, n_outputs)
    if name.endswith((".yaml", ".yml")):
        return read_yaml_spec(path, n_inputs, n_outputs)
    from verikit.plugins import registry  # only plugin formats need the plugins loaded

    readers = registry().entries["spec-reader"]
    for suffix, entry in readers.items():
        if name.endswith(suffix.lower()):
            return _check_sizes(entry.provider(path), path, n_inputs, n_outputs)
    known = ", ".join([".vnnlib", ".vnnlib.gz", ".yaml", ".yml", *readers])
    raise SpecError("unknown spec format", path=str(path), fix=f"give a file ending in one of: {known}")


def read_yaml_spec(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """The YAML reader (verikit.spec.yaml_spec), imported on first use: PyYAML costs start-up."""
    from verikit.spec.yaml_spec import read_yaml_spec as read

    return read(path, n_inputs, n_outputs)


def _check_sizes(prop: Property, path: str | Path, n_inputs: int | None, n_outputs: int | None) -> Property:
    for word, found, expected in (("inputs", prop.n_inputs, n_inputs), ("outputs", prop.n_outputs, n_outputs)):
        if expected is not None and found != expected:
            raise SpecError(f"the spec has {found} {word} but the model has {expected}", path=str(path),
                            fix="pair the spec with the model it was written for")
    return prop
