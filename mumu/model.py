"""MuMu (paper §3) and the ablation baselines B1/B2/B3 (Table 7), built by `build_model`.

All four share `UnimodalEncoder`; they differ in temporal pooling and in how modalities are fused:

| arch | temporal pooling  | fusion                                                 | group head |
|------|-------------------|--------------------------------------------------------|------------|
| mumu | keyless attention | SM-Fusion -> X_aux -> F_aux; GM-Fusion -> W_f[X_c; X_aux] -> F_t | yes |
| b1   | last valid state  | concatenation -> two-FC head                          | no         |
| b2   | keyless attention | concatenation -> two-FC head (Keyless)                | no         |
| b3   | keyless attention | BatchNorm, masked self-attention across modalities, mean over present (HAMLET-like) | no |

A missing modality (length 0) has an all-zero unimodal feature. The attention fusions mask it out of their
softmax; the concatenation baselines keep its slot as zeros (there is no softmax to mask).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

import torch
from torch import Tensor, nn

from mumu.encoders import SensorEncoder, UnimodalEncoder
from mumu.fusion import GM_GATES, GM_MERGES, GMFusion, ModalitySelfAttention, SMFusion, kl_to_target
from pipeline.errors import MumuError
from pipeline.modalities import ModalitySpec

ARCHS = ("mumu", "b1", "b2", "b3")
FUSION_INITS = ("torch", "xavier")
FUSION_NORMS = ("convex", "count")
MODALITY_DROPOUT_MODES = ("one", "down_to_one")  # how many modalities a dropped sample loses
# how a lost modality looks: length 0, or present with its inputs set as the noise study's "drop" / "mean" modes do
MODALITY_DROPOUT_AS = ("missing", "zeros", "mean")
SENSOR_ENCODERS: tuple[str, ...] = get_args(SensorEncoder)
B3_HEADS = 2  # B3's self-attention heads (HAMLET's fusion); they must divide the embedding size


@dataclass
class ModelOutput:
    logits: Tensor  # (B, K) activity logits
    group_logits: Tensor | None  # (B, G) activity-group logits (MuMu only)
    unimodal: Tensor  # (B, M, D) unimodal features X_u, zero for missing modalities
    fused: Tensor  # (B, D) the representation the activity classifier reads
    # "sm" (B, M) SM-Fusion alpha; "gm" (B, M) GM-Fusion / B3 weights; "temporal:<name>" (B, S'), S' < S when
    # the sequence encoder max-pools
    attention: dict[str, Tensor] = field(default_factory=dict)
    # MuMu: KL of SM-Fusion's weights plus the mean KL of GM-Fusion's heads (softmax gate) to the target weights
    # (equal ones, or the batch's fusion targets), batch means; ()
    fusion_kl: Tensor | None = None
    unimodal_logits: Tensor | None = None  # (B, M, K) each modality's own activity logits (unimodal heads only)
    present: Tensor | None = None  # (B, M) bool: the modalities the model saw (after modality dropout)


def two_layer_head(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Two FC layers with ReLU (and dropout) between them: F_aux, F_t and the baselines' heads."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def lost_modalities(present: Tensor, p: float, mode: str = "one") -> Tensor:
    """Modality dropout (training only): which modalities each sample loses, (B, M) bool, from presence (B, M).

    With probability `p`, a sample with two or more present modalities loses some, so that no fusion can lean
    on a single modality. Mode "one": it loses one, drawn uniformly among those present. Mode "down_to_one":
    it loses 1 to n-1 of its n present ones (how many, then which, uniformly), so that a model of three or
    more modalities also sees each one alone. A sample never loses its last modality."""
    if mode not in MODALITY_DROPOUT_MODES:
        raise MumuError(f"unknown modality_dropout_mode {mode!r}; choose one of {', '.join(MODALITY_DROPOUT_MODES)}")
    n_present = present.sum(1)  # (B,)
    if mode == "one":
        chosen = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0).argmax(1)  # (B,)
        lost = nn.functional.one_hot(chosen, present.shape[1]).bool()  # (B, M)
    else:  # rank the present modalities in a random order; lose the first k, k uniform in 1..n-1
        rank = torch.rand(present.shape, device=present.device).masked_fill(~present, 2.0).argsort(1).argsort(1)
        k = 1 + (torch.rand(len(present), device=present.device) * (n_present - 1)).long()  # (B,)
        lost = (rank < k[:, None]) & present
    apply = (torch.rand(len(present), device=present.device) < p) & (n_present >= 2)  # (B,)
    return lost & apply[:, None]


class MultimodalModel(nn.Module):
    """Encodes every modality (in `self.modalities` order) and hands (B, M, D) features to `fuse`."""

    def __init__(self, inputs: dict[str, ModalitySpec], embed_dim: int, dropout: float, pooling: str,
                 unimodal_classes: int = 0, **encoder_options: Any):
        super().__init__()
        self.modalities = list(inputs)
        self.encoders = nn.ModuleDict(
            {name: UnimodalEncoder(spec, embed_dim, dropout, pooling, **encoder_options)
             for name, spec in inputs.items()})
        # unimodal_classes > 0: a linear activity classifier on each modality's own feature (train.unimodal_aux)
        self.unimodal_heads = nn.ModuleDict(
            {name: nn.Linear(embed_dim, unimodal_classes) for name in inputs}) if unimodal_classes else None

    def encode(self, x: dict[str, Tensor], lengths: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """-> unimodal features (B, M, D), presence (B, M) bool, temporal weights per modality (B, S')."""
        absent = [name for name in self.modalities if name not in x or name not in lengths]
        if absent:
            raise ValueError(f"batch lacks modality {', '.join(absent)}; the model expects {self.modalities} "
                             "(pass zero lengths for a modality missing in some samples)")
        present = torch.stack([lengths[name] > 0 for name in self.modalities], dim=1)  # (B, M)
        empty = (~present.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"batch positions {empty} have every modality missing (all lengths are 0)")
        features, temporal = [], {}
        for name in self.modalities:
            feature, weights = self.encoders[name](x[name], lengths[name])
            features.append(feature)
            if weights is not None:
                temporal[f"temporal:{name}"] = weights
        return torch.stack(features, dim=1), present, temporal

    def forward(self, x: dict[str, Tensor], lengths: dict[str, Tensor],
                fusion_target: Tensor | None = None) -> ModelOutput:
        # x: {name: (B, S, 2048) visual | (B, S, W, C) sensor}, lengths: {name: (B,)} valid steps
        # fusion_target: (B, M) positive weights that MuMu's fusion_kl pulls its fusion weights toward (None: equal)
        xu, present, temporal = self.encode(x, lengths)  # (B, M, D), (B, M)
        out = self.fuse(xu, present, fusion_target)
        out.attention.update(temporal)
        out.present = present
        if self.unimodal_heads is not None:
            out.unimodal_logits = torch.stack(
                [self.unimodal_heads[name](xu[:, i]) for i, name in enumerate(self.modalities)], dim=1)  # (B, M, K)
        return out

    def fuse(self, xu: Tensor, present: Tensor, fusion_target: Tensor | None = None) -> ModelOutput:
        raise NotImplementedError


class MuMu(MultimodalModel):
    """Auxiliary task (SM-Fusion -> activity group) guides the target task (GM-Fusion -> activity)."""

    def __init__(self, inputs: dict[str, ModalitySpec], num_classes: int, num_groups: int, embed_dim: int, dropout: float, gm_heads: int = 1,
                 gm_gate: str = "softmax", gm_merge: str = "sum", fusion_init: str = "torch",
                 fusion_norm: str = "convex", **options: Any):
        super().__init__(inputs, embed_dim, dropout, "keyless", **options)
        self.sm_fusion = SMFusion(embed_dim)
        self.aux_head = two_layer_head(embed_dim, embed_dim, num_groups, dropout)  # F_aux
        self.gm_fusion = GMFusion(embed_dim, gm_heads, gm_gate, gm_merge, len(inputs))
        self.merge = nn.Linear(2 * embed_dim, embed_dim)  # W_f
        self.head = two_layer_head(embed_dim, embed_dim, num_classes, dropout)  # F_t
        self.fusion_norm = fusion_norm
        if fusion_init == "xavier":
            # W^V, W^O and W_f are linear maps in a row. With torch's default init, X_f starts with about a
            # third of the unimodal features' spread over samples; Xavier keeps about all of it, as
            # nn.MultiheadAttention (the lineage code's GM-Fusion) does for its projections.
            for layer in (self.gm_fusion.q, self.gm_fusion.k, self.gm_fusion.v, self.gm_fusion.o, self.merge):
                nn.init.xavier_uniform_(layer.weight)

    def fuse(self, xu: Tensor, present: Tensor, fusion_target: Tensor | None = None) -> ModelOutput:
        # "count": X_aux (also as GM-Fusion's query and F_aux's input) and X_c scaled by the number of present
        # modalities, so a sample that lost one carries less evidence, as B2's zero-filled slot does.
        scale = present.sum(1, keepdim=True).to(xu.dtype) if self.fusion_norm == "count" else 1.0  # (B, 1)
        x_aux, alpha = self.sm_fusion(xu, present)  # (B, D), (B, M)
        x_aux = x_aux * scale
        x_c, gm = self.gm_fusion(x_aux, xu, present)  # (B, D), (B, H, M)
        x_c = x_c * scale
        x_f = self.merge(torch.cat([x_c, x_aux], dim=1))  # (B, D)
        fusion_kl = kl_to_target(alpha, present, fusion_target).mean()
        if self.gm_fusion.gate == "softmax":  # sigmoid gates are no distribution over the modalities
            head_target = None if fusion_target is None else fusion_target[:, None, :]  # (B, 1, M): every head's
            fusion_kl = fusion_kl + kl_to_target(gm, present[:, None, :], head_target).mean()
        gm_weights = gm.mean(1)  # (B, H, M) -> (B, M): the mean over heads
        return ModelOutput(logits=self.head(x_f), group_logits=self.aux_head(x_aux), unimodal=xu, fused=x_f,
                           attention={"sm": alpha, "gm": gm_weights}, fusion_kl=fusion_kl)


class ConcatBaseline(MultimodalModel):
    """B1 (pooling "last") and B2 (pooling "keyless"): concatenated unimodal features -> two-FC head.

    `fused` is the head's (B, D) hidden layer, since the concatenation itself is (B, M*D)."""

    def __init__(self, inputs: dict[str, ModalitySpec], num_classes: int, embed_dim: int, dropout: float, pooling: str,
                 **options: Any):
        super().__init__(inputs, embed_dim, dropout, pooling, **options)
        self.hidden = nn.Sequential(nn.Linear(len(inputs) * embed_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(embed_dim, num_classes)

    def fuse(self, xu: Tensor, present: Tensor, fusion_target: Tensor | None = None) -> ModelOutput:
        fused = self.hidden(xu.flatten(1))  # (B, M*D) -> (B, D); missing slots are zeros
        return ModelOutput(logits=self.out(fused), group_logits=None, unimodal=xu, fused=fused)


class SelfAttentionBaseline(MultimodalModel):
    """B3: keyless temporal attention, then masked multi-head self-attention across modality tokens."""

    def __init__(self, inputs: dict[str, ModalitySpec], num_classes: int, embed_dim: int, dropout: float,
                 **options: Any):
        super().__init__(inputs, embed_dim, dropout, "keyless", **options)
        self.fusion = ModalitySelfAttention(embed_dim, B3_HEADS, dropout, len(inputs))
        self.head = two_layer_head(embed_dim, embed_dim, num_classes, dropout)

    def fuse(self, xu: Tensor, present: Tensor, fusion_target: Tensor | None = None) -> ModelOutput:
        fused, weights = self.fusion(xu, present)  # (B, D), (B, M)
        return ModelOutput(logits=self.head(fused), group_logits=None, unimodal=xu, fused=fused,
                           attention={"gm": weights})


def check_model_options(arch: str, embed_dim: int, *, gm_heads: int, motion: bool, sensor_encoder: str,
                        kernel_size: int) -> None:
    """The checks of model options that depend on each other (training configs run them before any data loads)."""
    if arch == "b3" and embed_dim % B3_HEADS:
        raise MumuError(f"B3's {B3_HEADS} self-attention heads must divide embed_dim ({embed_dim})")
    if arch == "mumu" and (gm_heads < 1 or embed_dim % gm_heads):
        raise MumuError(f"gm_heads must be >= 1 and divide embed_dim ({embed_dim}), got {gm_heads}")
    if motion and sensor_encoder != "sequence":
        raise MumuError("motion channels need the sequence sensor encoder (sensor_encoder: sequence)")
    if sensor_encoder == "sequence" and kernel_size % 2 == 0:  # an even kernel with "same" padding adds a step
        raise MumuError(f"the sequence sensor encoder needs an odd kernel_size (it keeps every step), got "
                        f"{kernel_size}")


def build_model(arch: str, inputs: dict[str, ModalitySpec], num_classes: int, num_groups: int,
                embed_dim: int = 128, dropout: float = 0.2, *, window: int = 5, conv_channels: int = 64,
                kernel_size: int = 3, lstm_layers: int = 1,
                sensor_encoder: str = "window", max_pools: int = 0, motion: bool = False, visual_norm: bool = False,
                gm_heads: int = 1, gm_gate: str = "softmax", gm_merge: str = "sum", fusion_init: str = "torch",
                fusion_norm: str = "convex", unimodal_heads: bool = False) -> MultimodalModel:
    """Build `arch` (mumu | b1 | b2 | b3) over `inputs`, whose order is the model's modality order.

    window: time steps per sensor window (W of the (B, S, W, J*A) input; params.yaml extract.sensor_window).
    sensor_encoder: "window" (co-occurrence convs inside each window) or "sequence" (convs along the steps).
    conv_channels, kernel_size: the sensor encoder's conv width and temporal kernel (clamped to W for "window").
    max_pools: "sequence" only; max-pools by 2 along the steps after the first 0, 1 or 2 conv blocks.
    motion: "sequence" only; the step-to-step differences of each sensor input become extra input channels.
    visual_norm: a LayerNorm over each visual step's features before its projection.
    gm_heads: MuMu's GM-Fusion heads (1 = eq. 7); they, and B3's B3_HEADS, must divide embed_dim.
    gm_gate: MuMu's GM-Fusion weights, "softmax" over modalities or one "sigmoid" gate per modality.
    gm_merge: MuMu's GM-Fusion output, the "sum" of the weighted values (eq. 7) or their "concat" (one slot each).
    fusion_init: MuMu's GM-Fusion projections and W_f, torch's default init or "xavier" (scale-preserving).
    fusion_norm: "convex" (eqs. 2 and 7), or "count": X_aux and X_c are multiplied by the number of present
    modalities, as if their weights summed to it. X_aux is so scaled before it is GM-Fusion's query and F_aux's
    input too, which sharpens the GM softmax by that factor; "gm" reports the weights so computed.
    unimodal_heads: a linear activity classifier on each modality's feature (`unimodal_logits`), for a loss term.
    num_groups is used by MuMu only.
    """
    if arch not in ARCHS:
        raise MumuError(f"unknown model {arch!r}; choose one of {', '.join(ARCHS)}")
    if not inputs:
        raise MumuError("the model needs at least one input modality")
    if sensor_encoder not in SENSOR_ENCODERS:
        raise MumuError(f"unknown sensor encoder {sensor_encoder!r}; choose one of {', '.join(SENSOR_ENCODERS)}")
    if not 0 <= max_pools <= 2:
        raise MumuError(f"max_pools must be 0, 1 or 2 (pools after the first conv blocks), got {max_pools}")
    check_model_options(arch, embed_dim, gm_heads=gm_heads, motion=motion, sensor_encoder=sensor_encoder,
                        kernel_size=kernel_size)
    options = dict(window=window, conv_channels=conv_channels, kernel_size=kernel_size, lstm_layers=lstm_layers,
                   sensor_encoder=sensor_encoder, max_pools=max_pools, motion=motion, visual_norm=visual_norm,
                   unimodal_classes=num_classes if unimodal_heads else 0)
    for name, value, choices in (("gm_gate", gm_gate, GM_GATES), ("gm_merge", gm_merge, GM_MERGES),
                                 ("fusion_init", fusion_init, FUSION_INITS), ("fusion_norm", fusion_norm, FUSION_NORMS)):
        if value not in choices:
            raise MumuError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    if arch == "mumu":
        return MuMu(inputs, num_classes, num_groups, embed_dim, dropout, gm_heads, gm_gate, gm_merge, fusion_init,
                    fusion_norm, **options)
    if arch == "b3":
        return SelfAttentionBaseline(inputs, num_classes, embed_dim, dropout, **options)
    pooling = "last" if arch == "b1" else "keyless"
    return ConcatBaseline(inputs, num_classes, embed_dim, dropout, pooling, **options)
