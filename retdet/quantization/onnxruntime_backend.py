"""Static int8 quantization with ONNX Runtime's quantizer (QDQ format).

The float32 network graph (:mod:`.network_onnx`) is first optimised by ONNX Runtime's pre-processing
(shape inference; batch norms and constant affine maps folded into the convolutions), then calibrated
on the given inputs and rewritten with QuantizeLinear/DequantizeLinear pairs around every convolution:
int8 weights per output channel, activations per tensor. The observer sets the activation ranges:

    minmax      the observed min and max (all values kept, coarser steps)
    entropy     the range minimising the KL divergence of the quantized histogram (TensorRT's method)
    percentile  the 99.999th percentile of |x| (clips rare outliers)

Runtimes read the resulting model and fuse each DQ -> Conv -> Q into an integer convolution.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .network_onnx import export_network, nodes_under

OBSERVERS = ("minmax", "entropy", "percentile")
# ONNX Runtime's entropy calibrator defaults to as many histogram bins as quantized bins (128), where
# the only candidate range is the full one (it equals minmax), and quantize_static does not pass the
# bin counts on: the ranges are computed here with TensorRT's setting (2048 bins -> 128) instead.
HISTOGRAM_BINS = {"entropy": {"num_bins": 2048, "num_quantized_bins": 128}}
# Operators given int8 inputs and outputs; the others (normalisation, shapes) run in float32 between them.
QUANTIZED_OPS = ["Conv", "Add", "Relu", "MaxPool", "Resize"]


def _ort():
    try:
        import onnxruntime
        from onnxruntime import quantization
    except ImportError as e:
        raise ImportError("int8 quantization uses ONNX Runtime: pip install onnxruntime") from e
    return onnxruntime, quantization


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self._items: Iterator[Dict] = iter([{"images": t.numpy()} for t in tensors])

    def get_next(self) -> Optional[Dict]:
        return next(self._items, None)


def _calibrate_histogram(model_path: str, inputs: Sequence[Tensor], method, bins: Dict, cache: str, tmp: str) -> None:
    """Activation ranges by a histogram observer with the given bin counts, written as ONNX Runtime's
    calibration cache (which quantize_static then reads instead of calibrating)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrator = create_calibrator(model_path, QUANTIZED_OPS, augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                                   calibrate_method=method, extra_options={"symmetric": False, **bins})
    calibrator.collect_data(_Reader(inputs))
    save_tensors_data(calibrator.compute_data(), cache)


def pad_to_common_size(inputs: Sequence[Tensor]) -> List[Tensor]:
    """(1, 3, H_i, W_i) tensors -> zero-padded (bottom/right) to the largest H and W among them."""
    h, w = max(t.shape[-2] for t in inputs), max(t.shape[-1] for t in inputs)
    return [F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2])) for t in inputs]


def quantize_network(model: nn.Module, inputs: Sequence[Tensor], output_path: str, *, observer: str = "minmax",
                     per_channel: bool = True, reduce_range: bool = False, fp32_layers: Sequence[str] = (),
                     logger: Optional[logging.Logger] = None) -> Dict:
    """Quantize ``model.network`` calibrated on ``inputs`` ((1, 3, Hp, Wp) normalised tensors) into
    ``output_path``; returns what was done (observer, excluded nodes, node counts, fp32 graph size)."""
    onnxruntime, q = _ort()
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}: choose one of {', '.join(OBSERVERS)}")
    if not inputs:
        raise ValueError("no calibration inputs")
    import onnx

    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    log = logger or logging.getLogger("retdet")
    if observer != "minmax" and len({tuple(t.shape) for t in inputs}) > 1:
        # ONNX Runtime's histogram calibrators stack each tensor over the inputs: give them one size
        # (zero padding, which is what the model's own padding of a batch is after normalisation).
        inputs = pad_to_common_size(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, optimised = os.path.join(tmp, "network_fp32.onnx"), os.path.join(tmp, "network_fp32_opt.onnx")
        export_network(model, inputs[0], fp32)
        fp32_bytes = os.path.getsize(fp32)
        q.quant_pre_process(fp32, optimised, skip_symbolic_shape=True)
        proto = onnx.load(optimised)
        excluded = nodes_under(proto, fp32_layers) if fp32_layers else []
        # Affine maps by constants (a GroupNorm's scale and shift) stay float32: they are cheap and
        # per-channel constants quantize badly per tensor. Residual and top-down additions are quantized.
        constants = {i.name for i in proto.graph.initializer} | {o for n in proto.graph.node
                                                                 if n.op_type == "Constant" for o in n.output}
        affine = [n.name for n in proto.graph.node if n.op_type in ("Add", "Mul")
                  and any(i in constants for i in n.input)]
        log.info("quantizing %d nodes (%d convolutions) with the %s observer on %d calibration images%s",
                 len(proto.graph.node), sum(n.op_type == "Conv" for n in proto.graph.node), observer, len(inputs),
                 f"; kept in float32: {len(excluded)} nodes of {list(fp32_layers)}" if excluded else "")
        cache = None
        if observer in HISTOGRAM_BINS:
            cache = os.path.join(tmp, "ranges.json")
            _calibrate_histogram(optimised, inputs, methods[observer], HISTOGRAM_BINS[observer], cache, tmp)
        q.quantize_static(
            optimised, output_path, _Reader(inputs), calibration_cache_path=cache, quant_format=q.QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=excluded + affine,
            calibrate_method=methods[observer],
            extra_options={"CalibTensorRangeSymmetric": False})
    ops = Counter(n.op_type for n in onnx.load(output_path).graph.node)
    return {"observer": observer, "per_channel": per_channel, "reduce_range": reduce_range,
            "fp32_layers": list(fp32_layers), "fp32_nodes": excluded, "fp32_onnx_bytes": fp32_bytes,
            "int8_onnx_bytes": os.path.getsize(output_path), "graph_ops": dict(sorted(ops.items()))}
