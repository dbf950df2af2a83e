"""The method contract: bound, attack and complete methods, each with an options dataclass."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.region import Region
from verikit.verdict import Verdict  # noqa: F401  (methods return it; it lives in the core)


@dataclass
class NoOptions:
    """This method takes no options."""


class Method:
    """Base of every method plugin. Subclasses set `name`, `kind`, `summary` and `Options`, and
    implement the member for their kind."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "bound"  # "bound" | "attack" | "complete"
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    needs: ClassVar[tuple[str, ...]] = ("forward", "interval")  # layer-rule members it calls

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options=None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Bounds of `coefficients @ output` ([B, K] from coefficients [B or 1, K, n_out]) over the
        region, computed on the region's device; fills `intermediate` (value name -> Interval) when
        given. An iterative method starts no step after `deadline` (time.monotonic()) and returns the
        sound bounds it has; a single pass may ignore it (the engines check verikit.deadline)."""
        raise NotImplementedError

    def attack(self, graph: Graph, prop, options=None, deadline: float | None = None, seed: int = 0):
        """A flat (input, output) pair violating the property, or None; `seed` fixes its random starts."""
        raise NotImplementedError

    def decide(self, graph: Graph, prop, options=None, deadline: float | None = None, device: str | None = None,
               workers: int | None = None) -> Verdict:
        """A complete answer for the property, or unknown/timeout at `deadline`; bounds are computed on
        `device` and up to `workers` processes may share the work (None: the method's own default)."""
        raise NotImplementedError

    def escalated(self, options):
        """The options of a longer, stronger run of this attack (verify's second attack round, once cheap
        bounds left clauses open); the default is the same options."""
        return options

    def applies(self, graph: Graph) -> bool:
        """Whether the method can bound this graph at all (the pipeline skips it where not); most can."""
        return True

    def default_options(self):
        return self.Options()

    def __repr__(self) -> str:
        return f"<method {self.name} ({self.kind})>"
