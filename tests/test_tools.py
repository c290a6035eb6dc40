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
                      "--cases", "post-processing", "(100000, 80) int", "(2, 256, 16, 16) -> 256, F(4", "--json", str(path))
    assert "speedup" in stdout
    results = check_report(path, "ops")
    assert {n.split(":")[0] for n in results} == {"sigmoid_focal_loss fwd+bwd", "batched_nms", "conv3x3 fwd+bwd"}
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


def test_benchmark_roofline_against_fvcore_and_the_profile(tmp_path):
    """--task roofline: the single-conv figures, then inference and a training step with FLOPs that agree
    with fvcore's count (2 per multiply-add), fractions of the single-conv figure, and time splits that
    sum to the whole and name the stages each workload has."""
    from fvcore.nn import FlopCountAnalysis

    from retdet.config import load_config
    from retdet.modeling import DetectorNetwork, build_model

    path = tmp_path / "roofline.json"
    overrides = ["model.backbone.depth=18", "model.head.num_classes=3"]  # torchvision can mirror it
    stdout = run_tool("tools/benchmark.py", "--task", "roofline", "--config", "configs/retinanet_R50_FPN_1x.py",
                      "--compare", "torchvision", "--iters", "2", "--input-size", "64x96", "--json", str(path),
                      *overrides)
    assert "GFLOP/s" in stdout
    results = check_report(path, "roofline")
    peaks = {n: r["ours"] for n, r in results.items() if n.startswith("single 3x3 conv")}
    assert len(peaks) == 3 and all(v > 1 for v in peaks.values()), peaks  # NCHW, NHWC, int8
    model = build_model(load_config(os.path.join(ROOT, "configs/retinanet_R50_FPN_1x.py"), overrides).model)
    fvcore_macs = FlopCountAnalysis(DetectorNetwork(model).eval(), torch.zeros(1, 3, 64, 96)).total()
    for workload in ("inference (batch 1, 64x96)", "train step (batch 2, 64x96)"):
        get = lambda name: results[f"{workload}: {name}"]  # noqa: E731
        gflop = get("GFLOP per call (2 per multiply-add)")
        if workload.startswith("inference"):
            # the network's convolutions, as fvcore counts them (a multiply-add as one)
            assert abs(gflop["ours"] - 2 * fvcore_macs / 1e9) / gflop["ours"] < 0.02, (gflop, fvcore_macs)
            assert gflop["ref"] == pytest.approx(gflop["ours"], rel=0.02)
        else:  # backward: about twice the forward's convolutions again (less for the frozen stages)
            assert 2.0 * 2 * fvcore_macs / 1e9 < gflop["ours"] / 2 < 3.2 * 2 * fvcore_macs / 1e9
        achieved = get("achieved")
        assert achieved["ours"] == pytest.approx(gflop["ours"] * 1e3 / get("time per call (median, not profiled)")["ours"])
        assert get("achieved / single-conv figure")["ours"] == pytest.approx(
            achieved["ours"] / max(peaks[n] for n in peaks if "float32" in n))
        shares = {n.split(": time in ")[1]: r for n, r in results.items() if n.startswith(f"{workload}: time in ")}
        for side in ("ours", "ref"):
            assert sum(r[side] for r in shares.values()) == pytest.approx(100, abs=0.01)
            assert shares["conv"][side] > 20
        stages = ("post-processing",) if workload.startswith("inference") else ("losses & matching", "optimizer")
        for stage in stages:
            assert shares[stage]["ours"] > 0 and shares[stage]["ref"] > 0, (stage, shares[stage])


def test_benchmark_rejects_bad_arguments():
    out = run_tool("benchmark", "--task", "data", "--compare", "torchvision", "--config", "configs/quickstart.py",
                   ok=False)
    assert "--compare applies to --task train, inference and roofline, not data" in out
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
