"""``fastmtl train``: the training loop.

AMP, ``torch.compile``, DistributedDataParallel (under ``torchrun``), atomic checkpoints,
exact resume, TensorBoard, metrics.jsonl and summary.json. One run directory holds::

    config.json     the configuration that ran (budget, device, amp and fused resolved)
    metrics.jsonl   one JSON line per evaluation
    summary.json    {"best", "final", "baselines", "images_per_second" (steady state), "warmup_seconds", ...}
    last.pt         everything needed to resume (optimizer, scheduler, scaler, RNG); saved at every
                    evaluation, every ``checkpoint_every`` steps / ``checkpoint_minutes`` of training, and on Ctrl-C
    best.pt         the best model by multitask score, without resume state (for eval/predict/export)
    events.*        TensorBoard (losses, metrics, LR, input / prediction / ground-truth images, depth histograms)
    .lock           while a process trains into the directory (see :mod:`fastmtl.rundir`)

Exact resume: the data order and every augmentation are functions of (seed, epoch, sample
index) (:class:`fastmtl.data.order.ResumableBatchSampler`), so a resumed run sees the same
batches; model, optimizer, scheduler, scaler and RNG state come from ``last.pt`` (saved between two
steps only: the first Ctrl-C asks the loop to stop after the current step and save). Run-directory
policy (lock, no silent overwrite, rewind on resume) is :mod:`fastmtl.rundir`; device, budget and
precision are :mod:`fastmtl.runtime`.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from . import data as fdata
from . import rundir
from .checkpoint import FORMAT, VERSION, save_atomic
from .config import Config, ConfigError
from .data.order import ResumableBatchSampler, SeededTransform
from .errors import TrainingDiverged
from .evaluate import evaluate_tasks
from .files import read_json, write_json_atomic, write_text_atomic
from .losses import last_prediction
from .rundir import check_output_dir
from .runtime import Runtime, launch_ranks, resolve_config, setup_runtime
from .optim import load_optimizer_state
from .step import StepResult, build_step, host_values
from .tasks import check_available, task_states
from .transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform

MAX_BAD_STEPS = 10  # consecutive non-finite steps before training stops (checked when the skip counts are read)
LOG_EVERY = 10  # steps between host reads of the step's results (loss, skip counts): the step itself reads nothing
WARMUP_STEPS = 3  # first steps of every (resumed) segment, timed apart: compilation and warm-up


def make_datasets(cfg: Config, root: Path):
    """``(info, train set, val set)`` of the run's dataset; every configured task must have its target
    in both splits (a clear ``--tasks`` error otherwise)."""
    info = fdata.dataset_info(root, cfg.dataset)
    check_available(cfg.tasks, info.tasks, str(root))
    train_set = fdata.open_dataset(root, "train", cfg.dataset, on_bad_sample=cfg.on_bad_sample, tasks=cfg.tasks)
    val_set = fdata.open_dataset(root, "val", cfg.dataset, transform=eval_transform(multiple=32),
                                 on_bad_sample=cfg.on_bad_sample, tasks=cfg.tasks)
    for name, split in (("train", train_set), ("val", val_set)):  # readers that know a split's targets
        check_available(cfg.tasks, getattr(split, "targets", info.tasks), f"{root} (split {name})")
    return info, train_set, val_set


def make_loaders(cfg: Config, root: Path, train_set, val_set, rt: Runtime):
    if len(train_set) < cfg.batch_size * rt.world_size:
        raise ConfigError(f"--batch-size {cfg.batch_size}: the train split of {root} has only {len(train_set)} samples")
    sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, cfg.seed, rt.rank, rt.world_size)
    pin = rt.device.type == "cuda"
    # own generators: creating a loader iterator must not consume the global RNG (exact resume)
    common = dict(num_workers=cfg.workers, pin_memory=pin, persistent_workers=cfg.workers > 0)
    train_loader = DataLoader(SeededTransform(train_set, train_transform(cfg.size)), batch_sampler=sampler,
                              collate_fn=fdata.collate_skip_bad, generator=torch.Generator().manual_seed(cfg.seed),
                              **common)
    val_loader = fdata.build_loader(val_set, cfg.batch_size, shuffle=False, workers=cfg.workers, seed=cfg.seed)
    return train_loader, val_loader, sampler


def ensure_default_data(rt: Runtime, progress: bool) -> Path:
    """The built-in synthetic set in this node's cache (:func:`fastmtl.data.default_data_root`),
    rendered where missing, once per cache: global rank 0 first, while every other process waits;
    then the first process of each other node, for a node whose cache is not shared with rank 0's
    (where it is, the set is found there; two nodes rendering into one cache at once is safe too:
    the one that finishes second keeps the first's)."""
    if rt.is_main:
        fdata.ensure_default_dataset(progress=progress)
    if rt.distributed:
        dist.barrier()
        if rt.is_node_main and not rt.is_main:
            fdata.ensure_default_dataset(progress=progress)
        dist.barrier()
    return fdata.default_data_root()


# ---------------------------------------------------------------------------------------------
# the run


class Run:
    """One training run: built from a config (new) or from a run directory (resume).

    The caller holds the run directory's lock (:func:`train`); building a Run writes nothing
    except, for a new run with ``overwrite``, deleting the previous run's files, once every input
    (data root, dataset, tasks, model) has been checked by building everything else.
    """

    def __init__(self, cfg: Optional[Config], resume: Optional[str] = None, overwrite: bool = False,
                 resume_overrides: Optional[Dict] = None):
        ckpt = None
        if resume is not None:
            ckpt, cfg = rundir.resume_checkpoint(resume, resume_overrides or {})
        self.rt = setup_runtime(cfg)
        self.cfg = cfg = resolve_config(cfg, self.rt)
        self.out = Path(cfg.out)
        replaced = rundir.check_new_run(self.out, overwrite) if ckpt is None and self.rt.is_main else []
        torch.manual_seed(cfg.seed)

        root = Path(cfg.data_root) if cfg.data_root else self._default_data_root()
        if not root.is_dir():
            raise ConfigError(f"--data-root {root}: no such directory")
        if cfg.data_root:  # stored absolute: eval / predict / --resume may run from another folder
            cfg.data_root = str(root.resolve())
        self.info, train_set, val_set = make_datasets(cfg, root)
        self.train_loader, self.val_loader, self.sampler = make_loaders(cfg, root, train_set, val_set, self.rt)
        self.steps_per_epoch = len(self.sampler)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.parts = build_step(cfg, self.info, self.rt, self.total_steps, self.steps_per_epoch)
        self.model, self.tasks, self.loss_fn = self.parts.model, self.parts.tasks, self.parts.loss_fn
        self.optimizer, self.scheduler, self.scaler = self.parts.optimizer, self.parts.scheduler, self.parts.scaler
        self.weighting, self.outputs_desc = self.parts.weighting, self.parts.outputs_desc
        self.step, self.best, self.skipped_samples = 0, None, 0
        self.timing = {"wall_seconds": 0.0, "eval_seconds": 0.0, "warmup_seconds": 0.0, "warmup_steps": 0,
                       "warmup_images": 0, "steady_seconds": 0.0, "steady_images": 0}
        self.saved_step: Optional[int] = None  # the step of the last.pt in self.out, None: none exists
        if ckpt is not None:
            self._restore(ckpt)
            self.saved_step = self.step
            if self.rt.is_main:
                rundir.rewind(self.out, self.step)
        rundir.remove_files(replaced)  # every input is checked: the old run may go
        self.writer = None
        self._stop_requested = False

    def _default_data_root(self) -> Path:
        if self.cfg.dataset != "synthetic":
            raise ConfigError(f"--dataset {self.cfg.dataset} needs --data-root DIR")
        return ensure_default_data(self.rt, progress=not self.cfg.quiet)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, metrics: Optional[Dict] = None, resume_state: bool = True) -> Dict:
        """What ``eval``/``predict``/``export`` need, plus (``resume_state``) what ``--resume`` needs."""
        ckpt = {
            "format": FORMAT, "version": VERSION, "config": self.cfg.to_dict(), "outputs_desc": self.outputs_desc,
            "dataset": dataclasses.asdict(self.info), **task_states(self.tasks),
            "model": self.model.state_dict(), "step": self.step, "metrics": metrics or {}, "best": self.best,
        }
        if resume_state:
            rng = {"torch": torch.get_rng_state()}
            if self.rt.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.rt.device)
            ckpt.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                        scaler=self.scaler.state_dict(), rng=rng, timing=dict(self.timing),
                        skipped_samples=self.skipped_samples,
                        weighting=self.weighting.state_dict() if self.weighting is not None else {})
        return ckpt

    def _restore(self, ckpt: Dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.weighting is not None:
            self.weighting.load_state_dict(ckpt["weighting"])
        self.step, self.best = int(ckpt["step"]), ckpt["best"]
        self.timing.update(ckpt.get("timing", {}))
        self.skipped_samples = int(ckpt.get("skipped_samples", 0))
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and self.rt.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.rt.device)

    def _save_last(self, metrics: Optional[Dict] = None) -> None:
        """Save ``last.pt`` (on rank 0) and restart the checkpoint clock."""
        if self.rt.is_main:
            self._tick()
            save_atomic(self.checkpoint(metrics), self.out / "last.pt")
        self.saved_step, self._saved_at = self.step, time.time()

    def _checkpoint_due(self) -> bool:
        """A ``last.pt`` save is due by steps (``checkpoint_every``) or time (``checkpoint_minutes``)."""
        every, minutes = self.cfg.checkpoint_every, self.cfg.checkpoint_minutes
        return bool((every and self.step % every == 0)
                    or (minutes and time.time() - self._saved_at >= 60 * minutes))

    def latest_checkpoint(self) -> str:
        """Which checkpoint exists and the command that continues from it (or starts over)."""
        if self.saved_step is not None and (self.out / "last.pt").is_file():
            return (f"the last good checkpoint is {self.out / 'last.pt'} (step {self.saved_step}); "
                    f"resume with: fastmtl train --resume {self.out}")
        return f"no checkpoint exists (none was saved yet); start over with: {rundir.restart_command(self.out)}"

    @contextmanager
    def _first_sigint_stops(self) -> Iterator[None]:
        """The first Ctrl-C (SIGINT) asks the loop to stop after the current step and save; a second
        one interrupts at once. Only in the main thread (where Python delivers signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def request_stop(signum, frame):
            self._stop_requested = True
            signal.signal(signal.SIGINT, previous)
            self.log("Ctrl-C: stopping after this step to save last.pt (Ctrl-C again stops at once, saving nothing)")

        signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _interrupted(self) -> KeyboardInterrupt:
        """Save ``last.pt`` of the current step (if not saved yet); the interruption saying so."""
        self._settle()
        if self.saved_step != self.step:
            self._save_last()
        return KeyboardInterrupt(f"saved {self.out / 'last.pt'} at step {self.step} of {self.total_steps}; "
                                 f"resume with: fastmtl train --resume {self.out}")

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
        """Input, prediction and ground-truth images of every task (and depth histograms, report
        Fig. 22) of the first val batch."""
        batch = next(fdata.nonempty_batches(self.val_loader))
        self.model.eval()
        with torch.no_grad(), self.rt.autocast():
            out = self.model(batch["rgb"][:4].to(self.rt.device))
        self.model.train()
        rgb = batch["rgb"][:4] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        writer.add_images("val/rgb", rgb.clamp(0, 1), self.step)
        for task in self.tasks:
            raw = last_prediction(out[task.name])
            task.log_images(writer, task.decode(raw).cpu(), raw, batch[task.name], self.step)

    # -- loop -------------------------------------------------------------------------------

    def step_on_device(self, batch) -> StepResult:
        """One :class:`~fastmtl.step.TrainStep` on a loader batch (moved to the run's device); the
        results stay on the device (:func:`~fastmtl.step.host_values` reads them)."""
        dev = self.rt.device
        targets = {t: batch[t].to(dev, non_blocking=True) for t in self.cfg.tasks}
        return self.parts.step.run(batch["rgb"].to(dev, non_blocking=True), targets)

    def train_step(self, batch) -> Tuple[float, Dict[str, float]]:
        """:meth:`step_on_device`, read on the host: ``(loss, {task: loss})``, ``(nan, {})`` if skipped."""
        return host_values(self.step_on_device(batch))

    def _settle(self) -> int:
        """Read the step's skip counts (one host sync; at every :data:`LOG_EVERY` steps, evaluation,
        save and the end): the skipped steps are taken back from ``self.step`` (and the LR
        schedule) and logged; :data:`MAX_BAD_STEPS` in a row stop the run. Returns the skipped count."""
        skipped, longest = self.parts.step.settle()
        if skipped:
            self.step -= skipped
            self.log(f"step {self.step}: {skipped} step(s) skipped since the last read: non-finite loss, task "
                     f"weight or gradient ({longest} in a row at most)")
            if longest >= MAX_BAD_STEPS:
                raise TrainingDiverged(f"training diverged: {longest} non-finite steps in a row at step "
                                       f"{self.step}; {self.latest_checkpoint()}")
        return skipped

    def evaluate(self) -> Dict:
        return evaluate_tasks(self.model, self.val_loader, self.tasks, self.rt.device, self.rt.amp_dtype,
                              self.cfg.channels_last, progress=not self.cfg.quiet and self.rt.is_main)

    def run(self, stop_after: Optional[int] = None) -> Dict:
        """Train to the end (or until ``stop_after`` steps, a simulated interruption). Returns summary.json."""
        from tqdm import tqdm

        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            write_text_atomic(self.out / "config.json", cfg.to_json())
        bar = tqdm(total=self.total_steps, initial=self.step, disable=cfg.quiet or not rt.is_main,
                   desc="train", unit="step", dynamic_ncols=True)
        self._wall_mark = self._saved_at = time.time()
        try:
            with self._first_sigint_stops():
                last_metrics = self._loop(bar, stop_after)
        except KeyboardInterrupt as e:
            if e.args:  # _interrupted: saved, says so
                raise
            raise KeyboardInterrupt(f"nothing saved at step {self.step}; {self.latest_checkpoint()}") from None
        finally:
            bar.close()
        self._tick()
        summary = None
        if rt.is_main and self.step >= self.total_steps:
            summary = self._write_summary(last_metrics)
        if self.writer is not None:
            self.writer.close()
        if rt.distributed:
            dist.barrier()
        return summary

    def _loop(self, bar, stop_after: Optional[int]) -> Optional[Dict]:
        """The steps to the end (or ``stop_after``); the last evaluation's metrics (None if none ran)."""
        cfg, rt = self.cfg, self.rt
        eval_every = cfg.eval_every or self.steps_per_epoch
        segment_steps, last_metrics = 0, None
        step_start = time.time()
        self.model.train()
        while self.step < self.total_steps and (stop_after is None or self.step < stop_after):
            epoch, start_batch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, start_batch)
            for batch in self.train_loader:
                if self._stop_requested:  # between two steps: everything is consistent
                    raise self._interrupted()
                self.skipped_samples += batch["skipped"]
                # what --on-bad-sample skip left of the batch may be too small: ASPP's pooling BN needs 2
                left = batch["rgb"].shape[0] if "rgb" in batch else 0
                if left < (2 if cfg.aspp else 1):
                    self.skipped_samples += left
                    continue
                result = self.step_on_device(batch)
                self.step += 1  # a skipped step is taken back when the skip counts are read (_settle)
                segment_steps += 1
                step_end = time.time()
                self._time_step(segment_steps, step_end - step_start, batch["rgb"].shape[0] * rt.world_size)
                step_start = step_end  # a step's time runs from the end of the previous one (data loading included)
                bar.update(1)
                if rt.is_main and self.weighting is not None:  # task weights, every step
                    for task, w in self.parts.step.weights().items():
                        self._tensorboard().add_scalar(f"train/weight_{task}", w, self.step)
                done = self.step >= self.total_steps or (stop_after is not None and self.step >= stop_after)
                evaluate = self.step % eval_every == 0 or done
                save = not evaluate and self._checkpoint_due()
                if not (evaluate or save or self.step % LOG_EVERY == 0):
                    continue
                skipped = self._settle()
                if skipped:  # the counts were provisional: the checks wait for the steps that updated
                    bar.update(-skipped)
                    continue
                loss, parts = host_values(result)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if rt.is_main and self.step % LOG_EVERY == 0:
                    writer = self._tensorboard()
                    writer.add_scalar("train/loss", loss, self.step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/loss_{k}", v, self.step)
                    writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                    if cfg.quiet:
                        print(f"step {self.step}/{self.total_steps} loss {loss:.4f}", flush=True)
                if evaluate:
                    last_metrics = self._evaluate_and_save(epoch)
                    step_start = time.time()
                elif save:
                    self._save_last()
                    step_start = time.time()
                if done:
                    break
        return last_metrics

    def _time_step(self, segment_steps: int, seconds: float, images: int) -> None:
        """Account one step: the first :data:`WARMUP_STEPS` of a segment are warm-up (compilation)."""
        if segment_steps <= WARMUP_STEPS:
            self.timing["warmup_seconds"] += seconds
            self.timing["warmup_steps"] += 1
            self.timing["warmup_images"] += images
        else:
            self.timing["steady_seconds"] += seconds
            self.timing["steady_images"] += images

    def _tick(self) -> None:
        """Add the time since the last tick to ``wall_seconds`` (kept in last.pt across resumes)."""
        now = time.time()
        self.timing["wall_seconds"] += now - self._wall_mark
        self._wall_mark = now

    def _evaluate_and_save(self, epoch: int) -> Optional[Dict]:
        metrics = None
        if self.rt.is_main:
            eval_started = time.time()
            metrics = self.evaluate()
            record = {"step": self.step, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0], **metrics}
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            writer = self._tensorboard()
            for k, v in metrics.items():
                if isinstance(v, dict):  # iou_per_class
                    for name, iou in v.items():
                        writer.add_scalar(f"val_iou/{name}", iou, self.step)
                else:
                    writer.add_scalar(f"val/{k}", v, self.step)
            self._log_images(writer)
            self.log(f"step {self.step}: {_describe(self.tasks, metrics)}")
            if self.best is None or metrics["multitask"] > self.best["multitask"]:
                self.best = {**_headline(self.tasks, metrics), "step": self.step}
                save_atomic(self.checkpoint(metrics, resume_state=False), self.out / "best.pt")
            self.timing["eval_seconds"] += time.time() - eval_started
        self._save_last(metrics)
        if self.rt.distributed:
            dist.barrier()
        return metrics

    def _write_summary(self, final_metrics) -> Dict:
        if final_metrics is None:  # resumed after the last evaluation had been written
            final_metrics = self.evaluate()
        t = self.timing
        if t["steady_images"]:
            images_per_second = t["steady_images"] / max(t["steady_seconds"], 1e-9)
        else:  # too few steps for a steady state
            images_per_second = t["warmup_images"] / max(t["warmup_seconds"], 1e-9)
        summary = {
            "best": self.best, "final": {**_headline(self.tasks, final_metrics), "step": self.step},
            "final_all": final_metrics, "baselines": trivial_baselines(self),
            "images_per_second": images_per_second, "steady_state_steps": self.step - t["warmup_steps"],
            "steady_state_seconds": t["steady_seconds"],
            "warmup_seconds": t["warmup_seconds"], "warmup_steps": t["warmup_steps"],
            "eval_seconds": t["eval_seconds"], "wall_seconds": t["wall_seconds"], "device": str(self.rt.device),
            "skipped_train_samples": self.skipped_samples,
            "weighting": {"method": self.cfg.weighting, "grads": self.cfg.weighting_grads,
                          "final_weights": self.parts.step.weights()},
        }
        write_json_atomic(self.out / "summary.json", summary)
        baselines = "; ".join(f"{name.replace('_', '-')} {_describe(self.tasks, values, score=False)}"
                              for name, values in summary["baselines"].items())
        self.log(f"final: {_describe(self.tasks, final_metrics)}  | baselines: {baselines}")
        return summary


def _headline(tasks, metrics: Dict[str, float]) -> Dict[str, float]:
    """Each task's headline metric and ``multitask`` (summary.json's ``best`` / ``final``)."""
    return {**{t.headline: metrics[t.headline] for t in tasks}, "multitask": metrics["multitask"]}


def _describe(tasks, metrics: Dict, score: bool = True) -> str:
    """``mIoU 12.34  SI-logRMSE 56.78  multitask -44.44`` of the headline metrics present in ``metrics``."""
    parts = [f"{t.label} {metrics[t.headline]:.2f}" for t in tasks if t.headline in metrics]
    if score and "multitask" in metrics:
        parts.append(f"multitask {metrics['multitask']:.2f}")
    return "  ".join(parts)


def trivial_baselines(run: Run) -> Dict[str, Dict]:
    """Each task's trivial predictor on the val split (:meth:`fastmtl.tasks.Task.baseline`: the
    most frequent val class everywhere, the train mean depth everywhere, the mean val normal)."""
    out = {}
    for task in run.tasks:
        result = task.baseline(lambda: fdata.nonempty_batches(run.val_loader))
        if result is not None:
            out[result[0]] = result[1]
    return out


def train(cfg: Optional[Config], resume: Optional[str] = None, stop_after: Optional[int] = None,
          overwrite: bool = False, resume_overrides: Optional[Dict] = None) -> Optional[Dict]:
    """Train ``cfg`` into ``cfg.out`` (or resume the run in directory ``resume``, with
    ``resume_overrides`` such as a larger ``max_steps``); returns the summary on rank 0.

    A new run refuses a directory that holds a run unless ``overwrite``; a resumed run that is
    already complete changes nothing and returns its summary.
    """
    out = Path(resume if resume is not None else cfg.out)
    writer = launch_ranks()[0] == 0  # only global rank 0 touches the run directory, on any node
    created = rundir.created_dirs(out) if writer else []
    if writer:
        check_output_dir(out)
    try:
        with rundir.run_dir_lock(out, enabled=writer):
            run = Run(cfg, resume, overwrite, resume_overrides)
            try:
                if resume is not None and run.step >= run.total_steps:
                    summary = _finished_summary(out)
                    if summary is not None:
                        run.log(f"the run in {out} is complete (step {run.step} of {run.total_steps}); nothing "
                                f"changed. To train on, pass --resume {out} with a larger --max-steps or --epochs")
                        return summary if run.rt.is_main else None
                return run.run(stop_after)
            finally:
                if run.rt.distributed and dist.is_initialized():
                    dist.destroy_process_group()
    except BaseException:
        rundir.remove_empty_dirs(created)  # a failed run leaves no empty folder it created
        raise


def _finished_summary(out: Path) -> Optional[Dict]:
    """The summary.json of a finished run; None when it is missing or torn (it is then written anew)."""
    path = out / "summary.json"
    if not path.is_file():
        return None
    try:
        return read_json(path, "summary.json")
    except ValueError as e:
        warnings.warn(f"{e} It is written anew from the final checkpoint.")
        return None
