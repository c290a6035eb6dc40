"""Command-line tools on tiny inputs: benchmark JSON schema, data visualisation, weight conversion."""
import json
import os

import pytest
import torch
import torchvision

from .conftest import ROOT, run_tool


SCHEMA_KEYS = {"name", "ours", "ref", "unit", "speedup"}


def check_report(path, task):
    report = json.loads(path.read_text())
    assert set(report) == {"task", "device", "config", "results"} and report["task"] == task
    assert report["device"] == "cpu" and report["results"]
    for r in report["results"]:
        assert set(r) == SCHEMA_KEYS, r
        assert isinstance(r["name"], str) and isinstance(r["unit"], str) and r["ours"] is not None
    return {r["name"]: r for r in report["results"]}


def test_benchmark_ops_json_schema(tmp_path):
    path = tmp_path / "ops.json"
    stdout = run_tool("tools/benchmark.py", "--task", "ops", "--iters", "2", "--warmup", "1",
                      "--cases", "post-processing", "(100000, 80) int", "--json", str(path))
    assert "speedup" in stdout
    results = check_report(path, "ops")
    assert {n.split(":")[0] for n in results} == {"sigmoid_focal_loss fwd+bwd", "batched_nms"}
    for r in results.values():
        assert r["unit"] == "ms" and r["ours"] > 0 and r["ref"] > 0
        assert abs(r["speedup"] - r["ref"] / r["ours"]) < 1e-9


def test_benchmark_data_json(tmp_path):
    path = tmp_path / "data.json"
    run_tool("tools/benchmark.py", "--task", "data", "--config", "configs/quickstart.py", "--iters", "10",
             "--json", str(path), "dataloader.train.num_workers=0")
    (r,) = check_report(path, "data").values()
    assert r["unit"] == "images/s" and r["ours"] > 0 and r["ref"] is None and r["speedup"] is None


def test_benchmark_eval_backends_json(tmp_path):
    pytest.importorskip("faster_coco_eval")
    path = tmp_path / "eval.json"
    stdout = run_tool("tools/benchmark.py", "--task", "eval", "--images", "40", "--iters", "1", "--json", str(path))
    assert "pycocotools" in stdout
    (r,) = check_report(path, "eval").values()
    assert r["unit"] == "s" and r["ours"] > 0 and r["ref"] > 0 and "max metric difference 0.0e+00" in r["name"]


def test_benchmark_inference_and_train_against_torchvision(tmp_path):
    for task, size in (("inference", "64x96"), ("train", "64x64")):
        path = tmp_path / f"{task}.json"
        int8 = ["--int8"] if task == "inference" else []  # quantized here, on the benchmark's image
        stdout = run_tool("tools/benchmark.py", "--task", task, "--config", "configs/retinanet_R50_FPN_1x.py",
                          "--compare", "torchvision", *int8, "--iters", "2", "--warmup", "1", "--input-size", size,
                          "--json", str(path), "model.backbone.depth=18", "model.head.num_classes=3")
        # The mirrored torchvision model has exactly our architecture: its weights load into ours.
        assert "weights: shared" in stdout, stdout
        results = check_report(path, task)
        rate = next(r for n, r in results.items() if "images/s" in n)
        assert rate["ours"] > 0 and rate["ref"] > 0 and abs(rate["speedup"] - rate["ours"] / rate["ref"]) < 1e-9
        params = results["parameters"]
        assert params["ours"] == params["ref"]  # the same network, so the same count
        flops = next(r for n, r in results.items() if n.startswith("GFLOPs"))
        assert flops["ours"] > 0 and abs(flops["ours"] - flops["ref"]) / flops["ref"] < 0.01
        if task == "inference":
            stages = [n for n in results if n.endswith("(stage)")]
            assert len(stages) == 4
            # our int8 network, timed in the same loop: against torchvision, and against our float32
            assert results["int8 images/s"]["ours"] > 0 and results["int8 images/s"]["ref"] == rate["ref"]
            own = results["int8 images/s (ref: ours float32)"]
            assert own["ours"] == results["int8 images/s"]["ours"] and own["ref"] == rate["ours"]
            size = next(r for n, r in results.items() if n.startswith("network on disk"))
            assert size["ours"] * 3.5 < size["ref"], size  # int8 weights: under 1/3.5 of the float32 graph


def test_benchmark_rejects_bad_arguments():
    out = run_tool("benchmark", "--task", "data", "--compare", "torchvision", "--config", "configs/quickstart.py",
                   ok=False)
    assert "--compare applies to --task train and inference" in out
    out = run_tool("benchmark", "--task", "inference", "--config", "configs/quickstart.py", "--input-size",
                   "800by1216", ok=False)
    assert "800x1216 (HxW)" in out
    for option in (["--int8"], ["--variant", "pruned=model.pth"]):
        out = run_tool("benchmark", "--task", "train", *option, "--config", "configs/quickstart.py", ok=False)
        assert "--int8, --weights and --variant apply to --task inference" in out
    out = run_tool("benchmark", "--task", "inference", "--variant", "pruned", "--config", "configs/quickstart.py",
                   ok=False)
    assert "--variant 'pruned': expected NAME=WEIGHTS or NAME=WEIGHTS@CONFIG" in out


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


def test_benchmark_reference_names_a_width_it_cannot_mirror():
    from retdet.benchmarks.model import share_weights, torchvision_reference
    from retdet.config import load_config
    from retdet.modeling import build_model

    cfg = load_config(os.path.join(ROOT, "configs", "retinanet_R50_FPN_1x.py"),
                      ["model.backbone.depth=18", "model.backbone.width=32"])
    ref, differences = torchvision_reference(cfg.model)
    assert differences == ["backbone width 32 (torchvision's ResNet: 64)"]
    assert share_weights(build_model(cfg.model), ref).startswith("independent random weights")


# Every tool that reads a config takes the shared flags (retdet/engine/defaults.py), so a user's plugin
# module can be named on any command line. convert_dataset reads no config and builds nothing.
CONFIG_TOOLS = ["analyze_anchors", "analyze_errors", "analyze_model", "benchmark", "convert_weights", "demo", "export", "prune", "quantize", "soak",
                "train_net", "visualize_data"]


@pytest.mark.parametrize("tool", CONFIG_TOOLS)
def test_every_config_tool_takes_the_shared_flags(tool):
    out = run_tool(tool, "--help")
    for flag in ("--config", "--import", "key.path=value"):
        assert flag in out.stdout, f"tools/{tool}.py --help has no {flag}"


def test_the_tools_are_all_listed():
    """tools/ (the checkout's entry points), retdet/tools/ (their implementations), setup.py's commands and
    the README's list name the same tools."""
    on_disk = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".py"))
    implemented = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, "retdet", "tools"))
                         if f.endswith(".py") and f != "__init__.py")
    assert on_disk == implemented and sorted(CONFIG_TOOLS + ["convert_dataset"]) == implemented
    setup_py, readme = (open(os.path.join(ROOT, f)).read() for f in ("setup.py", "README.md"))
    index = open(os.path.join(ROOT, "retdet", "tools", "__init__.py")).read()
    for name in implemented:
        assert f'"{name}"' in setup_py, f"setup.py has no command for {name}"
        assert f"retdet.tools.{name}" in index, f"retdet/tools/__init__.py does not list {name}"
        assert f"`{name}.py`" in readme, f"README.md's layout table does not list tools/{name}.py"
