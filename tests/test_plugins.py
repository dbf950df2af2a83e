"""The plugin registry: built-ins arrive through entry points, conflicts name both distributions, a
broken third-party plugin is skipped with a warning (a broken built-in is an error), and a separately
installed package (plugins/verikit-example) adds an op that verify then handles."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from netgen import NetBuilder
from verikit.errors import PluginError
from verikit.hookspecs import hookimpl
from verikit.layers.relu import Relu
from verikit.plugins import PluginManager, registry

BUILTIN_OPS = {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
               "Atan", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Flatten",
               "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Concat", "Slice", "Pad"}


def _example_installed() -> bool:
    try:
        importlib.metadata.distribution("verikit-example")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _cli(*args, env_plugins: str | None = None):
    env = dict(os.environ)
    if env_plugins is not None:
        env["VERIKIT_PLUGINS"] = env_plugins
    return subprocess.run([sys.executable, "-m", "verikit.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)


def test_builtins_register_through_entry_points():
    layers = {e.name: e for e in registry().all() if e.kind == "layer"}
    assert BUILTIN_OPS <= set(layers)
    assert all(layers[op].distribution == "verikit" for op in BUILTIN_OPS)
    methods = {e.name for e in registry().all() if e.kind == "method"}
    assert {"ibp", "pgd"} <= methods


def _plugin(rule):
    @hookimpl
    def verikit_layers(register):
        register(rule)

    return SimpleNamespace(verikit_layers=verikit_layers)


def test_conflicting_plugins_name_both_distributions():
    manager = PluginManager()
    manager.register(_plugin(Relu), "first", "dist-one")
    manager.register(_plugin(Relu), "second", "dist-two")
    with pytest.raises(PluginError) as caught:
        manager.registry
    assert "dist-one" in str(caught.value) and "dist-two" in str(caught.value) and "Relu" in str(caught.value)


def test_declared_override_wins():
    class LoudRelu(Relu):
        pass

    @hookimpl
    def verikit_layers(register):
        register(LoudRelu, override=True)

    manager = PluginManager()
    manager.register(_plugin(Relu), "builtin", "verikit")
    manager.register(SimpleNamespace(verikit_layers=verikit_layers), "replacement", "dist-two")
    assert manager.registry.layer("Relu").provider is LoudRelu


def test_plugins_command_lists_kinds_ops_and_distributions():
    result = _cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    conv = next(r for r in rows if "Conv" in r["provides"])
    assert conv["kind"] == "layer" and conv["distribution"] == "verikit"
    assert any(r["kind"] == "method" and "ibp" in r["provides"] for r in rows)


def _softsign_model(tmp_path):
    net = NetBuilder((1, 3), seed=4)
    net.gemm(4)
    net.op("Softsign")
    net.gemm(2)
    return net.save(tmp_path / "softsign.onnx")


def _spec(tmp_path, graph_path, threshold: float):
    """Unsafe iff Y_0 >= threshold over the box [-1, 1]^3."""
    lines = [f"(declare-const X_{i} Real)" for i in range(3)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))" for i in range(3)]
    lines += [f"(assert (>= Y_0 {threshold}))"]
    path = tmp_path / "softsign.vnnlib"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.skipif(not _example_installed(), reason="pip install ./plugins/verikit-example (CI does)")
def test_example_plugin_adds_softsign(tmp_path):
    model = _softsign_model(tmp_path)
    listed = _cli("plugins", "--json")
    softsign = next(r for r in json.loads(listed.stdout) if "Softsign" in r["provides"])
    assert softsign["distribution"] == "verikit-example"
    result = _cli("verify", model, _spec(tmp_path, model, 100.0), "--timeout", 20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "unsat"  # |Y_0| is far below 100 for any input
    # without the plugin (third-party plugins restricted away) the same model fails clearly
    without = _cli("verify", model, _spec(tmp_path, model, 100.0), env_plugins="")
    assert without.returncode == 2 and "Traceback" not in without.stderr
    assert "Softsign" in without.stderr and "softsign_" in without.stderr and "plugin" in without.stderr


def _broken_entry_point(name: str, distribution: str):
    def load():
        raise ImportError("No module named 'gone'")

    return SimpleNamespace(name=name, dist=SimpleNamespace(name=distribution), load=load)


def test_a_broken_third_party_plugin_is_skipped_with_a_warning(monkeypatch):
    real = importlib.metadata.entry_points(group="verikit")
    fake = lambda group: list(real) + [_broken_entry_point("broken", "broken-dist")]  # noqa: E731
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    manager = PluginManager()
    with pytest.warns(RuntimeWarning, match="broken-dist"):
        manager.load_entry_points()
    assert "broken" in manager.failures and "No module named 'gone'" in manager.failures["broken"]
    assert BUILTIN_OPS <= {e.name for e in manager.registry.all() if e.kind == "layer"}


def test_a_broken_builtin_is_an_error(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [_broken_entry_point("relu", "verikit")])
    with pytest.raises(PluginError, match="reinstall verikit"):
        PluginManager().load_entry_points()
