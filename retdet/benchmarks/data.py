"""Training data loader throughput."""
from __future__ import annotations

import statistics
import time
from typing import Mapping

from retdet.data import build_train_loader, register_from_config


def data_throughput(cfg: Mapping, *, iters: int = 60, warmup: int = 5, window: int = 10) -> dict:
    """Images/s and ms per batch of the config's training loader (with its workers): medians over
    windows of ``window`` batches, after ``warmup`` batches (worker start-up) are discarded."""
    register_from_config(cfg.dataloader.get("register", []))
    train = cfg.dataloader.train
    loader, _ = build_train_loader(train, input_format=cfg.model.get("input_format", "BGR"),
                                   seed=cfg.train.get("seed", 0))
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    rates, batch_ms = [], []
    for _ in range(max(1, iters // window)):
        start, images = time.perf_counter(), 0
        for _ in range(window):
            images += len(next(it))
        elapsed = time.perf_counter() - start
        rates.append(images / elapsed)
        batch_ms.append(elapsed / window * 1e3)
    return {"name": f"train loader ({', '.join(train.dataset.names)})", "workers": int(train.get("num_workers", 0)),
            "batch_size": int(train.total_batch_size), "images_per_s": statistics.median(rates),
            "ms_per_batch": statistics.median(batch_ms)}
