"""Decentralised multi-task learning under subspace constraints.

K agents on a graph each train their own model. Parameter groups are kept in
a subspace, for example a shared trunk in consensus beside local heads, by
approximate-projection diffusion or exact subspace diffusion. Step sizes are
constant or automatic (AGD).
"""

__version__ = "0.1.0"
