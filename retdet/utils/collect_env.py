"""Print the environment as a table: versions, devices, and which compiled kernels are present.

    python -m retdet.utils.collect_env
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import List, Tuple

import torch

from .logger import format_table


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_env() -> List[Tuple[str, str]]:
    from retdet import __version__, ops
    from retdet.ops import _extension

    rows = [
        ("Python", sys.version.split()[0]),
        ("Platform", platform.platform()),
        ("retdet", f"{__version__} ({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})"),
        ("retdet._C (compiled ops)", "built" if ops.has_extension() else f"MISSING: {_extension.load_error()}"),
        ("  CPU kernels", "yes" if ops.has_extension() else "no (pure-PyTorch fallback)"),
        ("  CUDA kernels", "yes" if ops.extension_has_cuda() else "no"),
        ("PyTorch", f"{torch.__version__} ({os.path.dirname(torch.__file__)})"),
        ("PyTorch CUDA / cuDNN", f"{torch.version.cuda} / {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'n/a'}"),
        ("CPU threads (torch)", str(torch.get_num_threads())),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"GPU {i}", f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB)"))
    rows.append(("CUDA_HOME (env)", os.environ.get("CUDA_HOME", "unset")))
    for name in ("torchvision", "fvcore", "iopath", "pycocotools", "numpy", "termcolor", "tabulate"):
        rows.append((name, _version(name)))
    import cv2

    rows.append(("opencv (cv2)", cv2.__version__))
    return rows


def main() -> None:
    print(format_table(collect_env(), headers=["component", "value"]))


if __name__ == "__main__":
    main()
