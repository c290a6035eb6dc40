"""tools/demo.py, tools/analyze_model.py and tools/export.py on a small model and tiny inputs."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from .conftest import ROOT, run_tool

CONFIG = "configs/quickstart.py"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Quickstart weights that detect things (tests/helpers/models.py)."""
    from .helpers.models import detecting_model

    model = detecting_model(os.path.join(ROOT, CONFIG))
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three synthetic-looking images of different sizes, and a corrupt file (skipped with a warning)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 200), (200, 150), (97, 131)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (0, 0, 255), -1)
        cv2.imwrite(str(folder / f"img{i}.png"), img)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_demo_on_folder_writes_drawings_and_coco_results(tmp_path, weights, images):
    out = run_tool("tools/demo.py", "--config", CONFIG, "--weights", weights, "--input", str(images),
              "--output", str(tmp_path), "--score-thresh", "0.3")
    assert "skipped: cannot decode image" in out and "broken.jpg" in out and "images 4/4" in out
    assert "3 drawn images" in out and "(1 unreadable, skipped)" in out
    written = sorted(os.listdir(tmp_path))
    assert {"img0.png", "img1.png", "img2.png", "results.json", "images.json"} <= set(written)
    drawn, original = cv2.imread(str(tmp_path / "img1.png")), cv2.imread(str(images / "img1.png"))
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)  # boxes were drawn
    results = json.loads((tmp_path / "results.json").read_text())
    meta = json.loads((tmp_path / "images.json").read_text())
    assert results and {r["image_id"] for r in results} <= {im["id"] for im in meta["images"]}
    categories = {c["id"]: c["name"] for c in meta["categories"]}
    assert set(categories.values()) == {"circle", "square", "triangle", "cross"}
    for r in results:
        assert r["category_id"] in categories and r["score"] >= 0.3 and len(r["bbox"]) == 4
        x, y, w, h = r["bbox"]
        size = next((im["height"], im["width"]) for im in meta["images"] if im["id"] == r["image_id"])
        assert w >= 0 and h >= 0 and x >= 0 and y >= 0 and x + w <= size[1] + 1e-3 and y + h <= size[0] + 1e-3


def test_demo_on_video(tmp_path, weights):
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 80))
    for i in range(4):
        frame = np.full((80, 96, 3), 40 * i, np.uint8)
        cv2.rectangle(frame, (10 + 5 * i, 10), (50 + 5 * i, 60), (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    out = run_tool("tools/demo.py", "--config", CONFIG, "--weights", weights, "--input", video,
              "--output", str(tmp_path / "out"), "--score-thresh", "0.3")
    assert "frames 4/4" in out
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_detections.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    frames = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert [f["id"] for f in frames] == [1, 2, 3, 4]


def test_demo_errors_name_the_input(tmp_path, weights):
    out = run_tool("tools/demo.py", "--config", CONFIG, "--weights", weights, "--input", str(tmp_path / "nope.jpg"),
              "--output", str(tmp_path), ok=False)
    assert "nope.jpg: no such file or folder" in out
    out = run_tool("tools/demo.py", "--config", CONFIG, "--weights", str(tmp_path / "missing.pth"), "--input",
              str(tmp_path), "--output", str(tmp_path), ok=False)
    assert "checkpoint not found" in out and "missing.pth" in out


def test_analyze_model_tables_match_fvcore():
    from fvcore.nn import FlopCountAnalysis

    from retdet.config import load_config
    from retdet.modeling import DetectorNetwork, build_model

    out = run_tool("tools/analyze_model.py", "--config", CONFIG, "--input-size", "128x160")
    assert "backbone" in out and "neck" in out and "head" in out and "#parameters or shape" in out
    model = build_model(load_config(os.path.join(ROOT, CONFIG)).model).eval()
    expected = FlopCountAnalysis(DetectorNetwork(model), torch.zeros(1, 3, 128, 160))
    expected.unsupported_ops_warnings(False)
    total_line = next(line for line in out.splitlines() if line.startswith("| total"))
    assert abs(float(total_line.split("|")[2]) - expected.total() / 1e9) < 0.006
    params = sum(p.numel() for p in model.parameters())
    assert f"{params / 1e6:.2f} M parameters" in out


# Detectron2's order (configs/compat/retinanet_R50_FPN_detectron2.py): NMS on unclipped boxes, then clip, drop empty.
D2_POST = ["model.postprocess.clip_before_nms=False", "model.postprocess.drop_empty=after_nms"]


@pytest.mark.parametrize("fmt, opts", [("torchscript", []), ("onnx", []), ("onnx", D2_POST)],
                         ids=["torchscript", "onnx", "onnx-detectron2-postprocess"])
def test_export_matches_eager(tmp_path, weights, images, fmt, opts):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (requirements-test.txt)")
    # Images of three sizes (so three padded input shapes): the graph is not tied to the traced one.
    check = tmp_path / "check"
    check.mkdir()
    for name in ("img0.png", "img1.png", "img2.png"):
        (check / name).write_bytes((images / name).read_bytes())
    out = run_tool("tools/export.py", "--config", CONFIG, "--weights", weights, "--format", fmt,
              "--output", str(tmp_path / "out"), "--check-images", str(check), *opts)
    assert "exported == eager on 3 images" in out
    detections = int(out.split("exported == eager on 3 images (")[1].split(" ")[0])
    assert detections > 10  # a comparison of empty outputs would prove nothing
    assert os.path.exists(tmp_path / "out" / ("model.pt" if fmt == "torchscript" else "model.onnx"))


def test_exported_graph_with_no_detections(weights):
    """Nothing above the score threshold: empty outputs, not an error (the class offsets of the
    ONNX-exportable NMS must not reduce over an empty tensor)."""
    from retdet.config import load_config
    from retdet.export import ExportableRetinaNet
    from retdet.modeling import build_model

    model = build_model(load_config(os.path.join(ROOT, CONFIG)).model)
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    for post in ({}, {"clip_before_nms": False, "drop_empty": "after_nms"}):
        for key, value in post.items():
            setattr(model.postprocess, key, value)
        model.postprocess.score_threshold = 1.0
        graph = ExportableRetinaNet(model, nms="torchvision")
        with torch.no_grad():
            boxes, scores, labels = graph(torch.full((1, 3, 128, 128), 100.0), torch.tensor([120, 100]))
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_export_compare_catches_differences():
    from retdet.tools.export import compare
    from retdet.structures import Detections

    eager = Detections(boxes=torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), scores=torch.tensor([0.9, 0.8]),
                       labels=torch.tensor([1, 2]))
    same = (eager.boxes.numpy(), eager.scores.numpy(), eager.labels.numpy())
    assert compare(eager, same, "x") == ""
    moved = (eager.boxes.numpy() + 0.5, eager.scores.numpy(), eager.labels.numpy())
    assert "no eager match" in compare(eager, moved, "x")
    relabelled = (eager.boxes.numpy(), eager.scores.numpy(), np.array([1, 3]))
    assert "no eager match" in compare(eager, relabelled, "x")
    swapped = tuple(a[::-1].copy() for a in same)  # the same detections in another order: equal
    assert compare(eager, swapped, "x") == ""
    assert "1 exported detections vs 2 eager" in compare(eager, tuple(a[:1] for a in same), "x")


def test_export_rejects_unsupported_format(tmp_path, weights):
    out = run_tool("tools/export.py", "--config", CONFIG, "--weights", weights, "--format", "tflite", ok=False)
    assert "--format 'tflite' is not supported: choose one of torchscript, onnx" in out
