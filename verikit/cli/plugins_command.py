"""`verikit plugins`: every registered layer, method, trainer and spec reader, and where it came from."""
from __future__ import annotations

import json

import click

from verikit.cli.common import handles_errors


@click.command(short_help="List the registered layers, methods, trainers and spec readers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--capabilities", is_flag=True,
              help="Instead, a table of ops (rows) by bound and complete methods (columns): which methods "
                   "can use each layer rule, and the rule member a method misses.")
@handles_errors
def plugins(as_json, capabilities) -> None:
    """List every registered layer, method, trainer and spec-reader plugin, and where it came from.

    \b
    Example:
      verikit plugins
      verikit plugins --capabilities       # which methods each op's rule serves
      VERIKIT_PLUGINS= verikit plugins     # built-ins only
    """
    from verikit.plugins import registry

    if capabilities:
        return _capabilities(as_json)

    rows: dict[tuple[str, str, str], list[str]] = {}
    for entry in registry().all():
        rows.setdefault((entry.plugin, entry.kind, entry.distribution), []).append(entry.name)
    if as_json:
        click.echo(json.dumps([{"plugin": p, "kind": k, "distribution": d, "provides": sorted(n)}
                               for (p, k, d), n in sorted(rows.items())], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "kind", "provides", "distribution", title="verikit plugins")
    for (plugin, kind, distribution), names in sorted(rows.items(), key=lambda r: (r[0][1], r[0][0])):
        table.add_row(plugin, kind, ", ".join(sorted(names)), distribution)
    Console(width=max(100, Console().width)).print(table)


def _capabilities(as_json: bool) -> None:
    """Print the op x method table of verikit.capabilities.matrix."""
    from rich.console import Console
    from rich.table import Table

    from verikit.capabilities import matrix

    table = matrix()
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    methods = list(next(iter(table.values()), {}))
    shown = Table("op", *methods, title="methods each layer rule serves (a member name: what it misses)")
    for op, row in table.items():
        shown.add_row(op, *("yes" if not row[m] else ", ".join(row[m]) for m in methods))
    Console(width=max(160, Console().width)).print(shown)
