"""Training data loader throughput."""
from __future__ import annotations

import statistics
import time
from typing import Sequence

from retdet.config import load_config
from retdet.data import build_train_loader, register_from_config


def data_throughput(config: str, *, iters: int = 60, opts: Sequence[str] = (), warmup: int = 5, window: int = 10) -> dict:
    cfg = load_config(config, opts)
    register_from_config(cfg.dataloader.get("register", []))
    train = cfg.dataloader.train
    loader, _ = build_train_loader(train, input_format=cfg.model.get("input_format", "BGR"),
                                   seed=cfg.train.get("seed", 0))
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    rates = []
    for _ in range(max(1, iters // window)):
        start, images = time.perf_counter(), 0
        for _ in range(window):
            images += len(next(it))
        rates.append(images / (time.perf_counter() - start))
    return {"name": f"train loader ({', '.join(train.dataset.names)})", "workers": int(train.get("num_workers", 0)),
            "batch_size": int(train.total_batch_size), "images_per_s": statistics.median(rates)}
