"""model.compile: the network (backbone, FPN, head) under torch.compile gives the eager model's losses
and detections, with the eager model's state dict; copies (the EMA model) compile themselves."""
import copy

import pytest
import torch

from retdet.config import load_config
from retdet.modeling import build_model
from retdet.structures import ImageSample

from .helpers.training import TINY


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
    assert compiled.runner._compiled is not None  # it did run compiled
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5)
    # Inference (eval mode, no grad: its own graph) gives the same detections.
    eager.eval(), compiled.eval()
    with torch.no_grad():
        for a, b in zip(eager(_samples()), compiled(_samples())):
            torch.testing.assert_close(b.scores, a.scores, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(b.boxes, a.boxes, rtol=1e-3, atol=1e-2)
    ema = copy.deepcopy(compiled)  # the EMA model is a copy: it must not run the original's network
    assert ema.runner._compiled is None and ema.runner.compile_options == {}


def test_compile_option_errors_name_the_key():
    cfg = load_config(TINY)
    cfg.model.compile = dict(mode="max-autotune", speed=2)
    with pytest.raises(ValueError, match=r"model.compile: unknown key\(s\) \['speed'\]"):
        build_model(cfg.model)
    cfg.model.compile = "yes"
    with pytest.raises(ValueError, match="model.compile must be True, False or a dict"):
        build_model(cfg.model)


def test_frozen_compile_is_inference_only_and_refuses_changed_weights(monkeypatch):
    """options={'freezing': True} bakes the weights into the graph (no guard sees new values), so the
    model refuses to train with it and refuses weights changed after the first compiled call. The
    guard is ours; torch.compile is replaced by a recorder so no inductor build runs here."""
    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = load_config(TINY)
    cfg.model.compile = dict(options=dict(freezing=True))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    assert model.runner.freezes_weights
    with pytest.raises(RuntimeError, match="inference only"):
        model.train()(_samples())
    model.eval()
    with pytest.raises(RuntimeError, match="inference only"):  # eval mode, but gradients on
        model(_samples())
    with torch.no_grad():
        first = model(_samples())
        again = model(_samples())  # same weights: runs
    assert compiled == [{"options": {"freezing": True}}]
    torch.testing.assert_close(again[0].scores, first[0].scores)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    with torch.no_grad(), pytest.raises(RuntimeError, match="weights changed after the network was compiled"):
        model(_samples())
    fresh = copy.deepcopy(model)  # a copy compiles for itself, with the weights it has
    with torch.no_grad():
        fresh(_samples())
    # Without freezing, training and changed weights are torch.compile's business (it is not frozen).
    cfg.model.compile = True
    assert not build_model(cfg.model).runner.freezes_weights
