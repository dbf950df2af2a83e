"""What a method needs of the layer rules, checked against a graph before any work.

A method lists the rule members it calls (`Method.needs`, from verikit.layers.base.MEMBERS); a graph
whose rules lack one would fail deep inside the method, so `verify` and `bound` ask here first and
report one error naming the node, its op, the missing member, the plugin the rule came from, and the
methods of the same kind that would work.
"""
from __future__ import annotations

from verikit.errors import PluginError
from verikit.graph import Graph, Node
from verikit.methods.base import Method
from verikit.plugins import registry


def missing_members(rule: type, method: Method) -> list[str]:
    """The members `method` needs that the layer rule class does not offer."""
    return [member for member in method.needs if not rule.offers(member)]


def missing(graph: Graph, method: Method) -> list[tuple[Node, str]]:
    """(node, member) for every member `method` needs that the node's rule does not offer."""
    return [(node, member) for node in graph.nodes for member in missing_members(type(node.rule), method)]


def matrix() -> dict[str, dict[str, list[str]]]:
    """For every registered op, for every bound and complete method: the members its rule lacks for
    that method (empty: the method can use it)."""
    methods = [e.provider for kind in ("bound", "complete") for e in registry().methods(kind)]
    return {op: {m.name: missing_members(entry.provider, m) for m in methods}
            for op, entry in sorted(registry().entries["layer"].items())}


def usable(graph: Graph, kind: str) -> list[str]:
    """Names of the registered methods of `kind` whose needs the graph's rules meet."""
    return sorted(e.name for e in registry().methods(kind) if not missing(graph, e.provider))


def check(graph: Graph, method: Method) -> None:
    """Raise one PluginError if the graph's rules lack a member `method` needs."""
    gaps = missing(graph, method)
    if not gaps:
        return
    node, member = gaps[0]
    others = f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else ""
    working = ", ".join(usable(graph, method.kind)) or "none"
    raise PluginError(f"method {method.name} needs `{member}` of op {node.op_type} (node '{node.name}', plugin "
                      f"{node.plugin or type(node.rule).__module__}){others}",
                      path=graph.source or None,
                      fix=f"{method.kind} methods that work on this model: {working}; or add `{member}` to the "
                          "layer plugin")
