r"""Part 3 of AR-IIGCN: a residual relational GCN over the conversation graph.

Each layer :math:`\ell` is PyG's :class:`~torch_geometric.nn.conv.RGCNConv` with mean
aggregation per relation, a root weight and a bias, wrapped in a residual connection:

.. math::
    \mathbf{u}_i = \mathbf{W}^{(\ell)}_{\text{root}} \mathbf{x}_i + \mathbf{b}^{(\ell)}
        + \sum_{r=1}^{R} \frac{1}{|\mathcal{N}_r(i)|} \sum_{j \in \mathcal{N}_r(i)}
          \mathbf{W}^{(\ell)}_r \mathbf{x}_j,
    \qquad
    \mathbf{x}'_i = \mathbf{x}_i + \operatorname{Dropout}(\operatorname{ReLU}(\mathbf{u}_i))

where :math:`\mathcal{N}_r(i)` are the sources of node :math:`i`'s incoming edges of relation
:math:`r` (:mod:`train.graph`); a relation with no incoming edge contributes 0. The node's own
state enters only through the root weight (the graph has no self loops).

Dense equivalent (for export): with :math:`\mathbf{A}_r \in \{0,1\}^{V \times V}`,
:math:`(\mathbf{A}_r)_{ij} = 1` iff edge :math:`j \to i` has type :math:`r`, and
:math:`\hat{\mathbf{A}}_r = \operatorname{diag}(\max(\mathbf{A}_r \mathbf{1}, 1))^{-1}\mathbf{A}_r`
(row-normalised), one layer is
``U = X @ root + bias + sum_r (Â_r @ X) @ weight[r]`` and ``X' = X + relu(U)``,
with PyG's parameter layout ``conv.weight`` (R, H, H) (``x @ weight[r]``), ``conv.root`` (H, H)
and ``conv.bias`` (H,). Dropout is the identity at inference. :meth:`RelationalGCN.forward_dense`
computes it as one product with a 2-D weight,
``U = [X, Â_1 X, ..., Â_R X] @ [root; weight[1]; ...; weight[R]] + bias`` ((V, (R+1)H) @ ((R+1)H, H)),
so that INT8 quantisers see an ordinary matrix (one scale per output channel) rather than a
batched (R, H, H) weight that onnxruntime's integer kernels leave in float.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import RGCNConv


class RelationalGCN(nn.Module):
    """``layers`` residual RGCN layers of width ``hidden`` over ``num_relations`` edge types.

    Shapes: x (V, hidden), edge_index (2, E) int64 ``[source, target]``, edge_type (E,) int64
    -> (V, hidden).
    """

    def __init__(self, hidden: int, num_relations: int, layers: int, dropout: float = 0.0):
        super().__init__()
        if layers < 1:
            raise ValueError(f"model.gcn_layers must be >= 1 when the graph is used, got {layers}")
        self.convs = nn.ModuleList(RGCNConv(hidden, hidden, num_relations, aggr="mean") for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + self.dropout(torch.relu(conv(x, edge_index, edge_type)))
        return x

    def forward_dense(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """The same layers with matrix products only (exports to ONNX; see the module docstring).

        Shapes: x (V, hidden), adjacency (R, V, V) row-normalised (:func:`row_normalised_adjacency`) -> (V, hidden).
        """
        for conv in self.convs:
            r, h, _ = conv.weight.shape
            stacked = torch.cat([conv.root, conv.weight.reshape(r * h, h)], dim=0)  # ((R+1)H, H)
            neighbours = (adjacency @ x).transpose(0, 1).reshape(x.shape[0], r * h)  # (V, R*H): [Â_1 X, ..., Â_R X]
            u = torch.cat([x, neighbours], dim=1) @ stacked + conv.bias
            x = x + self.dropout(torch.relu(u))
        return x


def row_normalised_adjacency(edge_index: torch.Tensor, edge_type: torch.Tensor, num_nodes: int,
                    num_relations: int) -> torch.Tensor:
    """Row-normalised per-relation adjacency ``Â_r`` of the module docstring.

    Shapes: edge_index (2, E) ``[source, target]``, edge_type (E,) -> (R, V, V) float32 with
    ``Â[r, i, j] = 1 / |N_r(i)|`` for each edge ``j -> i`` of type ``r`` (duplicate edges count
    twice, as in PyG's mean).
    """
    adj = torch.zeros(num_relations, num_nodes, num_nodes, device=edge_index.device)
    adj.index_put_((edge_type, edge_index[1], edge_index[0]), torch.ones(edge_type.shape[0], device=adj.device),
                   accumulate=True)
    return adj / adj.sum(-1, keepdim=True).clamp(min=1.0)
