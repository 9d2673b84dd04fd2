"""Multimodal fusion across the modality axis (paper §3.4-3.5, and the B3 baseline).

All fusions take unimodal features (B, M, D) and a presence mask (B, M); a missing modality is excluded
from every softmax (its score is -inf, so its weight is exactly 0) and every gate (set to 0), never
zero-filled into them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mumu.encoders import masked_softmax

GM_GATES = ("softmax", "sigmoid")
GM_MERGES = ("sum", "concat")


def kl_to_target(weights: Tensor, present: Tensor, target: Tensor | None = None) -> Tensor:
    """KL(w || t) per sample, t the target weights over the present modalities: equal weights when `target` is
    None, else `target` (positive, broadcastable to the weights' shape: (B, 1, M) for per-head weights (B, H, M))
    renormalised over them. 0 when w = t;
    log(n) from equal weights when one of n present modalities takes all the weight. weights (..., M) sum to 1
    over the present ones, present broadcasts to (..., M); a missing modality's weight is 0 and adds nothing
    (0 log 0 = 0)."""
    log_weights = torch.log(weights.clamp_min(1e-12))
    if target is None:  # KL to 1/n: sum w log w + log n
        return (weights * log_weights).sum(-1) + torch.log(present.sum(-1).to(weights.dtype))
    target = torch.broadcast_to(target, weights.shape) * present.to(weights.dtype)
    target = target / target.sum(-1, keepdim=True)
    return (weights * (log_weights - torch.log(target.clamp_min(1e-12)))).sum(-1)


class SMFusion(nn.Module):
    """Self Multimodal Fusion, eqs. (1)-(3): gamma_m = W_aux^T x_m (kernel-1 Conv1d over modalities),
    alpha = softmax over present modalities, X_aux = sum_m alpha_m x_m."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Conv1d(dim, 1, kernel_size=1)

    def forward(self, xu: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        # xu: (B, M, D), present: (B, M) -> X_aux (B, D), alpha (B, M)
        gamma = self.score(xu.transpose(1, 2)).squeeze(1)  # (B, M)
        alpha = masked_softmax(gamma, present, dim=1)
        return torch.einsum("bm,bmd->bd", alpha, xu), alpha


class GMFusion(nn.Module):
    """Guided Multimodal Fusion, eqs. (5)-(8): the auxiliary representation is the query,
    the unimodal features are keys and values; scaled dot-product attention over modalities.

    heads > 1 splits Q, K, V into heads of D / heads, each with its own softmax over modalities (as
    nn.MultiheadAttention in the same-lineage code), so different heads may read different modalities;
    heads = 1 is eq. (7) exactly.

    gate: how eq. (7)'s sigma turns scores into weights. "softmax" (attention as usual): the weights sum
    to 1, so X_c' is a convex mixture of the modalities' values. "sigmoid": each present modality gets
    its own gate in (0, 1), so the values can add up, as in a concatenation followed by a linear layer.

    merge: how the weighted values of the modalities become X_c'. "sum" (eq. 7): one D-dim mixture, in which
    W^V is shared, so the modalities' features overlap in one space. "concat" (the same-lineage code's
    `mm_embedding_attn_merge_type concat`): the M weighted values side by side, (B, M*D), and W^O maps them
    to D, so each modality keeps its own slot, as in B2's concatenation; needs `num_modalities`, the input's M."""

    def __init__(self, dim: int, heads: int = 1, gate: str = "softmax", merge: str = "sum", num_modalities: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"GM-Fusion heads ({heads}) must divide the embedding size ({dim})")
        if gate not in GM_GATES:
            raise ValueError(f"unknown GM-Fusion gate {gate!r}; choose one of {', '.join(GM_GATES)}")
        if merge not in GM_MERGES:
            raise ValueError(f"unknown GM-Fusion merge {merge!r}; choose one of {', '.join(GM_MERGES)}")
        self.q = nn.Linear(dim, dim, bias=False)  # W^Q
        self.k = nn.Linear(dim, dim, bias=False)  # W^K
        self.v = nn.Linear(dim, dim, bias=False)  # W^V
        merged = dim * num_modalities if merge == "concat" else dim
        self.o = nn.Linear(merged, dim, bias=False)  # W^O
        self.heads = heads
        self.gate = gate
        self.merge_mode = merge
        self.scale = 1.0 / math.sqrt(dim // heads)

    def forward(self, x_aux: Tensor, xu: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        # x_aux: (B, D), xu: (B, M, D), present: (B, M) -> X_c (B, D), weights (B, H, M)
        B, M, D = xu.shape
        q = self.q(x_aux).view(B, self.heads, D // self.heads)  # (B, H, D/H)
        k = self.k(xu).view(B, M, self.heads, D // self.heads)  # (B, M, H, D/H)
        v = self.v(xu).view(B, M, self.heads, D // self.heads)
        scores = torch.einsum("bhd,bmhd->bhm", q, k) * self.scale  # (B, H, M)
        if self.gate == "softmax":
            weights = masked_softmax(scores, present[:, None, :], dim=2)
        else:  # independent gates; a missing modality's gate is exactly 0
            weights = torch.sigmoid(scores).masked_fill(~present[:, None, :], 0.0)
        if self.merge_mode == "sum":
            x_c = torch.einsum("bhm,bmhd->bhd", weights, v).reshape(B, D)  # (B, D)
        else:  # each modality's weighted value in its own slot; a missing one's slot is 0
            x_c = torch.einsum("bhm,bmhd->bmhd", weights, v).reshape(B, M * D)  # (B, M*D)
        return self.o(x_c), weights


class ModalitySelfAttention(nn.Module):
    """B3 (HAMLET-like): multi-head self-attention among the modality tokens, keys masked to the present
    modalities, then the mean over present tokens. As in HAMLET's code, each modality's tokens pass a
    BatchNorm and a ReLU before and after the attention: without them a token of a much larger scale (a
    2048-d depth stream's, say) saturates the softmax and the fusion stops learning. Unlike HAMLET's code,
    the mask is applied, so a missing modality's (zero) token is never attended to or averaged in; it does
    enter the BatchNorm's batch statistics in training (and in test-time adaptation), as in HAMLET."""

    def __init__(self, dim: int, heads: int, dropout: float, num_modalities: int):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm1d(num_modalities), nn.ReLU())  # BatchNorm1d(M): one scale per modality
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.post = nn.Sequential(nn.BatchNorm1d(num_modalities), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, xu: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        # xu: (B, M, D), present: (B, M) -> merged (B, D), weights (B, M) averaged over present queries
        tokens = self.pre(xu)  # (B, M, D)
        tokens, weights = self.attention(tokens, tokens, tokens, key_padding_mask=~present, need_weights=True,
                                         average_attn_weights=True)  # (B, M, D), (B, M_query, M_key)
        tokens = self.post(tokens)
        share = present.to(xu.dtype) / present.sum(1, keepdim=True)  # (B, M): 1/|present| on present tokens
        merged = torch.einsum("bm,bmd->bd", share, tokens)
        return merged, torch.einsum("bq,bqk->bk", share, weights)
