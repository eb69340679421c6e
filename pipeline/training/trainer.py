"""Train one cross-validation fold: Adam, CE + soft Dice, early stopping on validation Dice, resumable.

The trainer orchestrates; datasets, augmentation, checkpoints and the distributed helpers live beside it.
Batches come from DataLoader workers on the CPU or, on CUDA (train.loader), from the fold's clips held on
the device and augmented there in batches; checkpoints are written by a background thread.
Every epoch ends with a checkpoint (``last.pt``) holding everything needed to continue, so a training
killed at any point resumes from its last finished epoch and, on the CPU with a fixed seed, reaches the
same weights as an uninterrupted run (epoch order and augmentation are seeded per epoch).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.checkpoint.io import check_compatible, checkpoint_payload, load_checkpoint, snapshot
from pipeline.checkpoint.view import training_view
from pipeline.errors import ConfigError
from pipeline.models import DiceCELoss, SegmentationModel, build_model, class_map
from pipeline.models.device import resolve_device
from pipeline.models.precision import autocast
from pipeline.preprocessing.store import ClipStore
from pipeline.training import distributed as dist
from pipeline.training.batch_augment import augment_batch, epoch_table
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import ClipDataset
from pipeline.training.deep_supervision import DeepSupervision
from pipeline.training.device_data import DeviceClips
from pipeline.training.schedule import learning_rate
from pipeline.training.steps import GraphedStep, LossOf, Step, make_step
from pipeline.training.writer import CheckpointWriter
from pipeline.vocabulary import STRUCTURES

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fold: int
    best_dice: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    resumed_from: int | None
    model_file: str = "best.pt"  # the checkpoint in the fold's work folder that train.select publishes
    steps: str = "eager"  # how the steps ran: "eager", "cuda graph (N replays)" or why a capture failed


def make_model(cfg: TrainConfig, store: ClipStore, train_idx: np.ndarray) -> SegmentationModel:
    model = build_model(cfg.model, **cfg.model_config())
    set_prior = getattr(model, "set_prior", None)
    if callable(set_prior):  # GridNet's shape prior: an atlas of the training labels
        set_prior(torch.from_numpy(np.asarray(store.labels[np.sort(train_idx)]).astype(np.int64)))
    return model


def make_optimizer(params: Any, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """The paper's Adam; on CUDA its fused kernel (one launch for every parameter instead of a few per
    tensor group: the same update to rounding, and launches are what a small network at 96 px waits on)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


def prepare_device(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per shape and keep the fastest: training
    repeats a few fixed shapes thousands of times; and let fp32 matrix products use TF32 tensor cores, as
    cuDNN's fp32 convolutions already do by default (the deformable convolution mixes its taps in fp32:
    pipeline.models.deform_conv). Process-wide switches, as CUDA trainers set them; an fp32 comparison
    that must be strict turns TF32 off itself (benchmarks.gpu_check's cpu_vs_cuda)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True


def resolve_loader(cfg: TrainConfig, device: torch.device) -> Literal["device", "workers"]:
    """train.loader with "auto" decided: batches made on the device on CUDA, by DataLoader workers on the CPU."""
    if cfg.loader == "auto":
        return "device" if device.type == "cuda" else "workers"
    return cfg.loader


def resolve_cuda_graph(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether training steps replay a CUDA graph: train.cuda_graph with "auto" decided (see TrainConfig).

    Raises:
        ConfigError: "on" where a graph cannot run (no CUDA, the "workers" loader, or several processes).
    """
    possible = device.type == "cuda" and resolve_loader(cfg, device) == "device" and dist.world_size() == 1
    if cfg.cuda_graph == "on" and not possible:
        raise ConfigError(
            f"train.cuda_graph: on needs one CUDA process with the device loader; here the device is {device}, "
            f"the loader {resolve_loader(cfg, device)!r} and {dist.world_size()} process(es)"
        )
    return possible and cfg.cuda_graph != "off"


@torch.no_grad()
def validation_dice(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    bf16: bool,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Hard Dice per structure over all validation pixels (2D samples pooled), and their mean.

    ``batches`` yields (B, 2r+1, S, S) clips and (B, S, S) labels, on the CPU (a DataLoader) or already on
    ``device``. The pixel counts add up on the device (integers: exact in any order) and come back in one
    transfer at the end, so the device never waits for the host between batches.
    """
    model.eval()
    inter = torch.zeros(4, dtype=torch.int64, device=device)
    total = torch.zeros(4, dtype=torch.int64, device=device)
    for clip, label in batches:
        clip = clip.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        label = label.to(device, non_blocking=True)
        with autocast(device, bf16):
            pred = class_map(model(clip))
        for c in STRUCTURES.values():
            p, g = pred == c, label == c
            inter[c] += (p & g).sum()
            total[c] += p.sum() + g.sum()
    inter, total = inter.cpu().double(), total.cpu().double()
    scores = {name: float(2 * inter[c] / total[c]) if total[c] else 1.0 for name, c in STRUCTURES.items()}
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


@dataclass
class _Fitting:
    """What trains: the model (and its deep-supervision heads), the optimizer, the loss, the memory order."""

    model: SegmentationModel
    aux: DeepSupervision | None
    optimizer: torch.optim.Optimizer
    loss_fn: DiceCELoss
    memory_format: torch.memory_format
    step: Step | None = None  # set once the network is wrapped (train_fold)

    def loss_of(self, net: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> LossOf:
        """The loss of a batch on ``device`` through ``net`` (forward under bf16 autocast as configured)."""

        def loss(clip: torch.Tensor, label: torch.Tensor, cache: bool) -> torch.Tensor:
            clip = clip.contiguous(memory_format=self.memory_format)
            with autocast(device, cfg.bf16, cache):
                logits = net(clip)
            if self.aux is None:
                return self.loss_fn(logits.float(), label)
            return self.aux.loss(logits, label, self.loss_fn)

        return loss


def _fold_indices(
    store: ClipStore, train_ids: list[str], val_ids: list[str], fold: int
) -> tuple[np.ndarray, np.ndarray]:
    """The store's sample indices of the fold's training and of its validation patients (both needed)."""
    train_idx, val_idx = store.indices_for(train_ids), store.indices_for(val_ids)
    if not len(train_idx) or not len(val_idx):
        raise ValueError(
            f"fold {fold}: {len(train_idx)} training and {len(val_idx)} validation samples; need both"
        )
    return train_idx, val_idx


def _build(cfg: TrainConfig, store: ClipStore, train_idx: np.ndarray, device: torch.device) -> _Fitting:
    """The model, heads, optimizer and loss of ``cfg`` (initialised from torch's generator, in this order)."""
    model = make_model(cfg, store, train_idx).to(device)
    crop = cfg.augment.crop
    if crop and (crop > store.size or crop % model.input_multiple):
        raise ConfigError(
            f"train.augment.crop: {crop} must be at most the store's size {store.size} and a multiple of "
            f"{model.input_multiple} (the input multiple of {cfg.model} with these model_args)"
        )
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    aux = (
        DeepSupervision(model, cfg.deep_supervision, model.num_classes).to(device)
        if cfg.deep_supervision
        else None
    )
    params = [*model.parameters(), *(aux.parameters() if aux is not None else ())]
    optimizer = make_optimizer(params, cfg.lr, cfg.weight_decay, device)
    loss_fn = DiceCELoss(ce_weight=cfg.ce_weight, dice_weight=cfg.dice_weight)
    return _Fitting(model, aux, optimizer, loss_fn, memory_format)


def _resume(last: Path, fit: _Fitting, cfg: TrainConfig, fold: int) -> tuple[dict[str, Any], int | None]:
    """The training state to continue from, and the epoch it resumes after (None: a fresh start).

    ``last`` (the previous run's checkpoint), when there, restores weights, heads, optimizer and torch's
    generator; a checkpoint of another model or other model arguments is refused.
    """
    state: dict[str, Any] = {
        "epoch": 0,
        "best_dice": -math.inf,
        "best_epoch": 0,
        "history": [],
        "finished": False,
    }
    if not last.is_file():
        return state, None
    ckpt = load_checkpoint(last)
    check_compatible(last, ckpt, cfg.model, fit.model.config)
    fit.model.load_state_dict(ckpt["state_dict"])
    if fit.aux is not None:
        fit.aux.load_state_dict(ckpt["aux_heads"])
    fit.optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    state = {k: ckpt[k] for k in state}
    log.info("fold %d: resuming from %s after epoch %d", fold, last, state["epoch"])
    return state, int(state["epoch"])


def _loader(dataset: ClipDataset, cfg: TrainConfig, **kwargs: Any) -> DataLoader:
    """A DataLoader of ``dataset``; its ``cfg.num_workers`` worker processes start from a forkserver.

    A plain fork would copy this process's threads and at-fork hooks into each worker: after an in-process
    Prefect flow, forked workers exit with code 1 when the epoch ends. The store travels to the workers as
    its path (ClipStore pickles so), not as copies of its arrays. The server imports the dataset's modules
    (torch among them) once, so a new epoch's workers start in ~0.1 s; like any non-fork start method, a
    script that trains with workers needs the ``if __name__ == "__main__":`` guard.
    """
    if cfg.num_workers == 0:
        return DataLoader(dataset, batch_size=cfg.batch_size, **kwargs)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([ClipDataset.__module__])  # no effect once the server runs
    return DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                      multiprocessing_context=context, **kwargs)  # fmt: skip


def _train_epoch(net: torch.nn.Module, fit: _Fitting, train_set: ClipDataset, cfg: TrainConfig, fold: int,
                 epoch: int, device: torch.device) -> tuple[list[float], float]:  # fmt: skip
    """One epoch over ``train_set`` in its seeded order; the batch losses and the last learning rate."""
    train_set.set_epoch(epoch)
    order = np.random.default_rng([cfg.seed, fold, epoch]).permutation(len(train_set))
    loader = _loader(train_set, cfg, sampler=dist.shard(order).tolist())
    net.train()
    losses = []
    n_batches = len(loader)
    for batch, (clip, label) in enumerate(loader):
        lr = learning_rate(cfg.lr, cfg.schedule, epoch - 1 + batch / n_batches, cfg.max_epochs,
                           min(cfg.warmup_epochs, cfg.max_epochs - 1))  # fmt: skip
        for group in fit.optimizer.param_groups:
            group["lr"] = lr
        clip, label = clip.to(device, non_blocking=True), label.to(device, non_blocking=True)
        assert fit.step is not None
        losses.append(float(fit.step(clip, label)))
    return losses, lr


def _train_epoch_device(net: torch.nn.Module, fit: _Fitting, clips: DeviceClips, cfg: TrainConfig, fold: int,
                        epoch: int, device: torch.device) -> tuple[list[float], float]:  # fmt: skip
    """``_train_epoch`` with batches gathered and augmented on the device (train.loader "device").

    The same seeded order, shard and per-batch learning rate; the transforms are drawn for the whole
    epoch up front (pipeline.training.batch_augment.epoch_table) and uploaded at once. Losses stay on the device until the epoch ends:
    one host synchronisation per epoch instead of one per step, so the host queues work ahead.
    """
    order = np.random.default_rng([cfg.seed, fold, epoch]).permutation(len(clips))
    positions = dist.shard(order)
    table = epoch_table(clips.indices, cfg.seed, epoch, cfg.augment, clips.size, device)
    on_device = torch.from_numpy(positions).to(device)
    net.train()
    losses = []
    n_batches = -(-len(positions) // cfg.batch_size)
    for batch in range(n_batches):
        lr = learning_rate(cfg.lr, cfg.schedule, epoch - 1 + batch / n_batches, cfg.max_epochs,
                           min(cfg.warmup_epochs, cfg.max_epochs - 1))  # fmt: skip
        for group in fit.optimizer.param_groups:
            group["lr"] = lr
        part = slice(batch * cfg.batch_size, (batch + 1) * cfg.batch_size)
        pos = on_device[part]
        clip, label = augment_batch(*clips.batch(pos), table.take(pos, positions[part]))
        assert fit.step is not None
        losses.append(fit.step(clip, label))
    return torch.stack(losses).double().cpu().tolist(), lr


def _record_epoch(state: dict[str, Any], row: dict[str, float], cfg: TrainConfig) -> bool:
    """Add ``row`` to ``state``: history, epoch, best score, and whether training is finished (patience
    run out or the last epoch). Returns whether the epoch improved on the best validation Dice."""
    epoch, score = int(row["epoch"]), row["val_dice"]
    state["history"] = [*state["history"], row]
    state["epoch"] = epoch
    improved = score > state["best_dice"]  # NaN (an unscored epoch) never improves
    if improved:
        state["best_dice"], state["best_epoch"] = score, epoch
    state["finished"] = epoch - int(state["best_epoch"]) >= cfg.patience or epoch >= cfg.max_epochs
    return bool(improved)


def _epoch_checkpoints(work_dir: Path, fit: _Fitting, cfg: TrainConfig, store: ClipStore, fold: int,
                       state: dict[str, Any], improved: bool, view: dict[str, list[float]],
                       with_last: bool = True) -> list[tuple[Path, dict[str, Any]]]:  # fmt: skip
    """``best.pt`` on improvement, ``last.pt`` (everything a resume needs), ``final.pt`` at the end: the
    files to write, in this order, with payloads copied to the CPU now (training goes on while they are
    written; see pipeline.training.writer).

    ``view`` is the training patients' field of view (pipeline.checkpoint.view.View): inference crops a
    larger field of view around the heart to it, so the network sees the framing it was trained on.
    """
    epoch, score = state["epoch"], state["history"][-1]["val_dice"]
    common = {"params": asdict(cfg), "preprocess": store.meta["config"], "fold": fold, "view": view}
    with_last = with_last or state["finished"]  # without last.pt, no need to copy Adam's moments
    last = snapshot(checkpoint_payload(fit.model, fit.optimizer if with_last else None, **common, torch_rng=torch.get_rng_state(),
                    aux_heads=fit.aux.state_dict() if fit.aux is not None else None, **state))  # fmt: skip
    # best.pt and final.pt: the same weights (one copy shared), without optimizer state
    model_only = {**last, "optimizer": None, **common, "epoch": epoch, "val_dice": score}
    for key in ("torch_rng", "aux_heads", *state):
        if key != "epoch":
            model_only.pop(key)
    files = [(work_dir / "best.pt", model_only)] if improved else []
    if with_last:
        files.append((work_dir / "last.pt", last))
    if state["finished"]:  # the end of the schedule: train.select = last
        files.append((work_dir / "final.pt", model_only))
    return files


def _data(cfg: TrainConfig, store: ClipStore, train_idx: np.ndarray, val_idx: np.ndarray,
          device: torch.device) -> tuple[Callable[..., tuple[list[float], float]], Any,
                                         Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]]:  # fmt: skip
    """The epoch function, its training data and a maker of validation batches, for train.loader.

    "device": the fold's clips copied to ``device`` once; validation in batches of 4x the training batch
    (no gradients, so four times the clips fit). "workers": ClipDataset and DataLoaders, as before.
    """
    if resolve_loader(cfg, device) == "device":
        train_clips = DeviceClips(store, train_idx, cfg.radius, device)
        val_clips = DeviceClips(store, val_idx, cfg.radius, device)
        return _train_epoch_device, train_clips, lambda: val_clips.batches(4 * cfg.batch_size)
    train_set = ClipDataset(store, train_idx, cfg.radius, cfg.augment, seed=cfg.seed)
    val_loader = _loader(ClipDataset(store, val_idx, cfg.radius), cfg)
    return _train_epoch, train_set, lambda: val_loader


def train_fold(
    store: ClipStore,
    train_ids: list[str],
    val_ids: list[str],
    cfg: TrainConfig,
    work_dir: Path,
    fold: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    stop: Callable[[dict[str, float]], bool] | None = None,
) -> FoldResult:
    """Train (or resume) one fold; checkpoints go to ``work_dir`` (``last.pt`` every epoch, ``best.pt``).

    ``stop(row)``, asked after each epoch before its checkpoints are written, ends the training at that epoch
    when it returns True: the epoch is saved as the end of the schedule (``final.pt`` and a ``last.pt`` that a
    resume takes as finished), so what is published is the weights trained, never an older ``last.pt``.
    One process only.
    """
    if stop is not None and dist.world_size() > 1:
        raise ValueError(
            "train_fold: stop is for a single process (the ranks would disagree on the last epoch)"
        )
    device = resolve_device(cfg.device, index=dist.local_rank())
    prepare_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed * 1000 + fold)
    train_idx, val_idx = _fold_indices(store, train_ids, val_ids, fold)
    fit = _build(cfg, store, train_idx, device)
    train_patients = set(train_ids)
    view = training_view([p for p in store.patients if p["patient"] in train_patients]).as_record()
    state, resumed_from = _resume(work_dir / "last.pt", fit, cfg, fold)

    net = dist.wrap(fit.model, device)
    fit.step = make_step(fit.optimizer, fit.loss_of(net, cfg, device), graph=resolve_cuda_graph(cfg, device),
                         batch_size=cfg.batch_size, device=device)  # fmt: skip
    epoch_fn, train_data, val_batches = _data(cfg, store, train_idx, val_idx, device)
    # clips trained per epoch on all ranks together (the shards are padded to equal length): clips / train_s
    # is a real epoch's training throughput, comparable with the model's raw step rate
    n_clips = float(len(dist.shard(np.arange(len(train_idx)))) * dist.world_size())
    main_process = dist.is_main()
    bar = tqdm(total=cfg.max_epochs, initial=int(state["epoch"]), desc=f"fold {fold} {cfg.model}",
               disable=not (progress and main_process), unit="epoch")  # fmt: skip
    last_written = time.monotonic()
    with CheckpointWriter() as writer:  # joined (and its error raised) before train_fold returns
        while not state["finished"] and state["epoch"] < cfg.max_epochs:
            epoch = int(state["epoch"]) + 1
            start = time.perf_counter()
            losses, lr = epoch_fn(net, fit, train_data, cfg, fold, epoch, device)
            train_s = time.perf_counter() - start  # the losses came back: the device has finished the epoch
            if epoch % cfg.val_every == 0 or epoch >= cfg.max_epochs:
                val = validation_dice(fit.model, val_batches(), device, cfg.bf16, fit.memory_format)
            else:  # not scored this epoch: NaN never counts as an improvement
                val = dict.fromkeys([*STRUCTURES, "mean"], math.nan)
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val["mean"], "lr": lr,
                   **{f"val_dice_{k}": v for k, v in val.items() if k != "mean"},
                   "seconds": time.perf_counter() - start, "train_s": train_s, "clips": n_clips}  # fmt: skip
            improved = _record_epoch(state, row, cfg)
            if stop is not None and stop(row):  # asked every epoch, the last one too
                state["finished"] = True
            due = time.monotonic() - last_written >= cfg.checkpoint_every_s
            if main_process and (due or improved or state["finished"]):
                writer.submit(_epoch_checkpoints(work_dir, fit, cfg, store, fold, state, improved, view, due))
                last_written = time.monotonic() if due else last_written
            if main_process and on_epoch is not None:
                on_epoch(row)
            dist.barrier()
            bar.update(1)
            bar.set_postfix(
                loss=f"{row['train_loss']:.3f}", dice=f"{val['mean']:.3f}", best=f"{state['best_dice']:.3f}"
            )
    bar.close()
    return FoldResult(fold, float(state["best_dice"]), int(state["best_epoch"]), int(state["epoch"]),
                      list(state["history"]), resumed_from, "final.pt" if cfg.select == "last" else "best.pt",
                      _describe(fit.step))  # fmt: skip


def _describe(step: Step | None) -> str:
    """FoldResult.steps: how the fold's steps ran."""
    if isinstance(step, GraphedStep):
        if step.failed is not None:
            return f"eager: the CUDA graph capture failed ({step.failed})"
        return f"cuda graph ({step.replays} replays, {step.eager_steps} eager steps)"
    return "eager"
