"""The training loop: iterations, AMP, gradient clipping, EMA, checkpoints, evaluation, logging.

Batch and learning rate: ``dataloader.train.total_batch_size`` is the batch over all workers; each
worker loads total / world_size images. The config's ``optimizer.lr`` belongs to that total batch:
when you change the total batch, scale the LR linearly (lr = base_lr * new_batch / old_batch, the
"linear scaling rule" of Goyal et al. 2017) and the iteration counts inversely.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import resource
import signal
import time
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from retdet.checkpoint import Checkpointer, RNGState
from retdet.data import build_train_loader, check_num_classes, merge_datasets, register_from_config, resolve_num_classes
from retdet.evaluation.evaluate import evaluate
from retdet.engine.defaults import build_model_from_config, default_device
from retdet.registry import HOOKS, build
from retdet.utils import comm

from .determinism import DeterministicMode, check_deterministic_option, seed_all
from .early_stop import BestMetric
from .ema import ModelEMA
from .hooks import HookBase
from .metrics import MetricsLog
from .optim import build_lr_scheduler, build_optimizer
from .preemption import DEFAULT_SIGNALS, PreemptionHandler, signal_numbers

logger = logging.getLogger("retdet")


class NonFiniteLossError(FloatingPointError):
    """Training stopped on a NaN/inf loss; the message says where and what to do."""


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def resolve_max_iter(cfg: Mapping) -> int:
    """``train.max_iter``, or ``train.max_epochs`` converted through the dataset size and total batch."""
    train = cfg["train"]
    if train.get("max_epochs"):
        loader = cfg["dataloader"]["train"]
        size = len(merge_datasets(loader["dataset"]["names"], filter_empty=loader["dataset"].get("filter_empty", False)))
        return int(math.ceil(train["max_epochs"] * size / (loader["total_batch_size"] * accumulate_steps(train))))
    return int(train["max_iter"])


def accumulate_steps(train: Mapping) -> int:
    """``train.accumulate``: micro-batches (of ``total_batch_size`` each) per optimizer step."""
    value = train.get("accumulate", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"train.accumulate={value!r} must be an integer >= 1 (micro-batches of "
                         f"dataloader.train.total_batch_size images per optimizer step)")
    return value


def check_train_options(cfg: Mapping) -> BestMetric:
    """The training options read only inside the loop, checked before anything is built; returns the
    metric that ``model_best.pth`` (and ``train.early_stop``) follows."""
    train = cfg["train"]
    check_deterministic_option(train.get("deterministic", False))
    accumulate = accumulate_steps(train)
    if accumulate > 1 and train.get("distill"):
        raise ValueError("train.accumulate > 1 with train.distill is not supported: the distillation losses have "
                         "their own normalisation (use a larger dataloader.train.total_batch_size instead)")
    for key in ("val_loss_period", "eval_period"):
        value = train.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"train.{key}={value!r} must be an integer >= 0 (0: never)")
    return BestMetric.from_config(train)


def apply_checkpoint_widths(model: nn.Module, path: str) -> None:
    """Narrow ``model`` to the layer widths of the pruned checkpoint ``path`` (nothing for a dense one)."""
    from retdet.checkpoint.loader import read_checkpoint
    from retdet.pruning.widths import apply_widths

    widths = read_checkpoint(path)[1]
    if widths:
        apply_widths(model, widths, source=path)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """Builds everything from the config, then :meth:`train` runs the iterations.

    Args:
        cfg: the resolved config.
        output_dir: checkpoints, logs, metrics and evaluation outputs.
        resume: continue from ``output_dir/last_checkpoint`` if there is one (model, optimizer, LR
            scheduler, grad scaler, EMA, iteration, RNG states and the data order).
    """

    def __init__(self, cfg: Mapping, *, output_dir: str, resume: bool = False) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.device = default_device()
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        train = cfg["train"]
        # model_best.pth by AP, or by train.early_stop's metric, which may also end the run
        self.best = check_train_options(cfg)
        register_from_config(cfg["dataloader"].get("register", []))
        self.max_iter = resolve_max_iter(cfg)
        self.accumulate = accumulate_steps(train)
        resolve_num_classes(cfg)
        self.deterministic = DeterministicMode(train.get("deterministic", False), output_dir=output_dir)
        if self.deterministic.enabled:
            seed_all(int(train.get("seed", 0)))
        torch.manual_seed(int(train.get("seed", 0)))  # identical initial weights on every worker
        model = build_model_from_config(cfg, device=self.device, training=True)  # its weights: below
        # before any step: a class count that disagrees with the data would fail mid-step otherwise
        check_num_classes(model, cfg["dataloader"]["train"]["dataset"]["names"], where="dataloader.train")
        if train.get("eval_period") or train.get("eval_at_end", True):
            check_num_classes(model, cfg["dataloader"]["test"]["dataset"]["names"], where="dataloader.test")
        path = Checkpointer(model, output_dir).find_resume_checkpoint() if resume else None
        if path:  # a pruned run resumes with its own widths, before the optimizer takes the parameters
            apply_checkpoint_widths(model, path)
        elif train.get("init_checkpoint"):
            from retdet.checkpoint import load_weights

            load_weights(model, train["init_checkpoint"], logger=logger)
        # train.distill: the step runs student and teacher (retdet/distillation); checkpoints keep the student
        self.distiller = None
        if train.get("distill"):
            from retdet.distillation import build_distiller

            self.distiller = build_distiller(train["distill"], model, device=self.device)
        trained = self.distiller if self.distiller is not None else model
        self.optimizer = build_optimizer(cfg["optimizer"], trained)
        self.scheduler = build_lr_scheduler(cfg["lr_scheduler"], self.optimizer, self.max_iter)
        amp = train.get("amp", {}) or {}
        self.amp_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[amp.get("dtype", "float16")] \
            if amp.get("enabled", False) else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        ema_cfg = train.get("ema", {}) or {}
        self.ema = ModelEMA(model, decay=ema_cfg.get("decay", 0.9998), tau=ema_cfg.get("tau", 2000.0)) \
            if ema_cfg.get("enabled", False) else None
        self.rng = RNGState()
        checkpointables = {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler,
                           "rng": self.rng, "best": self.best}
        if self.ema is not None:
            checkpointables["ema"] = self.ema
        if self.distiller is not None:
            checkpointables["distill"] = self.distiller.losses  # the losses' adapters; never the teacher
        self.checkpointer = Checkpointer(model, output_dir, save_to_disk=comm.is_main_process(), **checkpointables)
        self.start_iter = 0
        if path:
            extra = self.checkpointer.load(path)
            self.start_iter = int(extra["iteration"]) + 1
            if self.best.best_iter < 0 and self.best.key == "bbox/AP" and extra.get("best_ap", -1.0) >= 0:
                self.best.best = float(extra["best_ap"])  # a checkpoint from before the "best" state
            logger.info("Resumed from %s at iteration %d", path, self.start_iter)
        else:
            if not resume and self.checkpointer.has_checkpoint():
                logger.warning("%s holds checkpoints of an earlier run: starting over (pass --resume to continue it)",
                               output_dir)
        self.detector: nn.Module = model  # what is evaluated and saved (the student when distilling)
        self.model: nn.Module = trained  # what a training step runs
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                trained, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False)
        self.preempt_signals = signal_numbers(train.get("preempt_signals", DEFAULT_SIGNALS))
        self.loader, self.dataset = build_train_loader(
            cfg["dataloader"]["train"], input_format=cfg["model"].get("input_format", "BGR"),
            seed=int(train.get("seed", 0)), rank=self.rank, world_size=self.world_size,
            start_batch=self.start_iter * self.accumulate,
            ignore_signals=self.preempt_signals)
        self.hooks: List[HookBase] = [build(h, HOOKS, where=f"train.hooks[{i}]") for i, h in enumerate(train.get("hooks", []))]
        for h in self.hooks:
            h.trainer = self
        self.metrics = MetricsLog(output_dir, start_iter=self.start_iter)
        self.metrics.listeners.append(self._metrics_to_hooks)
        self.iter = self.start_iter
        self.stop_requested = False
        self.preemption = PreemptionHandler(self.preempt_signals)
        self.preempted = False  # set when a preemption signal ended train(); see retdet/engine/preemption.py
        self.last_checkpoint: Optional[str] = path

    def _metrics_to_hooks(self, iteration: int, values: Mapping[str, float]) -> None:
        for h in self.hooks:
            h.after_metrics(iteration, values)

    # ---- the loop --------------------------------------------------------------------------------

    def train(self) -> Optional[Dict[str, Any]]:
        """Run the iterations. Returns the last evaluation's results (None if none ran). A preemption
        signal ends it early with a checkpoint at the current iteration and ``self.preempted`` set."""
        with self.preemption, self.deterministic:
            return self._train()

    def _train(self) -> Optional[Dict[str, Any]]:
        train = self.cfg["train"]
        log_period = int(train.get("log_period", 20))
        logger.info("Training iterations %d..%d on %s x %d", self.start_iter, self.max_iter - 1, self.device,
                    self.world_size)
        if self.best.should_stop:
            logger.info("This run stopped early (train.early_stop: %s did not improve for %d evaluations; best %.4f at "
                        "iteration %d): nothing to continue. Raise train.early_stop.patience to train on.",
                        self.best.key, self.best.bad_evals, self.best.best, self.best.best_iter)
            return None
        for h in self.hooks:
            h.before_train()
        self.model.train()
        data_iter = iter(self.loader)
        results = None
        self.preempt_agreed = False
        for self.iter in range(self.start_iter, self.max_iter):
            with self.deterministic.step():  # lists the ops without a deterministic kernel (train.deterministic)
                for h in self.hooks:
                    h.before_step()
                step_start = time.perf_counter()
                batches = [next(data_iter) for _ in range(self.accumulate)]
                data_time = time.perf_counter() - step_start
                losses = self.run_step(batches)
                step_time = time.perf_counter() - step_start
                self.metrics.put({**losses, "time": step_time, "data_time": data_time})
                for h in self.hooks:
                    h.after_step()
            preempted = self.preempt_agreed  # the same on every worker (sync_step_flags)
            last = self.iter == self.max_iter - 1 or self.stop_requested or preempted
            if (self.iter + 1) % log_period == 0 or last:
                self.log_progress()
            period = int(train.get("checkpoint_period", 0))
            saved = bool(period and (self.iter + 1) % period == 0) or last
            name = "model_final" if self.iter == self.max_iter - 1 else f"model_{self.iter:07d}"
            if saved:  # before evaluating: the weights are safe whatever the evaluation does
                self.save_checkpoint(name)
            if preempted:
                return self._stop_preempted()
            eval_period = int(train.get("eval_period", 0))
            evaluated = bool(eval_period and (self.iter + 1) % eval_period == 0) or (last and train.get("eval_at_end", True))
            if evaluated:
                results = self.evaluate_and_keep_best()
            val_period = int(train.get("val_loss_period") or 0)
            validated = bool(val_period and ((self.iter + 1) % val_period == 0 or last))
            if validated:
                self.compute_validation_loss()
            stop_early = self.best.should_stop
            if stop_early and not evaluated and train.get("eval_at_end", True):
                results = self.evaluate_and_keep_best()
            # this iteration's checkpoint must hold the early-stop state after its evaluations (what an
            # uninterrupted run goes on with), and an early stop must leave one to resume from
            if (saved and (evaluated or validated)) or (stop_early and not saved):
                self.save_checkpoint(name)
            if stop_early:
                logger.info("Early stop after iteration %d: %s did not improve by more than %g for %d evaluations. "
                            "Best %.4f at iteration %d: model_best.pth", self.iter, self.best.key, self.best.min_delta,
                            self.best.bad_evals, self.best.best, self.best.best_iter)
                break
            if self.stop_requested:
                break
        for h in self.hooks:
            h.after_train()
        return results

    def _stop_preempted(self) -> None:
        comm.synchronize()  # no worker exits before rank 0 has written the checkpoint
        self.preempted = True
        if not comm.is_main_process():
            return
        name = signal.Signals(self.preemption.received).name if self.preemption.requested else "on another worker"
        logger.warning("Preempted (%s): stopped after iteration %d with checkpoint %s. Continue exactly from there "
                       "with --resume.", name, self.iter, self.last_checkpoint)

    def run_step(self, batches: List[Any]) -> Dict[str, float]:
        """One optimizer step over ``train.accumulate`` micro-batches (one without accumulation).

        Accumulated, each micro-batch's loss is backpropagated at once (memory of one micro-batch);
        DDP all-reduces the gradients only with the last, and the loss normaliser's correction
        (LossNormalizer.accumulating) then makes them the whole batch's gradients.
        """
        self.optimizer.zero_grad(set_to_none=True)
        normalizer = getattr(unwrap(self.model), "loss_normalizer", None)
        accumulating = len(batches) > 1 and normalizer is not None
        acc_context = normalizer.accumulating(len(batches)) if accumulating else contextlib.nullcontext()
        summed: Dict[str, torch.Tensor] = {}
        with acc_context as acc:
            for i, batch in enumerate(batches):
                last = i == len(batches) - 1
                no_sync = self.model.no_sync() if isinstance(self.model, nn.parallel.DistributedDataParallel) \
                    and not last else contextlib.nullcontext()
                with no_sync:
                    with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                        loss_dict = self.model(batch)
                    self.scaler.scale(sum(loss_dict.values())).backward()
                for k, v in loss_dict.items():
                    summed[k] = summed[k] + v.detach() if k in summed else v.detach()
            correction = acc.correction() if accumulating else 1.0
        if correction != 1.0:
            summed = {k: v * correction for k, v in summed.items()}
            for p in unwrap(self.model).parameters():
                if p.grad is not None:
                    p.grad.mul_(correction)
        total = sum(summed.values())
        # before the step: a non-finite loss stops every worker with the weights of the last good step
        self.sync_step_flags(total, summed)
        clip = self.cfg["train"].get("clip_grad")
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(unwrap(self.model).parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.detector)
        values = {k: float(v) for k, v in summed.items()}
        values["total_loss"] = float(total.detach())
        return comm.reduce_mean_dict(values)

    def sync_step_flags(self, total: torch.Tensor, loss_dict: Mapping[str, torch.Tensor]) -> None:
        """One all-reduce per step tells every worker the same two things: whether any worker's loss
        is NaN or inf (raise, on every worker together), and whether any worker has received a
        preemption signal (``self.preempt_agreed``: all finish this step, save and stop)."""
        # on the training device: NCCL reduces CUDA tensors only
        flags = torch.tensor([0.0 if torch.isfinite(total).item() else 1.0, float(self.preemption.requested)],
                             device=self.device)
        nonfinite, preempt = comm.all_reduce_sum(flags).tolist()  # one device-to-host copy
        self.preempt_agreed = preempt > 0
        if nonfinite == 0:
            return
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in loss_dict.items())
        where = self.last_checkpoint or "none saved yet (the run started from its initial weights)"
        raise NonFiniteLossError(
            f"non-finite loss at iteration {self.iter} ({terms}; on {'this' if not torch.isfinite(total) else 'another'}"
            f" worker). Last good checkpoint: {where}. Lower optimizer.lr, enable train.clip_grad, or check the data "
            f"of this iteration; resume with --resume.")

    # ---- logging, checkpoints, evaluation --------------------------------------------------------

    def log_progress(self) -> None:
        per_iter = self.metrics.median("time")
        eta = datetime.timedelta(seconds=int(per_iter * (self.max_iter - self.iter - 1)))
        lr = self.optimizer.param_groups[0]["lr"]
        losses = {k: self.metrics.median(k) for k in self.metrics.history if k.startswith("loss") or k == "total_loss"}
        mem = peak_memory_mb(self.device)
        logger.info(
            "iter %d/%d  %s  lr %.5g  time %.3f s  data %.3f s  eta %s  peak mem %.0f MB",
            self.iter + 1, self.max_iter, "  ".join(f"{k} {v:.4f}" for k, v in losses.items()), lr, per_iter,
            self.metrics.median("data_time"), eta, mem)
        # metrics.json gets this iteration's own values (medians over a window would differ after a resume)
        latest = {k: self.metrics.latest(k) for k in losses}
        self.metrics.write(self.iter, {**latest, "lr": lr, "time": per_iter,
                                       "data_time": self.metrics.median("data_time"), "peak_mem_mb": mem})

    def save_checkpoint(self, name: str) -> None:
        self.checkpointer.save(name, iteration=self.iter)
        self.last_checkpoint = os.path.join(self.output_dir, f"{name}.pth")
        self.checkpointer.prune_old(int(self.cfg["train"].get("keep_last", 3)))

    def evaluation_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.detector

    def evaluate_and_keep_best(self) -> Optional[Dict[str, Any]]:
        eval_dir = os.path.join(self.output_dir, "eval")
        results = evaluate(self.cfg, self.evaluation_model(), output_dir=eval_dir, amp_dtype=self.amp_dtype)
        if comm.is_main_process() and results:
            for h in self.hooks:
                h.after_eval(results, eval_dir)
            self.metrics.write(self.iter, {f"{group}/{k}": v for group in ("bbox", "voc")
                                           for k, v in results.get(group, {}).items()})
        if not self.best.key.startswith("val/"):
            # the same value on every worker (rank 0 evaluated), so that all stop together
            ap = (results or {}).get("bbox", {}).get(self.best.key.split("/", 1)[1], float("nan"))
            self.observe_metric(float(comm.all_reduce_sum(torch.tensor([ap if comm.is_main_process() else 0.0],
                                                                       device=self.device)).item()))
        comm.synchronize()
        return results

    def compute_validation_loss(self) -> Dict[str, float]:
        """``train.val_loss_period``: the losses on the test set (retdet/evaluation/validation_loss.py),
        written to metrics.json as val/loss_cls, val/loss_box_reg, val/total_loss."""
        from retdet.evaluation.validation_loss import validation_loss

        values = validation_loss(self.cfg, self.evaluation_model(), amp_dtype=self.amp_dtype)
        self.metrics.write(self.iter, values)
        logger.info("Validation loss at iteration %d: %s", self.iter,
                    "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if self.best.key in values:
            self.observe_metric(values[self.best.key])
        return values

    def observe_metric(self, value: float) -> None:
        """The watched metric's new value: model_best.pth when it is the best so far."""
        if math.isnan(value) or not self.best.update(value, self.iter):
            return
        self.checkpointer.save("model_best", iteration=self.iter)
        # model_best must not become the resume point: point back at the latest periodic one
        if self.last_checkpoint and comm.is_main_process():
            self.checkpointer.tag_last_checkpoint(os.path.basename(self.last_checkpoint))
        logger.info("New best %s %.4f at iteration %d: saved model_best.pth", self.best.key, value, self.iter)
