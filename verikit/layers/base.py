"""Base classes for layer rules: the contract every layer plugin implements (see DESIGN.md section 2).

Shapes: values are [N, *onnx_shape]; linear coefficients are [B, K, *onnx_shape] (B problems, K rows).
`backward` always builds an *upper* linear bound: for coefficients A on the output y it returns A_i on
each computed input x_i and a bias so that  A . y <= sum_i A_i . x_i + bias  for every admissible input.
A lower bound is minus the upper bound of -A, so engines stack [A; -A] and get both in one pass.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from verikit.bounds import Interval, Relaxation
from verikit.errors import ModelError
from verikit.graph import NodeInfo

RELAXATION_MODES = ("same-slope", "adaptive", "zero", "optimizable")
OPTIONAL_MEMBERS = ("reslope", "initial_parameters", "backward_patches", "encode_lp")
MEMBERS = ("forward", "interval", "backward", "relax") + OPTIONAL_MEMBERS + ("exact_encoding",)  # a method's needs


class LayerRule:
    """One built ONNX node: its weights and attributes, and every rule to evaluate and bound it.

    Methods ask a rule what it can do, never its op name: the facts below (`linear`, `kinks`) and the
    optional members a rule `offers` (see OPTIONAL_MEMBERS). A third party's rule that states them gets
    the methods that use them without a change to verikit."""

    op_types: ClassVar[tuple[str, ...]] = ()
    linear: ClassVar[bool] = False
    # A piecewise-linear elementwise op's kinks: the inputs where its slope changes (Relu: (0.0,), a Clip
    # to [a, b]: (a, b)). A neuron whose interval holds no kink inside is exact under its relaxation;
    # `bab` splits a neuron at a kink (ReLU splitting), `milp` encodes the pieces exactly, and
    # `alpha-crown` optimises the free line through a kink (`reslope`). Empty for smooth ops.
    kinks: tuple[float, ...] = ()
    # Whether `encode_lp` with `model.exact` encodes the op exactly (binaries for its pieces), as `milp`
    # needs; an S-shaped op's lines are only a relaxation.
    exact_encoding: ClassVar[bool] = True

    def __init__(self, node: NodeInfo):
        """Record the node's name and the ONNX shapes of its computed inputs and of its output."""
        self.name = node.name
        self.input_shapes = tuple(tuple(node.input_shapes[node.inputs.index(n)]) for n in node.computed_inputs)
        self.output_shape = tuple(node.output_shape)

    @classmethod
    def build(cls, node: NodeInfo) -> "LayerRule":
        """Read attributes and weights once; raise ModelError naming the node for what is unsupported."""
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Concrete semantics, batched over the leading sample dimension."""
        raise NotImplementedError

    def interval(self, *inputs: Interval) -> Interval:
        """Interval image of the input boxes (IBP)."""
        raise NotImplementedError

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Upper linear bound of `coefficients . output` in terms of the computed inputs (see module doc)."""
        raise NotImplementedError

    def relax(self, bound: Interval, mode: str = "adaptive",
              lower_slope: torch.Tensor | None = None) -> Relaxation:
        """Lines valid on the input interval `bound` (nonlinear rules only); mode in RELAXATION_MODES."""
        raise NotImplementedError

    # ---- optional members: a rule offers one by overriding it (`offers`); methods check before use

    def reslope(self, base: Relaxation, bound: Interval, parameters: torch.Tensor) -> Relaxation:
        """Optional (alpha-crown, bab): relax(bound, "optimizable", parameters) computed from `base`, any
        mode's relaxation on `bound`, without recomputing what the parameters do not change."""
        raise NotImplementedError

    def initial_parameters(self, bound: Interval) -> torch.Tensor:
        """Optional (alpha-crown, bab): the parameters of mode "optimizable" (in [0, 1]; one per neuron,
        or as the rule shapes them) where the ascent starts: a piecewise-linear rule's lines there equal
        mode "adaptive"'s."""
        raise NotImplementedError

    def backward_patches(self, patches, relaxation: Relaxation | None = None):
        """Optional (cnn-cert): `backward` on CNN-Cert patch coefficients, or None to fall back to
        dense coefficients for this input."""
        raise NotImplementedError

    def encode_lp(self, model, inputs: list, bounds: list[Interval]):
        """Optional (dual-lp, lp-full, milp, bab's leaf LPs): add the node's rows to an LP model
        (verikit.lp.encode.LPModel; exact with binaries when `model.exact`) and return its output's
        variable indices."""
        raise NotImplementedError

    @classmethod
    def offers(cls, member: str) -> bool:
        """Whether the rule implements `member` (one of MEMBERS: a required one may be missing from a
        plugin's rule too; `relax` is needed by nonlinear rules only, so a linear rule offers it)."""
        if member not in MEMBERS:
            raise ValueError(f"{member!r} is not a layer-rule member: {', '.join(MEMBERS)}")
        if member == "relax" and cls.linear:
            return True
        if member == "exact_encoding":
            return cls.exact_encoding and cls.offers("encode_lp")
        return getattr(cls, member) is not getattr(LayerRule, member)

    def unstable(self, bound: Interval) -> torch.Tensor:
        """Neurons whose relaxation on `bound` may be loose: a kink strictly inside the interval for a
        piecewise-linear op, any width for a smooth one; False everywhere for a linear op."""
        if self.linear:
            return torch.zeros_like(bound.lower, dtype=torch.bool)
        if not self.kinks:
            return bound.upper - bound.lower > 1e-9
        inside = torch.zeros_like(bound.lower, dtype=torch.bool)
        for kink in self.kinks:
            inside |= (bound.lower < kink) & (bound.upper > kink)
        return inside

    def to(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> "LayerRule":
        """A copy with every tensor attribute converted; rules keep their tensors as plain attributes."""
        clone = object.__new__(type(self))
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):  # index tensors move too, keeping their dtype
                value = value.to(dtype=dtype, device=device) if value.is_floating_point() else value.to(device)
            setattr(clone, key, value)
        return clone

    @staticmethod
    def reject(node: NodeInfo, what: str, fix: str = "") -> ModelError:
        """A clear error about an unsupported attribute or input of `node`."""
        return ModelError(f"{node.op_type} node '{node.name}': {what}", fix=fix or None)


def flatten_rows(coefficients: torch.Tensor, value_rank: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """[B, K, *shape] -> [B*K, *shape], returning the leading (B, K) to restore later."""
    lead = tuple(coefficients.shape[: coefficients.dim() - value_rank])
    return coefficients.reshape(-1, *coefficients.shape[len(lead):]), lead


class LinearRule(LayerRule):
    """An affine op y = L(x_1, ..., x_m) + offset. Subclasses give `forward` and, when L has weights
    of either sign, `absolute` (the map with |weights|, used for interval radii)."""

    linear = True
    # False when every output is one input times a constant plus a constant (reshapes, copies, padding,
    # elementwise scaling): interval propagation is then exact through the op, and through a chain of
    # such ops with one mixing op, which lets engines skip back-substitution there.
    mixes: ClassVar[bool] = True

    def absolute(self, *radii: torch.Tensor) -> torch.Tensor:
        """|L| applied to non-negative radii; the default suits permutations, copies and sums."""
        return self.linear_part(*radii)

    def linear_part(self, *inputs: torch.Tensor) -> torch.Tensor:
        """L(x) without the offset."""
        return self.forward(*inputs) - self.offset(*inputs)

    def offset(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The constant term: the output at all-zero inputs."""
        return self.forward(*(torch.zeros_like(x[:1]) for x in inputs))

    def interval(self, *inputs: Interval) -> Interval:
        center = self.forward(*(b.center for b in inputs))
        radius = self.absolute(*(b.radius for b in inputs))
        return Interval(center - radius, center + radius)

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Exact: A . (L x + o) = (L^T A) . x + A . o, with L^T from autograd (a vector-Jacobian product)."""
        return transpose_by_autograd(self, coefficients)


def transpose_by_autograd(rule: LinearRule, coefficients: torch.Tensor,
                          ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Push coefficients through an affine rule using the vector-Jacobian product of its linear part."""
    input_shapes = rule.input_shapes
    rank = len(rule.output_shape)
    flat, lead = flatten_rows(coefficients, rank)
    inputs = [torch.zeros(flat.shape[0], *shape, dtype=flat.dtype, device=flat.device, requires_grad=True)
              for shape in input_shapes]
    with torch.enable_grad():
        output = rule.forward(*inputs)
        offset = output.detach()
        # create_graph keeps the result differentiable in the coefficients (alpha-CROWN needs that)
        # the gradient of the scalar <output, A> (not grad_outputs=A, whose path imports sympy: slow start-up)
        grads = torch.autograd.grad((output * flat).sum(), inputs, allow_unused=True,
                                    create_graph=flat.requires_grad)
    pushed = [(g if g is not None else torch.zeros_like(x)).reshape(*lead, *x.shape[1:])
              for g, x in zip(grads, inputs)]
    bias = (flat * offset).reshape(flat.shape[0], -1).sum(dim=1).reshape(lead)
    return pushed, bias


class ElementwiseRule(LayerRule):
    """A per-neuron nonlinearity y = f(z). Subclasses give `forward` and `relax`; the default interval
    assumes f is monotone non-decreasing."""

    def interval(self, bound: Interval) -> Interval:
        return Interval(self.forward(bound.lower), self.forward(bound.upper))

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Upper bound: positive coefficients take the upper line, negative ones the lower line.

        Written as  A * lower + A+ * (upper - lower)  so each term is one pass over the coefficients."""
        if relaxation is None:
            raise ValueError(f"{type(self).__name__}.backward needs a relaxation")
        batch = relaxation.upper_slope.shape[0]
        a = coefficients.reshape(coefficients.shape[0], coefficients.shape[1], -1)  # [B, K, N]
        flat = lambda t: t.reshape(batch, -1, 1)  # noqa: E731  [B, *s] -> [B, N, 1]
        positive = a.clamp(min=0)
        lower_slope = flat(relaxation.lower_slope).transpose(1, 2)
        slope_gap = flat(relaxation.upper_slope - relaxation.lower_slope).transpose(1, 2)
        pushed = torch.addcmul(a * lower_slope, positive, slope_gap)
        bias = (a @ flat(relaxation.lower_intercept)
                + positive @ flat(relaxation.upper_intercept - relaxation.lower_intercept)).squeeze(-1)
        return [pushed.reshape(coefficients.shape)], bias
