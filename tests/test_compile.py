"""model.compile: the network (backbone, FPN, head) under torch.compile gives the eager model's losses
and detections, with the eager model's state dict; copies (the EMA model) compile themselves."""
import copy

import pytest
import torch

from retdet.config import load_config
from retdet.modeling import build_model
from retdet.structures import ImageSample

from .test_engine import TINY


def _samples(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ImageSample(image=torch.rand(3, 96, 128, generator=g) * 255, image_id=i,
                        gt_boxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 20.0, 120.0, 90.0]]),
                        gt_labels=torch.tensor([1, 3])) for i in range(n)]


def _train_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for i in range(steps):
        losses = model(_samples(seed=i))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def test_compiled_network_matches_eager():
    cfg = load_config(TINY)
    models = {}
    for compiled in (False, True):
        cfg.model.compile = compiled
        torch.manual_seed(0)
        models[compiled] = build_model(cfg.model).train()
    eager, compiled = models[False], models[True]
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints are the eager model's
    for a, b in zip(_train_steps(eager), _train_steps(compiled)):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    assert compiled._compiled_network is not None  # it did run compiled
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5)
    # Inference (eval mode, no grad: its own graph) gives the same detections.
    eager.eval(), compiled.eval()
    with torch.no_grad():
        for a, b in zip(eager(_samples()), compiled(_samples())):
            torch.testing.assert_close(b.scores, a.scores, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(b.boxes, a.boxes, rtol=1e-3, atol=1e-2)
    ema = copy.deepcopy(compiled)  # the EMA model is a copy: it must not run the original's network
    assert ema._compiled_network is None and ema.compile_options == {}


def test_compile_option_errors_name_the_key():
    cfg = load_config(TINY)
    cfg.model.compile = dict(mode="max-autotune", speed=2)
    with pytest.raises(ValueError, match=r"model.compile: unknown key\(s\) \['speed'\]"):
        build_model(cfg.model)
    cfg.model.compile = "yes"
    with pytest.raises(ValueError, match="model.compile must be True, False or a dict"):
        build_model(cfg.model)
