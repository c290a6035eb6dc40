"""Command-line tools on tiny inputs: benchmark JSON schema, data visualisation, weight conversion."""
import json
import os
import subprocess
import sys

import torch
import torchvision

from .conftest import ROOT


def run_tool(*args, timeout=300):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_benchmark_ops_json_schema(tmp_path):
    path = tmp_path / "ops.json"
    stdout = run_tool("tools/benchmark.py", "--task", "ops", "--runs", "2", "--warmup", "1",
                      "--cases", "post-processing", "(100000, 80) int", "--json", str(path))
    assert "speedup" in stdout
    report = json.loads(path.read_text())
    assert report["task"] == "ops" and report["device"] == "cpu"
    assert {r["name"] for r in report["results"]} == {"sigmoid_focal_loss fwd+bwd", "batched_nms"}
    for r in report["results"]:
        assert set(r) == {"name", "case", "ours_ms", "ref_ms", "speedup"}
        assert r["ours_ms"] > 0 and r["ref_ms"] > 0 and abs(r["speedup"] - r["ref_ms"] / r["ours_ms"]) < 1e-9


def test_benchmark_data_json(tmp_path):
    path = tmp_path / "data.json"
    run_tool("tools/benchmark.py", "--task", "data", "--config", "configs/quickstart.py", "--iters", "10",
             "--json", str(path), "dataloader.train.num_workers=0")
    report = json.loads(path.read_text())
    assert report["task"] == "data" and report["results"][0]["images_per_s"] > 0


def test_visualize_data_writes_images(tmp_path):
    run_tool("tools/visualize_data.py", "--config", "configs/quickstart.py", "--num", "3", "--output", str(tmp_path),
             "dataloader.train.num_workers=0")
    written = sorted(os.listdir(tmp_path))
    assert "grid.jpg" in written and len([f for f in written if f.startswith("sample_")]) == 3


def test_convert_weights_cli(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    stdout = run_tool("tools/convert_weights.py", "--source", "torchvision-retinanet", "--input", str(tmp_path / "tv.pth"),
                      "--output", str(tmp_path / "out.pth"))
    assert "tensors" in stdout
    converted = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    assert "head.cls_score.weight" in converted and "neck.p6.weight" in converted
