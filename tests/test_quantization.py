"""int8 post-training quantization (retdet/quantization, tools/quantize.py) on a briefly trained
quickstart model: calibration, accuracy against float32, plugin heads, the artifact, clear errors."""
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from retdet.config import load_config
from retdet.data.image_io import read_image
from retdet.engine import Trainer
from retdet.engine.predictor import Predictor
from retdet.modeling import build_model
from retdet.modeling.heads import RetinaNetHead
from retdet.quantization import ARTIFACT_FILE, QuantizedArtifactError, attach_quantized
from retdet.quantization.calibration import calibration_images, calibration_tensors
from retdet.quantization.onnxruntime_backend import quantize_network
from retdet.registry import HEADS
from retdet.structures.boxes import pairwise_iou
from retdet.tools.quantize import main as quantize_main

from .conftest import ROOT

CONFIG = os.path.join(ROOT, "configs", "quickstart.py")
# Without `make demo`'s model: a few hundred iterations (the detections are then less confident).
TRAIN = ["train.max_iter=600", "train.eval_at_end=False", "train.checkpoint_period=600", "train.log_period=50",
         "dataloader.train.num_workers=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, float32 checkpoint path) of a trained quickstart model: `make demo`'s (CI runs it before
    the tests), or, where there is none, one trained here for a few hundred iterations."""
    demo = os.path.join(ROOT, "output", "quickstart", "model_final.pth")
    if os.path.isfile(demo):
        return load_config(CONFIG, TRAIN), demo
    out = tmp_path_factory.mktemp("trained")
    cfg = load_config(CONFIG, TRAIN)
    torch.manual_seed(0)
    Trainer(cfg, output_dir=str(out)).train()
    return cfg, str(out / "model_final.pth")


@pytest.fixture(scope="module")
def int8_dir(trained, tmp_path_factory):
    cfg, weights = trained
    out = str(tmp_path_factory.mktemp("int8"))
    assert quantize_main(["--config", CONFIG, "--weights", weights, "--output", out, "--calib-images", "8",
                          *TRAIN]) == 0
    return out


def _fp32(cfg, weights):
    from retdet.checkpoint import load_weights

    model = build_model(cfg.model).eval()
    load_weights(model, weights)
    return model


def _val_images(cfg, n=8):
    from retdet.data import get_dataset, register_from_config

    register_from_config(cfg.dataloader.get("register", []))
    records = get_dataset(cfg.dataloader.test.dataset.names[0]).records[:n]
    return [read_image(r.file_name, "BGR") for r in records]


def agreement(reference, candidate, *, min_score=0.3, min_iou=0.8, score_tol=0.1):
    """Fraction of the reference's detections scoring >= min_score that the candidate also has: same
    label, IoU >= min_iou, score within score_tol (one to one)."""
    matched = total = 0
    for ref, cand in zip(reference, candidate):
        keep = ref.scores >= min_score
        boxes, scores, labels = ref.boxes[keep], ref.scores[keep], ref.labels[keep]
        total += len(boxes)
        if not len(boxes) or not len(cand.boxes):
            continue
        iou = pairwise_iou(boxes, cand.boxes)
        used = torch.zeros(len(cand.boxes), dtype=torch.bool)
        for i in range(len(boxes)):
            ok = ((iou[i] >= min_iou) & (cand.labels == labels[i]) & ((cand.scores - scores[i]).abs() <= score_tol)
                  & ~used)
            if ok.any():
                used[torch.nonzero(ok)[0, 0]] = True
                matched += 1
    assert total >= 10, f"too few confident float32 detections ({total}) to compare"
    return matched / total


def test_calibration_is_deterministic_for_a_seed(trained):
    cfg, weights = trained
    a, b = calibration_images(cfg, 3, seed=0), calibration_images(cfg, 3, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = calibration_images(cfg, 3, seed=1)
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c))


def test_same_seed_same_int8_network(trained, tmp_path):
    cfg, weights = trained
    model = _fp32(cfg, weights)
    graphs = []
    for name in ("a", "b"):
        path = str(tmp_path / f"{name}.onnx")
        quantize_network(model, calibration_tensors(model, calibration_images(cfg, 4, seed=3)), path)
        graphs.append({t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer})
    assert graphs[0].keys() == graphs[1].keys()
    assert all(np.array_equal(graphs[0][k], graphs[1][k]) for k in graphs[0])


def test_int8_detections_match_float32_and_fail_without_calibration(trained, int8_dir, tmp_path):
    """Bounds: >= 90% of the float32 detections scoring >= 0.3 have an int8 twin (same label, IoU >= 0.8,
    score within 0.1). Calibrating on blank images instead (ranges never measured on real activations)
    must break that, or the bound would not detect a broken quantization."""
    cfg, weights = trained
    images = _val_images(cfg)
    fp32 = Predictor(cfg, _fp32(cfg, weights))(images)
    int8_model = build_model(cfg.model).eval()
    attach_quantized(int8_model, int8_dir)
    assert agreement(fp32, Predictor(cfg, int8_model)(images)) >= 0.9

    model = _fp32(cfg, weights)
    blank = [torch.full_like(t, 0.0) for t in calibration_tensors(model, calibration_images(cfg, 4))]
    broken = tmp_path / "broken"
    broken.mkdir()
    quantize_network(model, blank, str(broken / ARTIFACT_FILE))
    from retdet.quantization.artifact import write_metadata

    write_metadata(str(broken), model)
    attach_quantized(model, str(broken))
    assert agreement(fp32, Predictor(cfg, model)(images)) < 0.5


@HEADS.register()
class QuantPluginHead(RetinaNetHead):
    """A user's head: one shared tower for both branches, followed by a 1x1 projection."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        channels = self.cls_score.in_channels
        self.project = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, features):
        shared = [torch.relu(self.project(self.cls_subnet(f))) for f in features]
        return [self.cls_score(s) for s in shared], [self.bbox_pred(s) for s in shared]


def test_a_plugin_head_quantizes_through_the_registry(trained, tmp_path):
    cfg, _ = trained
    cfg = load_config(CONFIG, TRAIN + ["model.head.type=QuantPluginHead"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    assert type(model.head).__name__ == "QuantPluginHead"
    weights = str(tmp_path / "plugin.pth")
    torch.save(model.state_dict(), weights)
    out = str(tmp_path / "int8")
    assert quantize_main(["--config", CONFIG, "--weights", weights, "--output", out, "--calib-images", "2",
                          "--fp32-layers", "head.project", *TRAIN, "model.head.type=QuantPluginHead"]) == 0
    graph = onnx.load(os.path.join(out, ARTIFACT_FILE)).graph
    project = [n for n in graph.node if n.name.startswith("/head/project")]
    assert project and all(n.op_type == "Conv" for n in project)
    # kept in float32: its weight is a float initializer, not the output of a DequantizeLinear
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(n.input[1] not in dq_outputs for n in project)
    int8 = build_model(cfg.model).eval()
    attach_quantized(int8, out)
    images = _val_images(cfg, 2)
    ours, theirs = Predictor(cfg, model)(images), Predictor(cfg, int8)(images)
    assert len(ours) == len(theirs) == 2


def test_the_artifact_loads_like_a_checkpoint_without_unpickling(trained, int8_dir, monkeypatch):
    from retdet.checkpoint import load_weights

    cfg, _ = trained
    assert sorted(f for f in os.listdir(int8_dir) if not os.path.isdir(os.path.join(int8_dir, f))) == [
        "config.py", "network_int8.onnx", "quantization.json"]
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called for an int8 artifact"))
    model = build_model(cfg.model).eval()
    load_weights(model, int8_dir)
    assert model.runner.runtime is not None
    model.train()
    with pytest.raises(RuntimeError, match="cannot train"):
        model.runner(model, torch.zeros(1, 3, 64, 64))


def test_an_artifact_for_other_classes_is_refused(int8_dir):
    cfg = load_config(CONFIG, ["model.head.num_classes=7"])
    with pytest.raises(QuantizedArtifactError, match="num_classes.*7|7.*num_classes"):
        attach_quantized(build_model(cfg.model), int8_dir)


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt"], "--backend 'tensorrt' is not supported: choose one of onnxruntime, openvino"),
    (["--calib-images", "0"], "--calib-images must be at least 1"),
    (["--observer", "mse"], "--observer 'mse' is not supported"),
])
def test_bad_options_are_clear_errors(trained, tmp_path, capsys, args, message):
    _, weights = trained
    with pytest.raises(SystemExit):
        quantize_main(["--config", CONFIG, "--weights", weights, "--output", str(tmp_path), *args])
    assert message in capsys.readouterr().err


def test_a_missing_checkpoint_is_named(tmp_path):
    missing = str(tmp_path / "nowhere.pth")
    with pytest.raises(SystemExit, match=f"--weights {missing}: checkpoint not found"):
        quantize_main(["--config", CONFIG, "--weights", missing, "--output", str(tmp_path / "out")])


def test_a_config_without_its_training_data_is_named(trained, tmp_path):
    _, weights = trained
    absent = str(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match=r"dataloader.train.dataset.names=\['absent_train'\].*absent.json"):
        quantize_main(["--config", CONFIG, "--weights", weights, "--output", str(tmp_path / "out"),
                       f"+dataloader.register=[{{'name': 'absent_train', 'json_file': '{absent}', "
                       f"'image_root': '{tmp_path}'}}]", "dataloader.train.dataset.names=['absent_train']"])


def test_topk_keeps_the_lower_index_of_equal_scores():
    """The post-processing's top-k: hand-computed ties (ONNX TopK's order), and torch.topk's values."""
    from retdet.modeling.postprocess import topk_lower_index_first

    scores = torch.tensor([0.5, 0.9, 0.5, 0.7, 0.5, 0.9])
    values, order = topk_lower_index_first(scores, 4)
    assert order.tolist() == [1, 5, 3, 0] and values.tolist() == pytest.approx([0.9, 0.9, 0.7, 0.5])
    assert topk_lower_index_first(scores, 10)[1].tolist() == [1, 5, 3, 0, 2, 4]
    x = torch.rand(10000, generator=torch.Generator().manual_seed(0)).mul(50).round()  # many ties
    values, order = topk_lower_index_first(x, 1000)
    assert torch.equal(values, x.topk(1000).values) and torch.equal(x[order], values)
    for v in values.unique():
        picked = order[values == v]
        assert torch.equal(picked, picked.sort().values)  # equal scores: ascending index
    kth = values[-1]
    assert torch.equal(order[values == kth], torch.nonzero(x == kth).flatten()[: int((values == kth).sum())])


def test_openvino_runs_the_int8_artifact(trained, int8_dir):
    """The second runtime (optional extra `retdet[openvino]`) on the same QDQ graph: the same bound
    against float32 as ONNX Runtime."""
    pytest.importorskip("openvino")
    from retdet.quantization.artifact import attach_quantized

    cfg, weights = trained
    images = _val_images(cfg)
    fp32 = Predictor(cfg, _fp32(cfg, weights))(images)
    model = build_model(cfg.model).eval()
    attach_quantized(model, int8_dir, backend="openvino")
    assert "openvino" in model.runner.runtime_description
    assert agreement(fp32, Predictor(cfg, model)(images)) >= 0.9


def test_the_entropy_observer_is_not_minmax_in_disguise(trained, tmp_path, monkeypatch):
    """ONNX Runtime's entropy calibrator with its default bins (128 -> 128) can only return the full
    range; ours passes its own bin counts, so some activation ranges must be narrower than minmax's.
    (256 -> 128 bins here instead of 2048 -> 128: the threshold search is pure Python, 8x faster.)"""
    from retdet.quantization import onnxruntime_backend

    monkeypatch.setitem(onnxruntime_backend.HISTOGRAM_BINS, "entropy", {"num_bins": 256, "num_quantized_bins": 128})
    cfg, weights = trained
    model = _fp32(cfg, weights)
    inputs = calibration_tensors(model, calibration_images(cfg, 2, seed=0))
    inputs = [inputs[0]] * 2  # one size: the histogram calibrator needs no padding
    scales = {}
    for observer in ("minmax", "entropy"):
        path = str(tmp_path / f"{observer}.onnx")
        quantize_network(model, inputs, path, observer=observer)
        scales[observer] = {t.name: float(numpy_helper.to_array(t)) for t in onnx.load(path).graph.initializer
                            if t.name.endswith("_scale") and numpy_helper.to_array(t).ndim == 0}
    common = scales["minmax"].keys() & scales["entropy"].keys()
    narrower = [k for k in common if scales["entropy"][k] < scales["minmax"][k] * 0.99]
    assert len(common) > 20 and len(narrower) >= len(common) // 4, (len(common), len(narrower))
