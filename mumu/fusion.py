"""Multimodal fusion across the modality axis (paper §3.4-3.5, and the B3 baseline).

All fusions take unimodal features (B, M, D) and a presence mask (B, M); a missing modality is excluded
from every softmax (its score is -inf, so its weight is exactly 0), never zero-filled into it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mumu.encoders import masked_softmax


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
    the unimodal features are keys and values; one scaled dot-product attention over modalities."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)  # W^Q
        self.k = nn.Linear(dim, dim, bias=False)  # W^K
        self.v = nn.Linear(dim, dim, bias=False)  # W^V
        self.o = nn.Linear(dim, dim, bias=False)  # W^O
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x_aux: Tensor, xu: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        # x_aux: (B, D), xu: (B, M, D), present: (B, M) -> X_c (B, D), weights (B, M)
        q = self.q(x_aux)  # (B, D)
        k, v = self.k(xu), self.v(xu)  # (B, M, D)
        scores = torch.einsum("bd,bmd->bm", q, k) * self.scale  # (B, M)
        weights = masked_softmax(scores, present, dim=1)
        return self.o(torch.einsum("bm,bmd->bd", weights, v)), weights


class ModalitySelfAttention(nn.Module):
    """B3 (HAMLET-like): multi-head self-attention among the modality tokens, keys masked to the present
    modalities, then the mean over present tokens. Unlike HAMLET's code, the mask is applied, so a missing
    modality cannot influence the result."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.post = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))

    def forward(self, xu: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        # xu: (B, M, D), present: (B, M) -> merged (B, D), weights (B, M) averaged over present queries
        tokens, weights = self.attention(xu, xu, xu, key_padding_mask=~present, need_weights=True,
                                         average_attn_weights=True)  # (B, M, D), (B, M_query, M_key)
        tokens = self.post(tokens)
        share = present.to(xu.dtype) / present.sum(1, keepdim=True)  # (B, M): 1/|present| on present tokens
        merged = torch.einsum("bm,bmd->bd", share, tokens)
        return merged, torch.einsum("bq,bqk->bk", share, weights)
