"""Decentralised multi-task learning under subspace constraints.

K agents on a graph each train their own model; parameter groups are kept in
a subspace (for example a shared trunk in consensus and local heads) by
approximate-projection diffusion or exact subspace diffusion, with constant
or automatic (AGD) step sizes.
"""

__version__ = "0.1.0"
