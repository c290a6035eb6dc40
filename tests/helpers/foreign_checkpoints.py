"""Stand-in Detectron2, Caffe2 and MMDetection checkpoints with random weights, built from those
frameworks' published layouts (key names and shapes of Detectron2's retinanet_R_50_FPN, MSRA's
R-50.pkl and MMDetection's retinanet_r50_fpn): for the tests, and for docs/other_frameworks.md,
which converts them as a reader converts the real files.

    python -m tests.helpers.foreign_checkpoints OUTPUT_DIR   # writes d2_retinanet.pkl, R-50.pkl, mmdet_retinanet.pth
"""
import math
import os
import pickle
import sys

import torch

STAGES = [3, 4, 6, 3]  # ResNet-50
K, A = 80, 9


def conv_weight(g, out_c, in_c, k):
    return torch.randn(out_c, in_c, k, k, generator=g) * math.sqrt(2.0 / (in_c * k * k))


def _bn(g, c):
    return {"weight": torch.rand(c, generator=g) * 0.5 + 0.5, "bias": torch.randn(c, generator=g) * 0.1,
            "running_mean": torch.randn(c, generator=g) * 0.1, "running_var": torch.rand(c, generator=g) + 0.5}


def resnet_layout(g, conv_key, norm_key, shortcut_keys, stem_keys):
    """A ResNet-50 state dict with the naming functions' keys."""
    sd = {stem_keys[0]: conv_weight(g, 64, 3, 7)}
    sd.update({f"{stem_keys[1]}.{k}": v for k, v in _bn(g, 64).items()})
    in_c = 64
    for s, count in enumerate(STAGES):
        width, out_c = 64 * 2**s, 256 * 2**s
        for b in range(count):
            for j, (o, i, k) in enumerate([(width, in_c if b == 0 else out_c, 1), (width, width, 3),
                                           (out_c, width, 1)], start=1):
                sd[conv_key(s, b, j)] = conv_weight(g, o, i, k)
                sd.update({f"{norm_key(s, b, j)}.{n}": v for n, v in _bn(g, o).items()})
            if b == 0:
                sd[shortcut_keys(s)[0]] = conv_weight(g, out_c, in_c, 1)
                sd.update({f"{shortcut_keys(s)[1]}.{n}": v for n, v in _bn(g, out_c).items()})
        in_c = out_c
    return sd


def head_layout(g, names):
    """RetinaNet head (4 convs per subnet) under ``names``: (cls conv i, box conv i, cls out, box out)."""
    sd = {}
    for i in range(4):
        for key in (names[0](i), names[1](i)):
            sd[key + ".weight"], sd[key + ".bias"] = torch.randn(256, 256, 3, 3, generator=g) * 0.03, \
                torch.randn(256, generator=g) * 0.1
    # Scaled so that logits spread with std ~1.5 (distinct scores, no saturated ties) and deltas ~0.5.
    sd[names[2] + ".weight"] = torch.randn(A * K, 256, 3, 3, generator=g) * 0.002
    sd[names[2] + ".bias"] = torch.randn(A * K, generator=g) * 0.5 - 3.0  # many scores above 0.05
    sd[names[3] + ".weight"] = torch.randn(A * 4, 256, 3, 3, generator=g) * 0.0005
    sd[names[3] + ".bias"] = torch.randn(A * 4, generator=g) * 0.1
    return sd


def fpn_layout(g, lateral, output, p6, p7):
    sd = {}
    for i, c in enumerate([512, 1024, 2048]):
        sd[lateral(i) + ".weight"], sd[lateral(i) + ".bias"] = conv_weight(g, 256, c, 1), torch.randn(256, generator=g) * 0.1
        sd[output(i) + ".weight"], sd[output(i) + ".bias"] = conv_weight(g, 256, 256, 3), torch.randn(256, generator=g) * 0.1
    sd[p6 + ".weight"], sd[p6 + ".bias"] = conv_weight(g, 256, 2048, 3), torch.zeros(256)
    sd[p7 + ".weight"], sd[p7 + ".bias"] = conv_weight(g, 256, 256, 3), torch.zeros(256)
    return sd


def d2_retinanet_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = "backbone.bottom_up."
    sd = resnet_layout(g, lambda s, b, j: f"{r}res{s + 2}.{b}.conv{j}.weight",
                       lambda s, b, j: f"{r}res{s + 2}.{b}.conv{j}.norm",
                       lambda s: (f"{r}res{s + 2}.0.shortcut.weight", f"{r}res{s + 2}.0.shortcut.norm"),
                       (f"{r}stem.conv1.weight", f"{r}stem.conv1.norm"))
    sd.update(fpn_layout(g, lambda i: f"backbone.fpn_lateral{i + 3}", lambda i: f"backbone.fpn_output{i + 3}",
                         "backbone.top_block.p6", "backbone.top_block.p7"))
    sd.update(head_layout(g, (lambda i: f"head.cls_subnet.{2 * i}", lambda i: f"head.bbox_subnet.{2 * i}",
                              "head.cls_score", "head.bbox_pred")))
    return sd


def mmdet_retinanet_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = resnet_layout(g, lambda s, b, j: f"backbone.layer{s + 1}.{b}.conv{j}.weight",
                       lambda s, b, j: f"backbone.layer{s + 1}.{b}.bn{j}",
                       lambda s: (f"backbone.layer{s + 1}.0.downsample.0.weight", f"backbone.layer{s + 1}.0.downsample.1"),
                       ("backbone.conv1.weight", "backbone.bn1"))
    for key in [k for k in sd if k.endswith("running_var")]:
        sd[key.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
    sd.update(fpn_layout(g, lambda i: f"neck.lateral_convs.{i}.conv", lambda i: f"neck.fpn_convs.{i}.conv",
                         "neck.fpn_convs.3.conv", "neck.fpn_convs.4.conv"))
    sd.update(head_layout(g, (lambda i: f"bbox_head.cls_convs.{i}.conv", lambda i: f"bbox_head.reg_convs.{i}.conv",
                              "bbox_head.retina_cls", "bbox_head.retina_reg")))
    return sd


def caffe2_resnet50_blobs(seed=0):
    """MSRA R-50.pkl's blob names: conv1_w, res_conv1_bn_{s,b}, res{2-5}_{i}_branch{1,2a,2b,2c}_{w,bn_s,bn_b},
    fc1000_{w,b}, with a stray optimiser blob; norms carry no statistics."""
    g = torch.Generator().manual_seed(seed)
    blobs = {"conv1_w": conv_weight(g, 64, 3, 7), "res_conv1_bn_s": torch.rand(64, generator=g) + 0.5,
             "res_conv1_bn_b": torch.randn(64, generator=g) * 0.1}
    in_c = 64
    for s, count in enumerate(STAGES):
        width, out_c = 64 * 2**s, 256 * 2**s
        for b in range(count):
            shapes = {"2a": (width, in_c if b == 0 else out_c, 1), "2b": (width, width, 3), "2c": (out_c, width, 1)}
            if b == 0:
                shapes["1"] = (out_c, in_c, 1)
            for branch, (o, i, k) in shapes.items():
                p = f"res{s + 2}_{b}_branch{branch}"
                blobs[p + "_w"] = conv_weight(g, o, i, k)
                blobs[p + "_bn_s"], blobs[p + "_bn_b"] = torch.rand(o, generator=g) + 0.5, torch.randn(o, generator=g)
        in_c = out_c
    blobs["fc1000_w"], blobs["fc1000_b"] = torch.zeros(1000, 2048), torch.zeros(1000)
    blobs["conv1_w_momentum"] = torch.zeros(64, 3, 7, 7)
    return blobs


def write_all(out_dir: str) -> None:
    """The three stand-ins, in the files' own formats: a model-zoo .pkl ({"model": numpy arrays,
    "__author__"}), a Caffe2 .pkl ({"blobs": ...}) and an MMDetection .pth ({"meta", "state_dict"})."""
    os.makedirs(out_dir, exist_ok=True)
    d2 = {k: v.numpy() for k, v in d2_retinanet_state().items()}
    with open(os.path.join(out_dir, "d2_retinanet.pkl"), "wb") as f:
        pickle.dump({"model": d2, "__author__": "stand-in (random weights)"}, f, protocol=2)
    with open(os.path.join(out_dir, "R-50.pkl"), "wb") as f:
        pickle.dump({"blobs": {k: v.numpy() for k, v in caffe2_resnet50_blobs().items()}}, f, protocol=2)
    torch.save({"meta": {"mmdet_version": "stand-in"}, "state_dict": mmdet_retinanet_state()},
               os.path.join(out_dir, "mmdet_retinanet.pth"))
    print(f"wrote d2_retinanet.pkl, R-50.pkl and mmdet_retinanet.pth (random weights) to {out_dir}")


if __name__ == "__main__":
    write_all(sys.argv[1] if len(sys.argv) > 1 else "output/standins")
