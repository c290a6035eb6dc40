"""Runtimes for a quantized network graph: ``runtime(images) -> (logits, deltas)``.

    images: (N, 3, Hp, Wp) float32 normalised batch (the model's preprocessing output)
    logits: per level (N, A*K, H_l, W_l); deltas: per level (N, A*4, H_l, W_l), float32 tensors

onnxruntime: ONNX Runtime's CPU provider, which runs each QDQ convolution as an integer convolution.
openvino:    OpenVINO's CPU plugin reading the same QDQ graph (its low-precision transformations turn
             the QDQ pairs into int8 kernels); optional, ``pip install 'retdet[openvino]'``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor


def _split(outputs: List[np.ndarray]) -> Tuple[List[Tensor], List[Tensor]]:
    tensors = [torch.from_numpy(np.ascontiguousarray(o)) for o in outputs]
    half = len(tensors) // 2
    return tensors[:half], tensors[half:]


def session_options(threads: Optional[int] = None):
    """ONNX Runtime's session options for our graphs: torch's thread count (or ``threads``), one
    inter-op thread (the graph is a chain of convolutions)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return options


class OnnxRuntimeRuntime:
    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        x = images.detach().cpu().float().contiguous().numpy()
        return _split(self.session.run(self.outputs, {"images": x}))


class OpenVinoRuntime:
    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise ImportError("the openvino runtime needs OpenVINO: pip install 'retdet[openvino]'") from e
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [o for o in self.compiled.outputs]

    def __call__(self, images: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        x = images.detach().cpu().float().contiguous().numpy()
        result = self.request.infer({0: x})
        return _split([np.array(result[o]) for o in self.outputs])


RUNTIMES: Dict[str, Callable] = {"onnxruntime": OnnxRuntimeRuntime, "openvino": OpenVinoRuntime}


def build_runtime(name: str, path: str, threads: Optional[int] = None):
    if name not in RUNTIMES:
        raise ValueError(f"unknown quantization backend {name!r}: choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name](path, threads)
