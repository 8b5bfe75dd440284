"""A reusable graph: edge indices with their sorted orders, built once per neighbour list."""
from __future__ import annotations

import jax

from batteries_jax import _checks
from batteries_jax.primitives.uvu import sanitize_index, sorted_segments


@jax.tree_util.register_pytree_node_class
class Graph:
    """Senders/receivers of E edges over ``num_nodes`` nodes, plus each index's sorted order.

    Build it once per neighbour list with :meth:`Graph.build` and pass it to every layer: the
    sort (what makes the CUDA scatter deterministic) is then not paid per call. Indices outside
    [0, num_nodes) (padding such as -1 or N) mark edges that do not exist. A pytree: it can be
    an argument of ``jit`` and ``vmap`` (num_nodes is static).
    """

    def __init__(self, senders, receivers, num_nodes, snd_perm, snd_seg, rcv_perm, rcv_seg):
        self.senders, self.receivers, self.num_nodes = senders, receivers, num_nodes
        self.snd_perm, self.snd_seg, self.rcv_perm, self.rcv_seg = snd_perm, snd_seg, rcv_perm, rcv_seg

    @classmethod
    def build(cls, senders, receivers, num_nodes: int) -> "Graph":
        senders = _checks.index_array("senders", senders)
        receivers = _checks.index_array("receivers", receivers, senders.shape[0])
        num_nodes = int(num_nodes)
        snd = sanitize_index(senders, num_nodes)
        rcv = sanitize_index(receivers, num_nodes)
        return cls(snd, rcv, num_nodes, *sorted_segments(snd, num_nodes), *sorted_segments(rcv, num_nodes))

    @property
    def num_edges(self) -> int:
        return self.senders.shape[-1]

    def tree_flatten(self):
        return ((self.senders, self.receivers, self.snd_perm, self.snd_seg, self.rcv_perm,
                 self.rcv_seg), self.num_nodes)

    @classmethod
    def tree_unflatten(cls, num_nodes, children):
        s, r, sp, ss, rp, rs = children
        return cls(s, r, num_nodes, sp, ss, rp, rs)

    def conv_index(self) -> tuple:
        """The fused convolution's index operands (``primitives.conv.INDEX`` order)."""
        return (self.senders, self.receivers, self.snd_perm, self.snd_seg, self.rcv_perm,
                self.rcv_seg)

    def index_operands(self) -> dict:
        """The uvu primitive's index operands: x rows are senders, o rows receivers."""
        return dict(x_idx=self.senders, x_perm=self.snd_perm, x_seg=self.snd_seg,
                    o_idx=self.receivers, o_perm=self.rcv_perm, o_seg=self.rcv_seg)
