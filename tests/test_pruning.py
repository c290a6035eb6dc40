"""Structured pruning (retdet/pruning, tools/prune.py): a smaller dense network that reloads from
config + checkpoint, equals the original at ratio 0, keeps GroupNorm groups whole, and fine-tunes."""
import copy
import os
import sys

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retdet.checkpoint import Checkpointer, load_weights
from retdet.config import import_user_modules, load_config
from retdet.engine import Trainer
from retdet.modeling import DetectorNetwork, build_model
from retdet.pruning import WIDTHS_KEY, apply_widths
from retdet.pruning.pruner import prune_model
from retdet.registry import PRUNING_IMPORTANCES
from retdet.tools.prune import main as prune_main

from .conftest import ROOT
from .helpers.training import TINY, USER_COMPRESSION as USER_MODULE

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")


def _model(*overrides, seed=0):
    torch.manual_seed(seed)
    model = build_model(load_config(QUICKSTART, list(overrides)).model).eval()
    # random BN statistics and affines, so that channels differ and pruning has something to choose
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _example(h=160, w=192):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _outputs(model, x):
    return DetectorNetwork(model)(x)


def _widths(model, kind=nn.Conv2d):
    return {n: (m.in_channels, m.out_channels) for n, m in model.named_modules() if isinstance(m, kind)}


def test_ratio_zero_leaves_the_network_as_it_was():
    model, x = _model(), _example()
    before, widths = _outputs(model, x), _widths(model)
    report = prune_model(model, ratio=0.0, example=x[:1], importance="l1")
    assert _widths(model) == widths
    for a, b in zip(before, _outputs(model, x)):
        assert torch.equal(a, b)
    assert report.params_after == report.params_before and report.gflops_after == pytest.approx(report.gflops_before)


def test_pruned_network_is_smaller_keeps_output_shapes_and_reloads_weights_only(tmp_path):
    model, x = _model(), _example()
    dense_shapes = [o.shape for o in _outputs(model, x)]
    report = prune_model(model, ratio=0.3, example=x[:1], importance="l1")
    pruned = _outputs(model, x)
    assert [o.shape for o in pruned] == dense_shapes  # anchors x classes and anchors x 4, every level
    assert report.gflops_after < 0.65 * report.gflops_before and report.params_after < 0.65 * report.params_before
    # every part lost channels: the stem, a residual stage, the FPN, the shared head; not the predictors
    convs = dict(model.named_modules())
    assert convs["backbone.conv1"].out_channels < 16 and convs["backbone.layer3.1.conv2"].out_channels < 64
    assert convs["neck.output_convs.0"].out_channels < 64 and convs["head.cls_subnet.0.0"].out_channels < 64
    assert convs["head.cls_score"].out_channels == 9 * 4 and convs["head.bbox_pred"].out_channels == 9 * 4

    Checkpointer(model, str(tmp_path)).save("model_pruned")
    path = str(tmp_path / "model_pruned.pth")
    data = torch.load(path, map_location="cpu", weights_only=True)  # tensors and ints only
    assert data[WIDTHS_KEY]["head.cls_subnet.0.0"][1] == convs["head.cls_subnet.0.0"].out_channels
    reloaded = build_model(load_config(QUICKSTART).model).eval()
    load_weights(reloaded, path)
    assert _widths(reloaded) == _widths(model)
    for a, b in zip(pruned, _outputs(reloaded, x)):
        assert torch.equal(a, b)
    # the whole detector runs, with post-processing, on an image of another size
    dets = reloaded([_sample(torch.rand(3, 140, 200) * 255)])
    assert dets[0].boxes.shape[1] == 4


def _sample(image):
    from retdet.structures import ImageSample

    return ImageSample(image=image, image_id=0)


def test_group_norm_layers_lose_whole_groups():
    # the head's GroupNorm has 32 groups of 2 channels: pruning removes groups, never splits them
    model = _model()
    gn = model.head.cls_subnet[0][1]
    assert (gn.num_groups, gn.num_channels) == (32, 64)
    kept = gn.weight.detach().clone()
    prune_model(model, ratio=0.3, example=_example()[:1], importance="l1")
    gn = model.head.cls_subnet[0][1]
    assert gn.num_channels == 2 * gn.num_groups and gn.num_groups < 32
    # the kept channels are pairs (2g, 2g+1) of the original: find each kept pair in the original
    pairs = kept.view(32, 2)
    for pair in gn.weight.detach().view(-1, 2):
        assert any(torch.equal(pair, p) for p in pairs)


def test_frozen_bn_backbone_prunes_and_matches_its_folded_forward():
    model = _model("model.backbone.norm=FrozenBN", "model.backbone.freeze_at=2")
    x = _example()
    prune_model(model, ratio=0.25, example=x[:1], importance="norm_scale")
    bn, conv = model.backbone.bn1, model.backbone.conv1
    assert isinstance(bn, FrozenBatchNorm2d) and bn.weight.shape[0] == conv.out_channels < 16
    assert not conv.weight.requires_grad  # frozen stages stay frozen
    from retdet.layers.conv_bn import calling_modules

    folded = _outputs(model, x)  # FrozenBN folded into the convolutions
    with calling_modules():
        for a, b in zip(folded, _outputs(model, x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_taylor_uses_loss_gradients_and_leaves_statistics_and_frozen_flags_alone():
    cfg = load_config(TINY)
    from retdet.data import build_train_loader

    loader, _ = build_train_loader(cfg.dataloader.train, input_format="BGR", seed=0)
    it = iter(loader)
    batches = [next(it) for _ in range(2)]
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.backbone.conv1.requires_grad_(False)
    norms = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    x = model.preprocess([torch.rand(3, 256, 256) * 255]).tensor
    taylor = copy.deepcopy(model)
    prune_model(taylor, ratio=0.25, example=x, importance="taylor", batches=batches)
    prune_model(model, ratio=0.25, example=x, importance="l1")
    assert not taylor.backbone.conv1.weight.requires_grad
    assert all(p.grad is None for p in taylor.parameters())
    assert _widths(taylor) == _widths(model)  # same widths, other channels chosen
    assert any(not torch.equal(a.weight, b.weight) for a, b in zip(taylor.modules(), model.modules())
               if isinstance(a, nn.Conv2d))
    with pytest.raises(ValueError, match="needs gradients"):
        prune_model(build_model(cfg.model), ratio=0.25, example=x, importance="taylor")
    assert norms  # (GN has no running statistics to disturb; BN models are covered by the train-mode guard)


@pytest.fixture
def user_module():
    """tests/helpers/user_compression.py imported as a user's module; its registrations removed afterwards."""
    from retdet.registry import DISTILL_LOSSES

    yield import_user_modules([USER_MODULE])[0]
    for registry, name in ((PRUNING_IMPORTANCES, "LargestFirstForTest"), (DISTILL_LOSSES, "MeanLogitGapForTest")):
        registry._entries.pop(name, None)
    sys.modules.pop("user_compression", None)


def test_a_user_registered_criterion_is_used_by_name(user_module, tmp_path):
    cfg = load_config(QUICKSTART)
    torch.manual_seed(0)
    dense = build_model(cfg.model).eval()
    Checkpointer(dense, str(tmp_path)).save("dense")
    out = str(tmp_path / "pruned")
    assert prune_main(["--config", QUICKSTART, "--weights", str(tmp_path / "dense.pth"), "--output", out,
                       "--ratio", "0.25", "--importance", "LargestFirstForTest", "--import", USER_MODULE]) == 0
    assert user_module.CALLS["importance"] > 0
    theirs = build_model(cfg.model).eval()
    load_weights(theirs, os.path.join(out, "model_pruned.pth"))
    ours = copy.deepcopy(dense)
    prune_model(ours, ratio=0.25, example=torch.zeros(1, 3, 160, 192), importance="l1")
    # the user's criterion kept exactly the smallest stem filters; l1 (over the whole group) others
    norms = dense.backbone.conv1.weight.detach().abs().flatten(1).sum(1)
    kept_theirs = theirs.backbone.conv1.weight.detach().abs().flatten(1).sum(1)
    kept_ours = ours.backbone.conv1.weight.detach().abs().flatten(1).sum(1)
    smallest = norms.sort().values[:len(kept_theirs)]
    assert torch.equal(kept_theirs.sort().values, smallest)
    assert not torch.equal(kept_ours.sort().values, smallest)
    assert os.path.isfile(os.path.join(out, "pruning.json")) and os.path.isfile(os.path.join(out, "config.py"))


def test_unknown_criterion_is_named(tmp_path):
    with pytest.raises(KeyError, match="'l3' is not registered in pruning_importances.*Did you mean"):
        prune_main(["--config", QUICKSTART, "--weights", __file__, "--output", str(tmp_path), "--ratio", "0.2",
                    "--importance", "l3"])


def test_a_checkpoint_pruned_from_another_architecture_is_named(tmp_path):
    model = _model()
    prune_model(model, ratio=0.3, example=_example()[:1])
    Checkpointer(model, str(tmp_path)).save("model_pruned")
    other = build_model(load_config(QUICKSTART, ["model.head.num_convs=1"]).model)
    with pytest.raises(ValueError, match=r"pruned layer 'head\.cls_subnet\.1\.0'.*no such layer"):
        load_weights(other, str(tmp_path / "model_pruned.pth"))
    with pytest.raises(ValueError, match="a Conv2d"):
        apply_widths(build_model(load_config(QUICKSTART).model), {"head.cls_subnet.0.0": [64]})


def test_fine_tuning_a_pruned_checkpoint_and_resuming_it(tmp_path):
    cfg = load_config(TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    prune_model(model, ratio=0.25, example=model.preprocess([torch.rand(3, 256, 256) * 255]).tensor)
    Checkpointer(model, str(tmp_path)).save("model_pruned")
    run = str(tmp_path / "ft")
    cfg = load_config(TINY, [f"train.init_checkpoint={tmp_path / 'model_pruned.pth'}", "train.max_iter=4",
                             "train.checkpoint_period=2"])
    Trainer(cfg, output_dir=run).train()
    final = torch.load(os.path.join(run, "model_final.pth"), map_location="cpu", weights_only=True)
    assert final[WIDTHS_KEY] == model.pruned_widths  # every checkpoint of the run carries the widths
    assert final["model"]["neck.output_convs.0.weight"].shape == model.neck.output_convs[0].weight.shape
    # resuming (here: from the final checkpoint into a longer schedule) rebuilds the pruned widths
    longer = load_config(TINY, [f"train.init_checkpoint={tmp_path / 'model_pruned.pth'}", "train.max_iter=6",
                                "train.checkpoint_period=2"])
    trainer = Trainer(longer, output_dir=run, resume=True)
    assert trainer.start_iter == 4
    trainer.train()


@pytest.mark.parametrize("frozen", [False, True])
def test_narrow_strided_1x1_shortcut_runs_as_a_slice_with_the_same_results(frozen):
    """A pruned downsample shortcut (1x1, stride 2, 8 input channels, channels-last): the slice that
    avoids oneDNN's broken kernel (retdet/layers/conv_bn.py) gives the module's outputs and gradients,
    over several input sizes (the kernel corrupted the heap from the second size on)."""
    from retdet.layers.conv_bn import conv_norm, strided_1x1_as_slice

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
    norm = FrozenBatchNorm2d(16) if frozen else torch.nn.BatchNorm2d(16).eval()
    for h, w in [(36, 48), (40, 56), (45, 61)]:
        x = torch.randn(4, 8, h, w).contiguous(memory_format=torch.channels_last).requires_grad_()
        assert strided_1x1_as_slice(x, conv)
        y = conv_norm(x, conv, norm)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        x_ref = x.detach().contiguous().requires_grad_()  # NCHW: the plain module path
        y_ref = norm(conv.to(memory_format=torch.contiguous_format)(x_ref))
        conv.to(memory_format=torch.channels_last)
        (gx_ref,) = torch.autograd.grad(y_ref.square().sum(), x_ref)
        assert y.shape == y_ref.shape == (4, 16, (h + 1) // 2, (w + 1) // 2)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(gx, gx_ref)
