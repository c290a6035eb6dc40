"""Running a model over a data loader and feeding an evaluator, with progress."""
from __future__ import annotations

import datetime
import logging
import time
from typing import Any, Dict

import torch

from retdet.utils import comm

logger = logging.getLogger("retdet")


@torch.no_grad()
def inference_on_dataset(model: torch.nn.Module, loader, evaluator, *, log_every_s: float = 10.0,
                         amp_dtype=None) -> Dict[str, Any]:
    """Detections for every image of ``loader`` -> ``evaluator``; logs progress with an ETA."""
    was_training = model.training
    model.eval()
    evaluator.reset()
    total = len(loader)
    start = last_log = time.perf_counter()
    device = next(model.parameters()).device
    images = 0
    for i, batch in enumerate(loader):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(batch)
        evaluator.process(batch, outputs)
        images += len(batch)
        now = time.perf_counter()
        if now - last_log > log_every_s or i + 1 == total:
            per_batch = (now - start) / (i + 1)
            eta = datetime.timedelta(seconds=int(per_batch * (total - i - 1)))
            logger.info("Inference: %d/%d batches, %.3f s/batch, ETA %s", i + 1, total, per_batch, eta)
            last_log = now
    elapsed = time.perf_counter() - start
    logger.info("Inference done: %d images in %.1f s, %.1f ms per image (loading included)", images, elapsed,
                elapsed / max(images, 1) * 1000)
    comm.synchronize()
    results = evaluator.evaluate()
    model.train(was_training)
    return results
