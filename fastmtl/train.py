"""``fastmtl train``: the training loop.

AMP, ``torch.compile``, DistributedDataParallel (under ``torchrun``), atomic checkpoints,
exact resume, TensorBoard, metrics.jsonl and summary.json. One run directory holds::

    config.json     the fully resolved configuration
    metrics.jsonl   one JSON line per evaluation
    summary.json    {"best": {...}, "final": {...}, "baselines": {...}, "images_per_second", "wall_seconds"}
    last.pt, best.pt
    events.*        TensorBoard (losses, metrics, LR, prediction images, depth histograms)

Exact resume: the data order and every augmentation are functions of (seed, epoch, sample
index) (:class:`ResumableBatchSampler`), so a resumed run sees the same batches; model,
optimizer, scheduler, scaler and RNG state come from ``last.pt``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from . import data as fdata
from .checkpoint import FORMAT, load_checkpoint, save_atomic
from .config import Config, ConfigError
from .errors import TrainingDiverged
from .evaluate import amp_dtype_for, autocast_context, evaluate
from .losses import MultiTaskLoss
from .models import build_model
from .weighting.training import WeightedTrainStep, method_for_run, param_groups

# The CPU budget used when no --epochs / --max-steps / --size is given on a CPU device:
# about 10 minutes of training on 2 cores for the default model (see README).
CPU_BUDGET_STEPS = 200
CPU_BUDGET_SIZE = (64, 128)
GPU_EPOCHS = 16
MAX_BAD_STEPS = 10  # consecutive non-finite losses before training stops


# ---------------------------------------------------------------------------------------------
# runtime: device, distributed, precision


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: Optional[torch.dtype] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(cfg: Config) -> Runtime:
    """Device, process group (when started by torchrun) and autocast dtype for ``cfg``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(cfg.device)
        except RuntimeError as e:
            raise ConfigError(f"--device {cfg.device!r}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {cfg.device}: CUDA is not available on this machine")
        if device.type == "cuda" and world_size > 1:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size, amp_dtype_for(cfg.amp, device))


def resolve_config(cfg: Config, device: torch.device) -> Config:
    """Fill the budget fields left open: the full recipe on GPU, the CPU budget on CPU."""
    if cfg.epochs is None and cfg.max_steps is None:
        if device.type == "cpu":
            cfg.max_steps = CPU_BUDGET_STEPS
            if cfg.size is None:
                cfg.size = CPU_BUDGET_SIZE
        cfg.epochs = GPU_EPOCHS
    if cfg.size is None:
        cfg.size = (128, 256)
    if cfg.fused is None:
        from .kernels import kernels_available

        cfg.fused = kernels_available(device)
    return cfg.validate()


# ---------------------------------------------------------------------------------------------
# data order that survives a restart


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableBatchSampler(Sampler):
    """Batches of ``(index, augmentation seed)`` for one epoch, sharded over ranks.

    The permutation depends only on ``(seed, epoch)``; ``start_batch`` skips batches already
    trained on before a restart. Incomplete last batches are dropped.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        per_rank = order[self.rank::self.world_size]
        for b in range(self.start_batch, len(self)):
            idx = per_rank[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, augmentation_seed(self.seed, self.epoch, i)) for i in idx]


class SeededTransform(Dataset):
    """Applies ``transform(sample, generator)`` with a torch generator seeded from the sampler's key."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, 0)
        sample = self.base[index]  # None: a bad sample under --on-bad-sample skip
        return None if sample is None else self.transform(sample, torch.Generator().manual_seed(seed))


def make_loaders(cfg: Config, root: Path, rt: Runtime):
    train_set = fdata.SegDepthFolder(root, "train", kind=cfg.dataset, on_bad_sample=cfg.on_bad_sample)
    val_set = fdata.SegDepthFolder(root, "val", kind=cfg.dataset, transform=fdata.eval_transform(multiple=32),
                                   on_bad_sample=cfg.on_bad_sample)
    if len(train_set) < cfg.batch_size * rt.world_size:
        raise ConfigError(f"--batch-size {cfg.batch_size}: the train split of {root} has only {len(train_set)} samples")
    sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, cfg.seed, rt.rank, rt.world_size)
    pin = rt.device.type == "cuda"
    # own generators: creating a loader iterator must not consume the global RNG (exact resume)
    common = dict(num_workers=cfg.workers, pin_memory=pin, persistent_workers=cfg.workers > 0)
    train_loader = DataLoader(SeededTransform(train_set, fdata.train_transform(cfg.size)), batch_sampler=sampler,
                              collate_fn=fdata.collate_skip_bad, generator=torch.Generator().manual_seed(cfg.seed),
                              **common)
    val_loader = fdata.build_loader(val_set, cfg.batch_size, shuffle=False, workers=cfg.workers, seed=cfg.seed)
    return train_loader, val_loader, sampler


# ---------------------------------------------------------------------------------------------
# the run


def check_output_dir(out: Path) -> None:
    """Fail before any training time is spent if ``out`` cannot hold checkpoints."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks check at the same time
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: not writable ({e.strerror or e})") from None


def poly_schedule(total_steps: int):
    return lambda step: max(1e-6, (1.0 - min(step, total_steps) / total_steps) ** 0.9)


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class Run:
    """One training run: built from a config (new) or from a run directory (resume)."""

    def __init__(self, cfg: Config, resume: Optional[str] = None):
        if resume is not None:
            ckpt = load_checkpoint(Path(resume) / "last.pt")
            cfg = Config.from_dict(ckpt["config"])
        else:
            ckpt = None
        self.rt = setup_runtime(cfg)
        self.cfg = cfg = resolve_config(cfg, self.rt.device)
        self.out = Path(cfg.out)
        check_output_dir(self.out)
        torch.manual_seed(cfg.seed)

        root = Path(cfg.data_root) if cfg.data_root else self._default_data_root()
        if not root.is_dir():
            raise ConfigError(f"--data-root {root}: no such directory")
        self.info = fdata.dataset_info(root, cfg.dataset)
        self.normalizer = fdata.DepthNormalizer.from_stats(cfg.depth_norm, self.info.depth_stats)
        self.train_loader, self.val_loader, self.sampler = make_loaders(cfg, root, self.rt)
        self.outputs_desc = {"semseg": self.info.num_classes, "depth": 1}

        self.model = build_model(cfg, self.outputs_desc, fused=cfg.fused).to(self.rt.device)
        if self.rt.distributed and self.rt.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = len(self.sampler)
        # task weighting (fastmtl.weighting; None: fixed weights, the loss's own) -----------------
        self.weighting = method_for_run(cfg, list(self.outputs_desc), self.steps_per_epoch)
        if self.weighting is not None:
            self.weighting.to(self.rt.device)
        self.optimizer = make_optimizer(cfg, param_groups(self.model, self.weighting))
        # -----------------------------------------------------------------------------------------
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, poly_schedule(self.total_steps))
        self.scaler = torch.amp.GradScaler(self.rt.device.type, enabled=self.rt.amp_dtype == torch.float16)
        self.loss_fn = MultiTaskLoss(cfg.weight_semseg, cfg.weight_depth, cfg.depth_loss, self.normalizer,
                                     ignore_index=self.info.ignore_index)
        self.step, self.best, self.skipped_samples = 0, None, 0
        if ckpt is not None:
            self._restore(ckpt)

        self.train_model = self.model
        # gradient methods synchronise per-task gradients themselves (fastmtl.weighting.engine)
        if self.rt.distributed and (self.weighting is None or self.weighting.kind == "loss"):
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.rt.device.index] if self.rt.device.type == "cuda" else None)
        self.step_loss = self.loss_fn
        if cfg.compile:
            if cfg.fused:
                # Inductor (seen with torch 2.13 on CPU) reorders the backward of the fused attention's
                # conv + channel slices wrongly when optimising for peak memory: gradients come out wrong
                import torch._inductor.config as inductor_config

                inductor_config.reorder_for_peak_memory = False
            self.train_model = torch.compile(self.train_model)
            self.step_loss = torch.compile(self.loss_fn)
        self.weighted_step = None if self.weighting is None else WeightedTrainStep(
            self.weighting, self.model, self.train_model, self.step_loss, list(self.outputs_desc),
            cfg.weighting_grads, self.rt.world_size, cfg.compile)
        self.writer = None

    def _default_data_root(self) -> Path:
        """The built-in synthetic set in the user cache, generated once (by rank 0)."""
        if self.cfg.dataset != "synthetic":
            raise ConfigError(f"--dataset {self.cfg.dataset} needs --data-root DIR")
        if self.rt.is_main:
            fdata.ensure_default_dataset(progress=not self.cfg.quiet)
        if self.rt.distributed:
            dist.barrier()
        return fdata.default_data_root()

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, metrics: Optional[Dict[str, float]] = None) -> Dict:
        rng = {"torch": torch.get_rng_state()}
        if self.rt.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.rt.device)
        return {
            "format": FORMAT, "version": 1, "config": self.cfg.to_dict(), "outputs_desc": self.outputs_desc,
            "dataset": dataclasses.asdict(self.info), "normalizer": self.normalizer.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "metrics": metrics or {}, "best": self.best, "rng": rng,
            "weighting": self.weighting.state_dict() if self.weighting is not None else {},
        }

    def _restore(self, ckpt: Dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.weighting is not None:
            self.weighting.load_state_dict(ckpt["weighting"])
        self.step, self.best = int(ckpt["step"]), ckpt["best"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and self.rt.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.rt.device)

    # -- logging ----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.rt.is_main:
            from tqdm import tqdm

            tqdm.write(message)

    def _tensorboard(self):
        if self.writer is None and self.rt.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out))
        return self.writer

    def _log_images(self, writer) -> None:
        """Prediction panels and depth histograms (report Fig. 22) for the first val batch."""
        from .data.classes import colorize

        batch = next(fdata.nonempty_batches(self.val_loader))
        self.model.eval()
        with torch.no_grad(), autocast_context(self.rt.device, self.rt.amp_dtype):
            out = self.model(batch["rgb"][:4].to(self.rt.device))
        self.model.train()
        seg = out["semseg"][-1] if isinstance(out["semseg"], list) else out["semseg"]
        depth = out["depth"][-1] if isinstance(out["depth"], list) else out["depth"]
        labels = seg.argmax(1).cpu().numpy()
        writer.add_images("val/semseg_pred", np.stack([colorize(l) for l in labels]), self.step, dataformats="NHWC")
        writer.add_images("val/semseg_gt", np.stack([colorize(l) for l in batch["semseg"][:4].numpy()]), self.step,
                          dataformats="NHWC")
        depth_m = self.normalizer.denormalize(depth.float()).cpu()
        lo, hi = self.info.depth_range
        writer.add_images("val/depth_pred", (1 - (depth_m.clamp(lo, hi).log() - math.log(lo)) / math.log(hi / lo)), self.step)
        target = batch["depth"]
        valid = torch.isfinite(target) & (target > 0)
        writer.add_histogram("depth/target_normalized", self.normalizer.normalize(target[valid]), self.step)
        writer.add_histogram("depth/pred_normalized", depth.float().flatten().cpu(), self.step)

    # -- loop -------------------------------------------------------------------------------

    def train_step(self, batch) -> Tuple[float, Dict[str, float]]:
        dev = self.rt.device
        memory_format = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        rgb = batch["rgb"].to(dev, non_blocking=True).contiguous(memory_format=memory_format)
        semseg = batch["semseg"].to(dev, non_blocking=True)
        depth = batch["depth"].to(dev, non_blocking=True)
        if self.weighted_step is not None:  # fastmtl.weighting does forward, backward and the step
            return self.weighted_step(rgb, semseg, depth, lambda: autocast_context(dev, self.rt.amp_dtype),
                                      self.optimizer, self.scaler, self.scheduler)
        with autocast_context(dev, self.rt.amp_dtype):
            out = self.train_model(rgb)
        loss, parts = self.step_loss(out, semseg, depth)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss).item():
            return float("nan"), {}
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item(), {k: v.item() for k, v in parts.items()}

    def evaluate(self) -> Dict[str, float]:
        metrics = evaluate(self.model, self.val_loader, self.normalizer, self.info.num_classes, self.info.depth_range,
                           self.rt.device, self.rt.amp_dtype, self.cfg.channels_last, self.info.ignore_index)
        return metrics

    def run(self, stop_after: Optional[int] = None) -> Dict:
        """Train to the end (or until ``stop_after`` steps, a simulated interruption). Returns summary.json."""
        from tqdm import tqdm

        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            (self.out / "config.json").write_text(cfg.to_json())
        eval_every = cfg.eval_every or self.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=self.step, disable=cfg.quiet or not rt.is_main,
                   desc="train", unit="step", dynamic_ncols=True)
        start, eval_time, images, bad_steps, last_metrics = time.time(), 0.0, 0, 0, None
        self.model.train()
        while self.step < self.total_steps and (stop_after is None or self.step < stop_after):
            epoch, start_batch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, start_batch)
            for batch in self.train_loader:
                self.skipped_samples += batch["skipped"]
                # what --on-bad-sample skip left of the batch may be too small: ASPP's pooling BN needs 2
                left = batch["rgb"].shape[0] if "rgb" in batch else 0
                if left < (2 if cfg.aspp else 1):
                    self.skipped_samples += left
                    continue
                loss, parts = self.train_step(batch)
                if math.isnan(loss):
                    bad_steps += 1
                    self.log(f"step {self.step}: non-finite loss, step skipped ({bad_steps} in a row)")
                    if bad_steps >= MAX_BAD_STEPS:
                        raise TrainingDiverged(f"training diverged: {bad_steps} non-finite losses in a row at step "
                                           f"{self.step}; the last good checkpoint is {self.out / 'last.pt'}")
                    continue
                bad_steps = 0
                self.step += 1
                images += batch["rgb"].shape[0] * rt.world_size
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if rt.is_main and self.weighted_step is not None:  # task weights, every step
                    for task, w in self.weighted_step.weights().items():
                        self._tensorboard().add_scalar(f"train/weight_{task}", w, self.step)
                if rt.is_main and self.step % 10 == 0:
                    writer = self._tensorboard()
                    writer.add_scalar("train/loss", loss, self.step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/loss_{k}", v, self.step)
                    writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                    if cfg.quiet:
                        print(f"step {self.step}/{self.total_steps} loss {loss:.4f}", flush=True)
                done = self.step >= self.total_steps or (stop_after is not None and self.step >= stop_after)
                if self.step % eval_every == 0 or done:
                    t0 = time.time()
                    last_metrics = self._evaluate_and_save(epoch)
                    eval_time += time.time() - t0
                if done:
                    break
        bar.close()
        summary = None
        if rt.is_main and self.step >= self.total_steps:
            wall = time.time() - start
            summary = self._write_summary(last_metrics, images / max(wall - eval_time, 1e-9), wall)
        if self.writer is not None:
            self.writer.close()
        if rt.distributed:
            dist.barrier()
        return summary

    def _evaluate_and_save(self, epoch: int) -> Optional[Dict[str, float]]:
        metrics = None
        if self.rt.is_main:
            metrics = self.evaluate()
            record = {"step": self.step, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0], **metrics}
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            writer = self._tensorboard()
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, self.step)
            self._log_images(writer)
            self.log(f"step {self.step}: mIoU {metrics['miou']:.2f}  SI-logRMSE {metrics['si_log_rmse']:.2f}  "
                     f"multitask {metrics['multitask']:.2f}")
            if self.best is None or metrics["multitask"] > self.best["multitask"]:
                self.best = {**_headline(metrics), "step": self.step}
                save_atomic(self.checkpoint(metrics), self.out / "best.pt")
            save_atomic(self.checkpoint(metrics), self.out / "last.pt")
        if self.rt.distributed:
            dist.barrier()
        return metrics

    def _write_summary(self, final_metrics, images_per_second: float, wall: float) -> Dict:
        if final_metrics is None:  # resumed after the last evaluation had been written
            final_metrics = self.evaluate()
        summary = {
            "best": self.best, "final": {**_headline(final_metrics), "step": self.step},
            "final_all": final_metrics, "baselines": trivial_baselines(self),
            "images_per_second": images_per_second, "wall_seconds": wall, "device": str(self.rt.device),
            "skipped_train_samples": self.skipped_samples,
            "weighting": {"method": self.cfg.weighting, "grads": self.cfg.weighting_grads,
                          "final_weights": self.weighted_step.weights() if self.weighted_step is not None
                          else dict(self.loss_fn.weights)},
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        b = summary["baselines"]
        self.log(f"final: mIoU {final_metrics['miou']:.2f}  SI-logRMSE {final_metrics['si_log_rmse']:.2f}  "
                 f"multitask {final_metrics['multitask']:.2f}  | baselines: majority-class mIoU "
                 f"{b['majority_class']['miou']:.2f}, mean-depth SI-logRMSE {b['mean_depth']['si_log_rmse']:.2f}")
        return summary


def _headline(metrics: Dict[str, float]) -> Dict[str, float]:
    return {k: metrics[k] for k in ("miou", "si_log_rmse", "multitask")}


def trivial_baselines(run: Run) -> Dict[str, Dict[str, float]]:
    """Scores of predicting the most frequent val class everywhere and the train mean depth everywhere."""
    from .metrics import DepthMeter, SemsegMeter

    counts = torch.zeros(run.info.num_classes, dtype=torch.int64)
    for batch in fdata.nonempty_batches(run.val_loader):
        t = batch["semseg"]
        counts += torch.bincount(t[t != run.info.ignore_index].flatten(), minlength=run.info.num_classes)
    majority = int(counts.argmax())
    seg, depth = SemsegMeter(run.info.num_classes, run.info.ignore_index), DepthMeter(run.info.depth_range)
    mean_depth = float(run.info.depth_stats["mean"])
    for batch in fdata.nonempty_batches(run.val_loader):
        seg.update(torch.full_like(batch["semseg"], majority), batch["semseg"])
        depth.update(torch.full_like(batch["depth"], mean_depth), batch["depth"])
    return {"majority_class": {"class": majority, **seg.compute()}, "mean_depth": {"depth_m": mean_depth, **depth.compute()}}


def train(cfg: Config, resume: Optional[str] = None, stop_after: Optional[int] = None) -> Optional[Dict]:
    """Train ``cfg`` (or resume the run in directory ``resume``); returns the summary on rank 0."""
    run = Run(cfg, resume)
    try:
        return run.run(stop_after)
    finally:
        if run.rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
