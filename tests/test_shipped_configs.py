"""Every shipped config builds: its model, optimiser, LR schedule and transforms."""
import os

import pytest

from retdet.config import load_config
from retdet.data.build import build_transforms
from retdet.engine import build_lr_scheduler, build_optimizer
from retdet.modeling import build_model

from .conftest import CONFIGS

EXPERIMENTS = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".py"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_config_builds(name):
    cfg = load_config(os.path.join(CONFIGS, name))
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model)
    build_lr_scheduler(cfg.lr_scheduler, optimizer, max_iter=100)
    build_transforms(cfg.dataloader.train.transforms)
    build_transforms(cfg.dataloader.test.transforms)
    assert model.num_classes == cfg.model.head.num_classes
