"""Unimodal Feature Encoders (UFE, paper §3.3): per-step embedding -> LSTM (optional) -> temporal pooling.

Step embeddings (every modality has an encoder of its own):
- visual (video / depth): a cached 2048-d ResNet-50 feature per step -> (LayerNorm) -> Linear -> ReLU -> Dropout;
- sensor / skeleton, `sensor_encoder="window"`: a co-occurrence-style 2-conv encoder inside each window of
  W time steps (J joints, A attributes), as in the HAMLET/MuMu code;
- sensor / skeleton, `sensor_encoder="sequence"`: HCN-style convolutions along the step axis, across windows,
  so each step's embedding sees its neighbours, optionally with max-pools between the conv blocks that
  shorten the sequence and widen the later blocks' reach (docs/results.md measures each on UTD-MHAD).
Temporal pooling is keyless attention (Long et al. 2018) for MuMu/B2/B3 or the last valid LSTM state for B1.

Padding convention: step t of sample b is valid iff t < lengths[b]; lengths[b] == 0 means the modality is
missing in that sample, and its unimodal feature is then exactly zero.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pipeline.modalities import FEATURE_DIM, ModalitySpec

Pooling = Literal["keyless", "last"]
SensorEncoder = Literal["window", "sequence"]


class _RunningStatsFallback:
    """A BatchNorm that normalises a single value per channel with its running statistics instead of failing.

    Only valid steps reach the sensor encoders' BatchNorms, so a training (or AdaBN) batch of one short sample
    can hand them one value per channel, whose batch variance is undefined."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() == x.shape[1]:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            training=False, eps=self.eps)
        return super().forward(x)


class BatchNorm1dFallback(_RunningStatsFallback, nn.BatchNorm1d):
    pass


class BatchNorm2dFallback(_RunningStatsFallback, nn.BatchNorm2d):
    pass


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(B,) valid lengths -> (B, S) bool, True on valid steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the True entries of `mask` only; masked entries get exactly 0.

    A row with no True entry gets all-zero weights (not NaN), so a missing modality contributes nothing.
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    # An all-masked row would be softmax(-inf, ..., -inf) = NaN; give it finite scores, then zero it.
    scores = scores.masked_fill(~mask.any(dim, keepdim=True), 0.0)
    return torch.softmax(scores, dim).masked_fill(~mask, 0.0)


class KeylessAttention(nn.Module):
    """Long et al. (2018): e_t = w^T h_t + b, a = softmax over valid t, h = sum_t a_t h_t."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # h: (B, T, D), mask: (B, T) -> pooled (B, D), weights (B, T)
        weights = masked_softmax(self.score(h).squeeze(-1), mask, dim=1)
        return torch.einsum("bt,btd->bd", weights, h), weights


class VisualStepEmbedding(nn.Module):
    """(B, S, 2048) cached ResNet-50 features -> (B, S, D).

    norm: a LayerNorm over each step's features first, so that a step far outside the training range (a
    zeroed random-init ResNet feature lies ~19 standard deviations out) reaches the projection at the
    scale of any other step."""

    def __init__(self, in_dim: int, dim: int, dropout: float, norm: bool = False):
        super().__init__()
        layers = [nn.LayerNorm(in_dim)] if norm else []
        self.proj = nn.Sequential(*layers, nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.proj(x), mask  # (B, S, D); a per-step op, so padded steps cannot leak into valid ones


class SensorWindowEmbedding(nn.Module):
    """Co-occurrence-style encoder of one window: (B, S, W, J*A) -> (B, S, D).

    conv1 (1x1) mixes the A attributes of each joint and time step; conv2 (1 x k) convolves along time
    inside the window. Only valid windows go through the convolutions, so BatchNorm statistics never see
    padding or missing samples; invalid windows get a zero embedding.
    """

    def __init__(self, spec: ModalitySpec, window: int, dim: int, dropout: float, channels: int = 64,
                 kernel_size: int = 3):
        super().__init__()
        self.joints, self.attributes, self.window = spec.joints, spec.attributes, window
        kernel_size = min(kernel_size, window)  # a window shorter than the kernel: use the whole window
        self.conv = nn.Sequential(
            nn.Conv2d(spec.attributes, channels // 2, kernel_size=1),
            BatchNorm2dFallback(channels // 2),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, kernel_size=(1, kernel_size)),
            BatchNorm2dFallback(channels),
            nn.ReLU(),
        )
        flat = channels * spec.joints * (window - kernel_size + 1)
        self.proj = nn.Sequential(nn.Linear(flat, dim), nn.ReLU(), nn.Dropout(dropout))
        self.dim = dim

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        B, S, W, _ = x.shape
        out = x.new_zeros(B, S, self.dim)  # (B, S, D)
        valid = x[mask]  # (N, W, J*A), N = number of valid windows in the batch
        # N may be 0 (modality missing in the whole batch): the empty pass leaves BatchNorm's running
        # statistics alone and keeps every parameter in the graph (zero gradients), as DDP requires.
        windows = valid.reshape(-1, W, self.joints, self.attributes).permute(0, 3, 2, 1)  # (N, A, J, W)
        out[mask] = self.proj(self.conv(windows).flatten(1)).to(out.dtype)  # (N, D)
        return out, mask


class MaskedConvBlock(nn.Module):
    """Conv1d along steps -> BatchNorm over valid steps only -> ReLU; padded steps leave as zeros.

    Zeroed padding is what Conv1d's own zero padding would see at the sequence end, so a valid step's output
    does not depend on how much padding follows it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = BatchNorm1dFallback(out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x: (B, C_in, S) with zeros on padding, mask: (B, S) -> (B, C_out, S)
        h = self.conv(x).transpose(1, 2)  # (B, S, C_out)
        out = h.new_zeros(h.shape)
        out[mask] = torch.relu(self.norm(h[mask]))  # BatchNorm1d over the (N_valid, C_out) steps
        return out.transpose(1, 2)


def halve_steps(h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Max-pool by 2 along the steps: (B, C, S), (B, S) -> (B, C, ceil(S/2)), (B, ceil(S/2)).

    h is post-ReLU (>= 0) and zero on padding, so a pair with one valid step pools to that step's value."""
    h = nn.functional.max_pool1d(h, 2, ceil_mode=True)
    return h, nn.functional.max_pool1d(mask[:, None].float(), 2, ceil_mode=True)[:, 0].bool()


class SensorSequenceEmbedding(nn.Module):
    """HCN-style temporal convolutions across steps: (B, S, W, J*A) -> (B, S', D), S' = ceil(S / 2^max_pools).

    Each step's window is flattened to W*J*A values; three masked conv blocks (kernel k along the steps)
    mix neighbouring steps, with a max-pool by 2 after each of the first `max_pools` blocks (a wider
    receptive field for the later blocks), then a per-step Linear -> ReLU -> Dropout gives the D-d embedding.
    With `motion`, the step-to-step differences of the input ride along as extra channels (HCN's motion
    stream, fused at the input)."""

    def __init__(self, spec: ModalitySpec, window: int, dim: int, dropout: float, channels: int, kernel_size: int,
                 max_pools: int, motion: bool):
        super().__init__()
        self.motion = motion
        in_channels = window * spec.channels * (2 if motion else 1)
        self.blocks = nn.ModuleList([MaskedConvBlock(in_channels, channels, kernel_size),
                                     MaskedConvBlock(channels, channels, kernel_size),
                                     MaskedConvBlock(channels, 2 * channels, kernel_size)])
        self.max_pools = max_pools
        self.proj = nn.Sequential(nn.Linear(2 * channels, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # x: (B, S, W, J*A), mask: (B, S) -> steps (B, S', D), mask (B, S')
        h = x.flatten(2).transpose(1, 2)  # (B, W*J*A, S); padding is already zero
        if self.motion:
            # zero at the first step, and at the first padded step (which would see 0 - last valid step)
            motion = torch.diff(h, dim=2, prepend=h[:, :, :1]) * mask[:, None]
            h = torch.cat([h, motion], dim=1)  # (B, 2*W*J*A, S)
        for i, block in enumerate(self.blocks):
            h = block(h, mask)
            if i < self.max_pools:
                h, mask = halve_steps(h, mask)
        return self.proj(h.transpose(1, 2)) * mask[..., None], mask  # zero on padding


class UnimodalEncoder(nn.Module):
    """One modality: step embedding -> LSTM (if lstm_layers > 0) -> temporal pooling -> (B, D) feature and
    (B, S') weights (S' < S when the sequence encoder max-pools)."""

    def __init__(self, spec: ModalitySpec, dim: int, dropout: float, pooling: Pooling, window: int = 5,
                 conv_channels: int = 64, kernel_size: int = 3, lstm_layers: int = 1,
                 sensor_encoder: SensorEncoder = "window", max_pools: int = 0, motion: bool = False,
                 visual_norm: bool = False):
        super().__init__()
        self.spec, self.window = spec, window
        if spec.visual:
            self.embed: nn.Module = VisualStepEmbedding(FEATURE_DIM, dim, dropout, visual_norm)
        elif sensor_encoder == "sequence":
            self.embed = SensorSequenceEmbedding(spec, window, dim, dropout, conv_channels, kernel_size, max_pools,
                                                 motion)
        else:
            self.embed = SensorWindowEmbedding(spec, window, dim, dropout, conv_channels, kernel_size)
        # lstm_layers=0: no recurrence; the pooling reads the step embeddings directly (with the "sequence"
        # sensor encoder, its convolutions already carry the temporal context).
        self.lstm = nn.LSTM(dim, dim, num_layers=lstm_layers, batch_first=True,
                            dropout=dropout if lstm_layers > 1 else 0.0) if lstm_layers > 0 else None
        self.attention = KeylessAttention(dim) if pooling == "keyless" else None

    def check_input(self, x: Tensor, lengths: Tensor) -> None:
        expected = (FEATURE_DIM,) if self.spec.visual else (self.window, self.spec.channels)
        if x.dim() != 2 + len(expected) or tuple(x.shape[2:]) != expected:
            layout = f"(B, S, {FEATURE_DIM})" if self.spec.visual else "(B, S, W, J*A)"
            raise ValueError(f"modality {self.spec.name!r}: expected input {layout} ending in {expected}, "
                             f"got shape {tuple(x.shape)}")
        if lengths.shape != x.shape[:1] or lengths.min() < 0 or lengths.max() > x.shape[1]:
            raise ValueError(f"modality {self.spec.name!r}: lengths must be (B,) = ({x.shape[0]},) values in "
                             f"[0, S={x.shape[1]}], got {lengths.tolist()}")

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        # x: (B, S, ...) padded; lengths: (B,) -> feature (B, D), temporal weights (B, S') or None
        self.check_input(x, lengths)
        mask = step_mask(lengths, x.shape[1])  # (B, S)
        x = x.float()  # cached visual features are float16
        # Zero the padding so that whatever the loader put there (even NaN) cannot reach the output.
        x = x.masked_fill(~mask.view(*mask.shape, *[1] * (x.dim() - 2)), 0.0)
        steps, mask = self.embed(x, mask)  # (B, S', D), (B, S'); S' < S when the sensor encoder pools
        # A unidirectional LSTM is causal and padding sits after the valid steps, so valid outputs are the
        # same as with packed sequences; padded outputs are masked below.
        h = self.lstm(steps)[0] if self.lstm is not None else steps  # (B, S', D)
        if self.attention is not None:
            return self.attention(h, mask)  # a missing modality has no valid step -> zero feature
        last = (mask.sum(1) - 1).clamp(min=0)  # (B,) index of the last valid step
        feature = h[torch.arange(h.shape[0], device=h.device), last]  # (B, D)
        return feature * (lengths > 0)[:, None], None  # zero for a missing modality
