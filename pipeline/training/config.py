"""The ``train`` stage's settings (params.yaml ``train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.training.augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of params.yaml; the defaults are params.yaml's (a test keeps them equal). The
    paper: Adam, lr 2e-4, weight decay 1e-4, batch >= 12, early stop after 20 epochs without Dice gain.

    resume: continue a run with the same params, data and code from its last checkpoint (also a run that
    finished: its result is reused); false retrains from scratch.
    schedule / warmup_epochs: the learning-rate curve over max_epochs (see pipeline.training.schedule);
        the warm-up is cut to max_epochs - 1 epochs when longer (short tuning trials).
    ce_weight / dice_weight: weights of cross-entropy and soft Dice in the loss.
    select: which checkpoint a fold publishes: "best" (highest validation Dice) or "last" (the end of the
    schedule; unbiased when the same validation patients are then evaluated).
    deep_supervision: auxiliary losses on this many lower decoder levels (0 = off; see
    pipeline.training.deep_supervision). Training only: the published model is unchanged.
    bf16: bf16 autocast where the hardware has it natively: CUDA, and CPUs with AVX512-BF16 or AMX
        (pipeline.models.precision); plain fp32 on other CPUs.
    channels_last: keep weights and activations in NHWC memory order, which the CPU's convolution
        kernels run faster (U-Net 1.4x per step here); the numbers are the same up to rounding.
    val_every: score the validation patients every this many epochs (and always after the last one);
        with ``select: last`` the score only monitors, so a sparser check saves its share of the epoch.
    loader: where batches are made. "workers": a DataLoader (``num_workers`` processes) reads and
        augments each sample on the CPU. "device": the fold's clips are copied to the training device
        once and each batch is gathered and augmented there in a few batched operations
        (pipeline.training.device_data, .batch_augment): the same epoch order, and transforms of the same
        distributions drawn for the whole epoch at once (seeded by seed and epoch; ClipDataset seeds a
        generator per sample, which costs a fifth of a fast epoch); ``num_workers`` is then unused. "auto":
        "device" on CUDA (the CPU path cannot feed a fast GPU), "workers" on the CPU.
    cuda_graph: replay each full batch's forward, loss and backward from one CUDA graph
        (pipeline.training.steps): one launch per step instead of hundreds, which is what a small network
        at 96 px waits on. "auto": on with the "device" loader on one CUDA GPU; "on" asks for it (CUDA,
        "device" loader, one process); "off": eager steps. A failed capture falls back to eager steps.
    """

    model: str = "deunet"
    model_args: dict[str, Any] = field(
        default_factory=lambda: {"base_channels": 8, "depth": 4, "norm": "batch"}
    )
    radius: int = 1
    folds: tuple[int, ...] = (0,)
    max_epochs: int = 24
    batch_size: int = 12
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 24
    seed: int = 0
    resume: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True
    num_workers: int = 0
    threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    schedule: Literal["constant", "poly", "cosine"] = "poly"
    warmup_epochs: int = 1
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    select: Literal["best", "last"] = "last"
    deep_supervision: int = 0
    channels_last: bool = True
    val_every: int = 1
    loader: Literal["auto", "device", "workers"] = "auto"
    checkpoint_every_s: float = 0.0
    cuda_graph: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        for name, low in (
            ("max_epochs", 1),
            ("batch_size", 1),
            ("patience", 1),
            ("num_workers", 0),
            ("threads", 0),
            ("warmup_epochs", 0),
            ("deep_supervision", 0),
            ("val_every", 1),
        ):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.checkpoint_every_s < 0:
            raise ValueError(f"checkpoint_every_s must be >= 0, got {self.checkpoint_every_s}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.ce_weight < 0 or self.dice_weight < 0 or self.ce_weight + self.dice_weight == 0:
            raise ValueError(
                f"ce_weight and dice_weight must be >= 0 and not both 0, got {self.ce_weight}, {self.dice_weight}"
            )
        if not self.folds:
            raise ValueError("folds must name at least one fold")
        if self.cuda_graph not in ("auto", "on", "off"):
            raise ValueError(f"cuda_graph must be auto, on or off, got {self.cuda_graph!r}")

    def model_config(self) -> dict[str, Any]:
        return {"radius": self.radius, **self.model_args}
