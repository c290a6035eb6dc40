#!/usr/bin/env python
"""`make demo` (tools/quickstart.py): what retdet can run today on its embedded defaults, with no download.

1. the environment (versions, compiled kernels);
2. the quickstart config, resolved with a command-line style override, written next to the run and
   reloaded to check it round-trips;
3. the fused ops on a RetinaNet-sized synthetic batch, checked against torchvision.

It grows into "train + evaluate the quickstart config" as the model, data and trainer land.
"""
import argparse
import os
import sys
import time

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from retdet import ops  # noqa: E402
from retdet.config import load_config, save_config  # noqa: E402
from retdet.utils.collect_env import collect_env  # noqa: E402
from retdet.utils.logger import log_table, setup_logger  # noqa: E402


def median_ms(fn, runs=5):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "quickstart.py"))
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "output", "demo"))
    parser.add_argument("opts", nargs="*", help="config overrides, key.path=value")
    args = parser.parse_args()

    logger = setup_logger(args.output_dir)
    log_table(collect_env(), ["component", "value"], title="Environment", logger=logger)

    cfg = load_config(args.config, args.opts or ["train.max_iter=2000"])
    path = save_config(cfg, args.output_dir)
    assert load_config(path) == cfg, "the saved config does not reload to the same config"
    m = cfg.model
    log_table(
        [
            ("backbone", f"{m.backbone.type}-{m.backbone.depth} ({m.backbone.norm})"),
            ("neck", f"{m.neck.type}, {m.neck.out_channels} channels, P3-P7"),
            ("head", f"{m.head.type}, {m.head.num_classes} classes, {m.head.num_convs} convs"),
            ("anchors / location", len(m.anchor_generator.aspect_ratios) * m.anchor_generator.scales_per_octave),
            ("schedule", f"{cfg.train.max_iter} iterations, lr {cfg.optimizer.lr}"),
            ("resolved config", path),
        ],
        ["part", "setting"],
        title=f"Config {os.path.relpath(args.config, ROOT)} (saved and reloaded: equal)",
        logger=logger,
    )

    # A RetinaNet-like batch: 2 images x ~30k anchors x 80 classes, ~1% foreground.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60000, 80, generator=g) - 4.0
    labels = torch.full((60000,), 80, dtype=torch.long)
    fg = torch.randperm(60000, generator=g)[:600]
    labels[fg] = torch.randint(0, 80, (600,), generator=g)
    labels[torch.randperm(60000, generator=g)[:3000]] = -1
    valid = labels >= 0
    onehot = torch.nn.functional.one_hot(labels[valid], 81)[:, :80].float()
    ours = ops.sigmoid_focal_loss(logits, labels, 0.25, 2.0, "sum")
    ref = torchvision.ops.sigmoid_focal_loss(logits[valid], onehot, 0.25, 2.0, "sum")
    centers = torch.rand(50, 2, generator=g) * 600
    boxes = torch.cat([centers.repeat(100, 1) + torch.randn(5000, 2, generator=g) * 8,
                       centers.repeat(100, 1) + 60 + torch.randn(5000, 2, generator=g) * 8], 1)
    scores, classes = torch.rand(5000, generator=g), torch.randint(0, 80, (5000,), generator=g)
    keep = ops.batched_nms(boxes, scores, classes, 0.5)
    keep_ref = torchvision.ops.batched_nms(boxes, scores, classes, 0.5)
    log_table(
        [
            ("sigmoid_focal_loss (sum)", f"{ours.item():.4f}", f"{ref.item():.4f}",
             median_ms(lambda: ops.sigmoid_focal_loss(logits, labels, 0.25, 2.0, "sum")),
             median_ms(lambda: torchvision.ops.sigmoid_focal_loss(logits[valid], onehot, 0.25, 2.0, "sum"))),
            ("batched_nms (kept)", len(keep), len(keep_ref),
             median_ms(lambda: ops.batched_nms(boxes, scores, classes, 0.5)),
             median_ms(lambda: torchvision.ops.batched_nms(boxes, scores, classes, 0.5))),
        ],
        ["op (forward, CPU)", "retdet", "torchvision", "retdet ms", "torchvision ms"],
        title=f"Fused ops vs torchvision (compiled kernels: {ops.has_extension()})",
        logger=logger,
    )
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-3)
    assert torch.equal(keep, keep_ref), "batched_nms differs from torchvision"
    logger.info("Demo finished: log and resolved config in %s", args.output_dir)


if __name__ == "__main__":
    main()
