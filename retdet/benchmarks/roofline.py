"""The model against this machine's own limit: what one large convolution attains, and where the
detector's time goes.

``attainable_conv``: GFLOP/s of one large 3x3 convolution (256 -> 256 channels on a 128x128 map, the
size of a RetinaNet head layer), float32 in both memory layouts, and int8 through ONNX Runtime (the
runtime our int8 path uses). No model can beat that figure by much: every layer of ours is a
convolution of that kind or a smaller, less efficient one.

``time_split``: one call of a function under torch.profiler, each op's own time attributed to a layer
kind (convolution, normalisation, activation, elementwise and copies) or to the stage it ran in
(pre-processing, post-processing, losses with anchor matching, the optimizer step); the stages are
marked by wrapping the detector's parts while profiling, not by markers in the model.

``flops``: FLOPs of one call (torch.utils.flop_counter, 2 per multiply-add, backward included), so a
training step counts its backward convolutions too. They are the direct convolutions' FLOPs: layers
run as Winograd (retdet/layers/winograd.py) do fewer multiplications for the same result, so the
achieved rate is direct-convolution-equivalent and can exceed the single-conv figure; their
transforms and GEMMs count as convolution time.
"""
from __future__ import annotations

import contextlib
import statistics
from collections import defaultdict
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from retdet.utils.timing import time_ms

KINDS = ("conv", "norm", "activation", "elementwise & copies", "other ops")
STAGES = ("pre-processing", "post-processing", "losses & matching", "optimizer")
_STAGE_PREFIX = "retdet_stage::"


# ---- attainable throughput ----------------------------------------------------------------------

def conv_shape(channels: int = 256, size: int = 128):
    """(input shape, weight shape, FLOPs) of the reference convolution: 3x3, stride 1, padding 1."""
    flops = 2 * channels * channels * 9 * size * size
    return (1, channels, size, size), (channels, channels, 3, 3), flops


def attainable_conv_fp32(channels: int = 256, size: int = 128, runs: int = 10) -> Dict[str, float]:
    """{"NCHW": GFLOP/s, "NHWC": GFLOP/s} of one large float32 3x3 convolution (median of ``runs``)."""
    x_shape, w_shape, flops = conv_shape(channels, size)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(x_shape, generator=g), torch.randn(w_shape, generator=g) * 0.01
    b = torch.zeros(channels)
    out = {}
    for name, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
        xf, wf = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
        with torch.no_grad():
            ms = statistics.median(time_ms(lambda: F.conv2d(xf, wf, b, padding=1), warmup=3, runs=runs))
        out[name] = flops / ms / 1e6
    return out


def attainable_conv_int8(channels: int = 256, size: int = 128, runs: int = 10) -> Optional[float]:
    """GOP/s of the same convolution in int8 (uint8 activations, per-channel int8 weights, int32
    accumulation) as one ONNX Runtime QLinearConv with the session options of our int8 path; None
    without onnx/onnxruntime."""
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        import onnxruntime as ort

        from retdet.quantization.runtimes import session_options
    except ImportError:
        return None
    x_shape, w_shape, flops = conv_shape(channels, size)
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=w_shape, dtype=np.int8)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.array(0.02, np.float32), "x_scale"), (np.array(128, np.uint8), "x_zp"), (weight, "w"),
        (np.full(channels, 0.001, np.float32), "w_scale"), (np.zeros(channels, np.int8), "w_zp"),
        (np.array(0.05, np.float32), "y_scale"), (np.array(128, np.uint8), "y_zp"),
        (np.zeros(channels, np.int32), "bias"))]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "bias"],
                            ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph([node], "conv_int8", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    x = rng.integers(0, 256, size=x_shape, dtype=np.uint8)
    ms = statistics.median(time_ms(lambda: session.run(None, {"x": x}), warmup=3, runs=runs))
    return flops / ms / 1e6


# ---- FLOPs and where the time goes --------------------------------------------------------------

def flops(fn: Callable[[], Any]) -> Tuple[int, int]:
    """(all FLOPs, convolution FLOPs) of one call of ``fn``, 2 per multiply-add, backward included."""
    from torch.utils.flop_counter import FlopCounterMode

    from retdet.layers.conv_bn import calling_modules

    # The counter knows aten's convolutions, not oneDNN's fused ones: count on the unfused route.
    with calling_modules(), FlopCounterMode(display=False) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    return counter.get_total_flops(), sum(v for k, v in per_op.items() if "conv" in str(k))


def op_kind(name: str) -> str:
    """An aten op's name -> its layer kind (one of KINDS)."""
    n = name.lower()
    if "conv" in n:
        return "conv"
    if "norm" in n:  # batch_norm, native_group_norm(_backward), layer_norm
        return "norm"
    if any(k in n for k in ("relu", "threshold", "silu", "sigmoid", "hardtanh", "hardswish", "clamp_min")):
        return "activation"
    if any(k in n for k in ("add", "mul", "sub", "div", "copy", "clone", "contiguous", "cat", "pad", "fill",
                            "zero", "to_dense", "reorder", "sum", "where")):
        return "elementwise & copies"
    return "other ops"


@contextlib.contextmanager
def stages_marked(model: nn.Module) -> Iterator[None]:
    """Wrap the detector's pre-processing, post-processing and loss parts in profiler regions named
    after their stage, for the duration of the block (instance attributes, removed afterwards)."""
    preprocess = getattr(model, "preprocess", None)
    targets = [(preprocess, "forward" if isinstance(preprocess, nn.Module) else None, "pre-processing"),
               (getattr(model, "postprocess", None), "in_input", "post-processing"),
               (model, "label_anchors", "losses & matching"), (model, "losses", "losses & matching"),
               # torchvision's RetinaNet, the reference
               (getattr(model, "transform", None), "forward", "pre-processing"),
               (model, "postprocess_detections", "post-processing"), (model, "compute_loss", "losses & matching")]
    patched = []
    for owner, attr, stage in targets:
        if owner is None or attr is None or not callable(getattr(owner, attr, None)):
            continue

        def marked(*args, _original=getattr(owner, attr), _stage=stage, **kwargs):
            with torch.profiler.record_function(_STAGE_PREFIX + _stage):
                return _original(*args, **kwargs)
        patched.append((owner, attr, owner.__dict__.get(attr)))
        setattr(owner, attr, marked)
    try:
        yield
    finally:
        for owner, attr, own in reversed(patched):
            if own is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)


def _ancestor_name(event, match: Callable[[str], bool]) -> Optional[str]:
    """The name of the event or its nearest enclosing CPU event that ``match``es, or None."""
    e = event
    while e is not None:
        if match(e.name):
            return e.name
        e = e.cpu_parent
    return None


def _inside_winograd(event) -> bool:
    """Whether the op ran inside a Winograd convolution (retdet/layers/winograd.py: its transforms and
    its GEMMs are convolution time)."""
    return _ancestor_name(event, lambda name: "WinogradConv3x3" in name) is not None


def _stage_of(event) -> Optional[str]:
    name = _ancestor_name(event, lambda n: n.startswith((_STAGE_PREFIX, "Optimizer.step")))
    if name is None:
        return None
    return "optimizer" if name.startswith("Optimizer.step") else name[len(_STAGE_PREFIX):]


def time_split(fn: Callable[[], Any], runs: int = 2) -> Dict[str, float]:
    """Milliseconds per call of ``fn`` by stage (STAGES) and, outside those, by layer kind (KINDS),
    from the ops' own (self) CPU time under torch.profiler; also "wall" (the profiled wall time per
    call, profiler overhead included) and "profiled" (the sum of the parts)."""
    import time

    fn()  # warm: allocations and oneDNN's primitive cache
    parts: Dict[str, float] = defaultdict(float)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(runs):
            fn()
        wall = (time.perf_counter() - start) * 1e3 / runs
    for event in prof.events():
        stage = _stage_of(event)
        op = event.name.startswith(("aten::", "mkldnn::", "retdet::winograd"))
        key = stage if stage is not None else (None if not op else "conv" if _inside_winograd(event)
                                               else op_kind(event.name))
        if key is None:
            continue  # autograd and profiler wrappers: their children hold the time
        parts[key] += event.self_cpu_time_total / 1e3 / runs
    out = {k: parts.get(k, 0.0) for k in (*KINDS, *STAGES)}
    out["profiled"] = sum(out.values())
    out["wall"] = wall
    return out


def roofline_figures(fn: Callable[[], Any], peak_gflops: float, *, runs: int,
                     model: nn.Module) -> List[Tuple[str, float, str]]:
    """(name, value, unit) for one workload ``fn``: its FLOPs, median time, achieved GFLOP/s and their
    fraction of ``peak_gflops``, the convolutions' own rate, and the time split (shares of the profile)."""
    with stages_marked(model):
        split = time_split(fn, runs=max(1, runs // 3))
    total, conv_flops = flops(fn)
    ms = statistics.median(time_ms(fn, warmup=1, runs=runs))
    achieved = total / ms / 1e6
    figures = [("GFLOP per call (2 per multiply-add)", total / 1e9, "GFLOP"),
               ("time per call (median, not profiled)", ms, "ms"),
               ("achieved", achieved, "GFLOP/s"),
               ("achieved / single-conv figure", achieved / peak_gflops, "ratio")]
    if split["conv"] > 0:
        # the convolutions' FLOPs over the convolutions' own time (scaled from the profile to the wall time)
        conv_ms = split["conv"] * ms / max(split["profiled"], 1e-9)
        figures.append(("convolutions alone / single-conv figure", conv_flops / conv_ms / 1e6 / peak_gflops,
                        "ratio"))
    for key in (*KINDS, *STAGES):
        figures.append((f"time in {key}", 100 * split[key] / max(split["profiled"], 1e-9), "%"))
    return figures
