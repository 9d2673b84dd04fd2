"""The LightningModule: a model from mumu/model.py with its input standardisation, loss, optimiser, metrics
and test-time BatchNorm adaptation. `mumu.train` builds one per split and fits it.

Loss: L_t + beta_aux * L_aux (cross-entropy on activities and, for MuMu, on activity groups), plus
fusion_kl * KL(MuMu's fusion weights || equal weights, or train.fusion_targets' per-sample ones) when
train.fusion_kl > 0, and unimodal_aux * the mean activity loss (label-smoothed as L_t) of one linear classifier
per modality (over the modalities present) when train.unimodal_aux > 0 (neither is in the paper). With
train.mixup > 0, training batches are blended pairwise and so are their losses (mumu.mixup).
AdamW; the learning rate decays by a cosine over all steps, or with warmup > 0 follows a one-cycle schedule
(warm-up to lr, then cosine down).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from mumu.adapt import BatchNormState, batchnorm_state, load_batchnorm_state, subject_batchnorm_state
from mumu.config import config_from_dict
from mumu.data import is_empty, valid_steps
from mumu.metrics import ActivityMetrics
from mumu.mixup import Mixup
from mumu.model import ModelOutput, build_model, lost_modalities
from mumu.noise import blank_steps
from pipeline.errors import MumuError
from pipeline.index import Sample
from pipeline.modalities import FEATURE_DIM, ModalitySpec

if TYPE_CHECKING:
    from pipeline.backbone import Backbone


class MumuModule(pl.LightningModule):
    """The model from mumu/model.py plus its loss, optimiser and metrics.

    With `raw_visual=True` the visual inputs are frames (B, S, H, W, 3) uint8, which go through the
    frozen ResNet-50 here, without gradients, and are rounded to float16 like the cache stores them.
    """

    def __init__(self, config: dict, inputs: list[dict], activity_names: list[str], group_names: list[str],
                 raw_visual: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = config_from_dict(config)
        self.specs = {d["name"]: ModalitySpec(**d) for d in inputs}
        self.raw_visual = raw_visual
        self.model = build_model(self.cfg.model, self.specs, len(activity_names), len(group_names),
                                 embed_dim=self.cfg.embed_dim, dropout=self.cfg.dropout,
                                 window=self.cfg.extract.sensor_window,
                                 conv_channels=self.cfg.conv_channels, kernel_size=self.cfg.kernel_size,
                                 sensor_encoder=self.cfg.sensor_encoder, lstm_layers=self.cfg.lstm_layers,
                                 max_pools=self.cfg.max_pools, motion=self.cfg.motion,
                                 visual_norm=self.cfg.visual_norm,
                                 gm_heads=self.cfg.gm_heads, gm_gate=self.cfg.gm_gate, gm_merge=self.cfg.gm_merge,
                                 fusion_init=self.cfg.fusion_init, fusion_norm=self.cfg.fusion_norm,
                                 unimodal_heads=self.cfg.unimodal_aux > 0)
        with_groups = self.cfg.model == "mumu"
        self.val_metrics = ActivityMetrics(len(activity_names), len(group_names), with_groups)
        self.test_metrics = ActivityMetrics(len(activity_names), len(group_names), with_groups)
        # Encoder inputs are standardised per feature with training-set statistics (`fit_input_norm`), so
        # that 2048-d ResNet features and sensor channels in m/s^2 or degrees start on the same scale.
        for name, spec in self.specs.items():
            width = FEATURE_DIM if spec.visual else spec.channels
            self.register_buffer(f"mean_{name}", torch.zeros(width))
            self.register_buffer(f"std_{name}", torch.ones(width))
        self._backbone = None  # raw path only; built on first use, never part of the checkpoint
        self._predictions: list[dict] = []
        self.test_results: dict | None = None  # set by on_test_epoch_end: metrics + predictions
        # adapt_bn: BatchNorm statistics per test DataLoader (one per test subject), set before testing
        self.test_batchnorm: list[BatchNormState] | None = None
        self._trained_batchnorm: BatchNormState | None = None
        # validate_adapted: the validation subjects and a loader over samples (set before fitting); their
        # BatchNorm statistics are re-estimated every validation epoch, for the weights being validated
        self._val_subjects: list[list[Sample]] | None = None
        self._val_loader: Callable[[list[Sample]], Any] | None = None
        self._val_batchnorm: list[BatchNormState] | None = None
        # fusion_targets: training sample id -> target fusion weights (M,) for the fusion_kl term (set before fitting)
        self._fusion_targets: dict[str, torch.Tensor] | None = None
        self._empty_batch = False  # the training step's batch had no usable sample (raw inputs that failed)

    # ---- inputs
    def features(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's inputs as the cache stores them: visual (B, S, 2048), sensor (B, S, W, C). Frames (uint8,
        raw_visual) go through the frozen backbone; features (float: a cache's, or frames already turned into
        features, as evaluate does before it corrupts them) pass as they are."""
        if not self.raw_visual:
            return batch["x"]
        x = dict(batch["x"])
        for name, spec in self.specs.items():
            if spec.visual and x[name].dtype == torch.uint8:
                x[name] = self._frames_to_features(x[name], batch["lengths"][name])
        return x

    def encoder_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        """x as the encoders see it: standardised features (padding is masked by the encoders)."""
        return self.standardise(self.features(batch))

    def standardise(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # mean / std (F,) broadcast over the last axis of (B, S, 2048) visual or (B, S, W, C) sensor inputs
        return {name: (x[name] - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}") for name in self.specs}

    def drop_modalities(self, x: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Modality dropout (training): the modalities a sample loses (`mumu.model.lost_modalities`) become
        missing (length 0, masked out of every fusion) or stay present with every valid step zeroed ("zeros")
        or set to the training mean ("mean"): exactly what the noise study's "drop" / "mean" modes do
        at level 1 (`mumu.noise.blank_steps`)."""
        names = list(self.specs)
        present = torch.stack([lengths[name] > 0 for name in names], dim=1)  # (B, M)
        lost = lost_modalities(present, self.cfg.modality_dropout, self.cfg.modality_dropout_mode)  # (B, M)
        x, lengths = dict(x), dict(lengths)
        kind = self.cfg.modality_dropout_as
        for m, name in enumerate(names):
            if kind == "missing":
                lengths[name] = lengths[name].masked_fill(lost[:, m], 0)
            else:
                hit = valid_steps(x[name], lengths[name], lost[:, m])  # (B, S)
                fill = getattr(self, f"mean_{name}")
                x[name] = blank_steps(x[name], hit, "drop" if kind == "zeros" else "mean", fill)
        return x, lengths

    @torch.no_grad()
    def fit_input_norm(self, loader: Iterable[dict]) -> None:
        """Per-feature mean and std over the valid steps of `loader` (training samples)."""
        sums: dict[str, list[torch.Tensor]] = {name: [] for name in self.specs}
        for batch in loader:
            x = self.features(batch)
            for name, spec in self.specs.items():
                valid = valid_steps(x[name], batch["lengths"][name])  # (B, S)
                steps = x[name][valid]  # (N, 2048) or (N, W, C)
                sums[name].append(steps.reshape(-1, steps.shape[-1]).double())
        for name, chunks in sums.items():
            values = torch.cat(chunks)
            if len(values) < 2:
                continue  # never present in these samples: leave the identity
            std = values.std(0)
            getattr(self, f"mean_{name}").copy_(values.mean(0))
            getattr(self, f"std_{name}").copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def _frames_to_features(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # frames (B, S, H, W, 3) uint8 -> features (B, S, 2048); padded steps stay zero
        valid = valid_steps(frames, lengths)  # (B, S)
        features = torch.zeros(frames.shape[:2] + (FEATURE_DIM,), device=frames.device)
        if valid.any():
            computed = self.backbone(frames[valid].cpu().numpy()).astype(np.float16)  # as the cache stores it
            features[valid] = torch.from_numpy(computed.astype(np.float32)).to(frames.device)
        return features

    @property
    def backbone(self) -> Backbone:
        """The frozen ResNet-50 of the raw path (pipeline.backbone.Backbone), built on first use where the
        module lives; it is not a submodule, so it never enters the checkpoint or the optimiser."""
        if self._backbone is None or self._backbone.device != self.device:
            from pipeline.backbone import Backbone
            self._backbone = Backbone(self.cfg.extract.weights, device=str(self.device))
        return self._backbone

    def set_fusion_targets(self, targets: dict[str, list[float]]) -> None:
        """fusion_targets: the training samples' target fusion weights (`mumu.fusion_targets`); training batches
        pull MuMu's fusion weights toward them. Validation and test samples have none, so their logged loss
        measures fusion_kl from equal weights (epoch selection reads nll or macro-F1, not that loss)."""
        self._fusion_targets = {sample_id: torch.tensor(t) for sample_id, t in targets.items()}

    def forward(self, batch: dict, mixup: Mixup | None = None) -> ModelOutput:
        x, lengths = self.features(batch), batch["lengths"]
        if mixup is not None:
            x, lengths = mixup.inputs(x, lengths)
        if self.training and self.cfg.modality_dropout > 0:
            x, lengths = self.drop_modalities(x, lengths)
        target = None
        if self.training and self._fusion_targets is not None:
            target = torch.stack([self._fusion_targets[i] for i in batch["sample_id"]]).to(self.device)  # (B, M)
        return self.model(self.standardise(x), lengths, target)

    def loss(self, out: ModelOutput, batch: dict) -> torch.Tensor:
        loss = F.cross_entropy(out.logits.float(), batch["label"], label_smoothing=self.cfg.label_smoothing)  # L_t
        if out.group_logits is not None and self.cfg.beta_aux > 0:
            loss = loss + self.cfg.beta_aux * F.cross_entropy(out.group_logits.float(), batch["group"])  # L_aux
        if out.fusion_kl is not None and self.cfg.fusion_kl > 0:
            loss = loss + self.cfg.fusion_kl * out.fusion_kl
        if out.unimodal_logits is not None and self.cfg.unimodal_aux > 0:
            labels = batch["label"][:, None].expand(out.present.shape)  # (B, M)
            # the present modalities' logits, (N_present, K), each against its sample's label
            loss = loss + self.cfg.unimodal_aux * F.cross_entropy(
                out.unimodal_logits[out.present].float(), labels[out.present], label_smoothing=self.cfg.label_smoothing)
        return loss

    # ---- training
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # Dropout randomness depends on (seed, epoch, batch, rank) only: a resumed run repeats an
        # uninterrupted one, and DataLoader workers (which draw from the global RNG when their
        # iterator starts) cannot shift it.
        step_key = (self.cfg.seed * 1_000_003 + self.current_epoch) * 1_000_003 + batch_idx
        torch.manual_seed(step_key * 1_009 + self.global_rank)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._empty_batch = is_empty(batch)
        if self._empty_batch:  # a zero loss that reaches every weight, so that DDP's gradient sync still meets it
            loss = sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        elif self.cfg.mixup > 0:
            mixup = Mixup.draw(batch["lengths"], self.cfg.mixup)
            out = self(batch, mixup)
            loss = (mixup.weight * self.loss(out, batch)
                    + (1 - mixup.weight) * self.loss(out, mixup.partner_labels(batch)))
        else:
            loss = self.loss(self(batch), batch)
        # logged for an empty batch too, with weight 0: every rank then meets the epoch's sync of the mean
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["label"]), sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Every rank's batch empty (the synced gradients are all zero): no update at all, where AdamW would still
        # step along its momentum and decay the weights. Parameters without a gradient are skipped by AdamW.
        if self._empty_batch and not any(p.grad is not None and p.grad.any() for p in self.model.parameters()):
            optimizer.zero_grad(set_to_none=True)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        if self.cfg.warmup > 0:  # one cycle: up to lr over the warm-up, then down to ~0 (both cosine-shaped)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.cfg.lr, total_steps=total_steps,
                                                            pct_start=self.cfg.warmup, anneal_strategy="cos")
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- validation
    def validate_adapted_to(self, subjects: list[list[Sample]], loader: Callable[[list[Sample]], Any]) -> None:
        """validate_adapted: validation DataLoader i (subjects[i]'s samples) runs with BatchNorm statistics
        re-estimated on that subject's inputs, as `adapt_to_test_subjects` does for the test."""
        self._val_subjects, self._val_loader = subjects, loader

    def on_validation_epoch_start(self) -> None:
        if self._val_subjects is not None:  # runs after the EMA callback has swapped the averaged weights in
            with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed: training must not see it
                self._val_batchnorm = [subject_batchnorm_state(self, self._val_loader(samples))
                                       for samples in self._val_subjects]
            self._trained_batchnorm = batchnorm_state(self)

    def on_validation_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._val_batchnorm is not None:
            load_batchnorm_state(self, self._val_batchnorm[dataloader_idx])

    def on_validation_batch_end(self, outputs: Any, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        # restored after every batch: the EMA callback swaps the weights back, buffers included, before
        # the module's own epoch-end hook runs, and must get the trained statistics back
        if self._val_batchnorm is not None:
            load_batchnorm_state(self, self._trained_batchnorm)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_empty(batch):
            return
        out = self(batch)
        self.val_metrics.update(out.logits, batch["label"], out.group_logits, batch["group"], self.loss(out, batch))

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()  # already synced across ranks
        self.val_metrics.reset()
        if metrics["n_samples"] == 0:  # every one left out (mumu.data.PadCollate): nothing to select an epoch by
            raise MumuError(f"no validation sample has a usable input of the chosen modalities "
                            f"({', '.join(self.specs)}); their raw files failed to load (see the run's input_problems/)")
        for name in ("macro_f1", "accuracy", "group_accuracy", "loss", "nll"):
            if metrics[name] is not None:
                # sync_dist: the values are synced already; it tells Lightning so (DDP warned for each metric)
                self.log(f"val/{name}", metrics[name], prog_bar=name in ("macro_f1", "accuracy"), sync_dist=True)

    # ---- test
    def on_test_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.test_batchnorm is not None:  # each test subject's batches run with that subject's statistics
            load_batchnorm_state(self, self.test_batchnorm[dataloader_idx])

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_empty(batch):
            return
        out = self(batch)
        self.test_metrics.update(out.logits, batch["label"], out.group_logits, batch["group"], self.loss(out, batch))
        probs = out.logits.float().softmax(-1).cpu()  # (B, K)
        group_pred = out.group_logits.argmax(-1).cpu().tolist() if out.group_logits is not None else [None] * len(probs)
        for i, sample_id in enumerate(batch["sample_id"]):
            self._predictions.append({
                "sample_id": sample_id, "label": int(batch["label"][i]), "pred": int(probs[i].argmax()),
                "group": int(batch["group"][i]), "group_pred": group_pred[i], "probs": probs[i].tolist()})

    def on_test_epoch_start(self) -> None:
        self._predictions = []
        self._trained_batchnorm = batchnorm_state(self)

    def adapt_to_test_subjects(self, subjects: list[list[Sample]], loader: Callable[[list[Sample]], Any]) -> None:
        """adapt_bn: re-estimate the BatchNorm statistics on each test subject's inputs (`loader(samples)`
        yields its batches); testing then runs subject i's DataLoader with statistics i (mumu.adapt)."""
        self.test_batchnorm = [subject_batchnorm_state(self, loader(samples)) for samples in subjects]

    def on_test_epoch_end(self) -> None:
        metrics = self.test_metrics.compute()  # synced: the whole test set, not this rank's shard
        self.test_metrics.reset()
        load_batchnorm_state(self, self._trained_batchnorm)
        predictions = self._predictions
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shards: list[list[dict]] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
            torch.distributed.all_gather_object(shards, predictions)
            predictions = [p for shard in shards for p in shard]
        self.test_results = {"metrics": metrics, "predictions": sorted(predictions, key=lambda p: p["sample_id"])}
        for name in ("macro_f1", "accuracy", "group_accuracy"):
            if metrics[name] is not None:
                self.log(f"test/{name}", metrics[name], sync_dist=True)  # synced already, as val's
