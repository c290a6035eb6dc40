"""The memory layout of a network's activations and weights, per mode: NHWC (channels last) or NCHW.

oneDNN (CPU) and cuDNN run the same convolutions at different speeds in the two layouts, and which
one wins depends on the pass and the instruction set. Measured with tools/benchmark.py --compare
torchvision, R50-FPN, 2 threads (docs/benchmarking.md has the tables):

- AVX-512 (an Intel Xeon with VNNI; a Zen 4 AMD EPYC): NHWC is faster for inference and training.
- AVX2 without AVX-512 (a Zen 3 AMD EPYC; the Zen 4 with oneDNN and ATen limited to AVX2): NHWC is
  faster for inference. For a training step with oneDNN's direct 3x3 kernels (model.conv_algorithm
  "direct"), NCHW is (its NHWC backward kernels are slower there: 6.2 s against 4.9 s a step); with
  the large 3x3 layers as Winograd (the default, retdet/layers/winograd.py, whose kernels work
  channels-last), NHWC is again (3.7 s against 3.9 s). A compiled network (model.compile) runs no
  Winograd layer and follows the direct rule.
- CUDA: NHWC, for tensor cores under AMP.

``"auto"`` (the default) applies that rule; "NHWC" or "NCHW" fixes one layout, and
``dict(train=..., inference=...)`` one per mode. The detector changes layout when it changes mode
(``model.train()`` / ``model.eval()``); the layout never changes results beyond float rounding.
"""
from __future__ import annotations

from typing import Dict, Mapping, Union

import torch

MODES = ("train", "inference")
LAYOUTS = {"NHWC": torch.channels_last, "NCHW": torch.contiguous_format,
           "channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
Spec = Union[str, Mapping[str, str]]


def cpu_has_avx512() -> bool:
    """Whether ATen runs its AVX-512 kernels here (``ATEN_CPU_CAPABILITY`` can lower it)."""
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def auto_layout(mode: str, device_type: str = "cpu", conv_algorithm: str = "auto") -> str:
    """The layout "auto" picks for ``mode`` ("train" or "inference") on ``device_type`` with that
    model.conv_algorithm (see above)."""
    if device_type != "cpu" or mode == "inference" or cpu_has_avx512() or conv_algorithm != "direct":
        return "NHWC"
    return "NCHW"


def check_spec(spec: Spec, where: str = "model.memory_format") -> Dict[str, str]:
    """A memory_format setting -> {mode: "auto" | layout name}, or a ValueError naming the bad value."""
    choices = ["auto", *LAYOUTS]
    if isinstance(spec, str):
        spec = {mode: spec for mode in MODES}
    elif isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(MODES))
        if unknown:
            raise ValueError(f"{where}: unknown mode(s) {unknown}; a dict takes the keys {list(MODES)}")
        spec = {mode: spec.get(mode, "auto") for mode in MODES}
    else:
        raise ValueError(f"{where} must be one of {choices} or dict(train=..., inference=...), got {spec!r}")
    for mode, value in spec.items():
        if value not in choices:
            raise ValueError(f"{where}: {value!r} for {mode} is not a layout; choose one of {choices}")
    return dict(spec)


def resolve(spec: Mapping[str, str], mode: str, device_type: str, conv_algorithm: str = "auto") -> torch.memory_format:
    """The torch memory format for ``mode`` on ``device_type`` under a checked spec."""
    value = spec[mode]
    return LAYOUTS[auto_layout(mode, device_type, conv_algorithm) if value == "auto" else value]


def layout_name(memory_format: torch.memory_format) -> str:
    return "NHWC" if memory_format == torch.channels_last else "NCHW"
