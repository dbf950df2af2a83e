"""LP and MILP encodings of networks (the `dual-lp`, `lp-full` and `milp` methods build on these)."""
from verikit.lp.encode import Encoding, LPModel, Solution, encode_graph

__all__ = ["Encoding", "LPModel", "Solution", "encode_graph"]
