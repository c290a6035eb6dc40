"""Build and install retdet; compiles the csrc/ ops extension (retdet._C).

CPU kernels are always built. CUDA kernels are built when torch sees a GPU and CUDA_HOME is set, or
when FORCE_CUDA=1 (a build machine without a GPU). TORCH_CUDA_ARCH_LIST picks the GPU
architectures and MAX_JOBS the parallel compile jobs, as usual for torch extensions.
RETDET_PREBUILT_EXTENSION=path/to/_C*.so packages that already compiled extension instead of
compiling csrc/ again (a wheel of the build you have, e.g. the editable install's; tests/test_install.py).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension as TorchBuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def extension():
    csrc = os.path.join(ROOT, "csrc")
    sources = glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp"))
    cuda_sources = glob.glob(os.path.join(csrc, "cuda", "*.cu"))
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = CUDA_HOME is not None and (torch.cuda.is_available() or force_cuda)
    if force_cuda and CUDA_HOME is None:
        raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME (e.g. /usr/local/cuda)")
    # -ffp-contract=off: no fused multiply-adds, so IoUs round exactly like torchvision's kernels.
    # -fopenmp: at::parallel_for runs on OpenMP (torch's own libgomp) only when compiled with it.
    # -g0: no debug information (Python's own CFLAGS ask for -g), a third of the compile time.
    cxx = ["-O3", "-g0", "-ffp-contract=off", "-fopenmp"]  # the C++ standard flag comes from torch
    link = ["-fopenmp"]
    define_macros = []
    if with_cuda:
        sources += cuda_sources
        define_macros.append(("RETDET_WITH_CUDA", None))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-DCUDA_HAS_FP16=1"]
        print(f"retdet: building CPU and CUDA kernels (CUDA_HOME={CUDA_HOME}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')})")
        return CUDAExtension(
            "retdet._C",
            sorted(sources),
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    print("retdet: building CPU kernels only (no CUDA found; set FORCE_CUDA=1 and CUDA_HOME to build them)")
    return CppExtension("retdet._C", sorted(sources), extra_compile_args={"cxx": cxx}, extra_link_args=link)


class BuildExtension(TorchBuildExtension):
    """torch's extension builder, or a copy of RETDET_PREBUILT_EXTENSION (see the module doc)."""

    def build_extension(self, ext) -> None:
        prebuilt = os.environ.get("RETDET_PREBUILT_EXTENSION")
        if not prebuilt:
            return super().build_extension(ext)
        if not os.path.isfile(prebuilt):
            raise FileNotFoundError(f"RETDET_PREBUILT_EXTENSION={prebuilt}: no such file")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        print(f"retdet: packaging the prebuilt extension {prebuilt}")
        shutil.copy2(prebuilt, target)


def config_packages():
    """configs/ (edited in one place, the repository root) travels in the package as retdet/configs:
    each of its folders becomes a package of config files, read by retdet.config, never imported."""
    packages = {}
    for folder, dirs, files in os.walk(os.path.join(ROOT, "configs")):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        rel = os.path.relpath(folder, ROOT)
        name = "retdet." + rel.replace(os.sep, ".")
        packages[name] = rel
    return packages


CONFIGS = config_packages()
# One implementation per tool in retdet/tools/; tools/*.py are thin entry points for a checkout.
COMMANDS = {
    "retdet-train": "train_net", "retdet-benchmark": "benchmark", "retdet-demo": "demo", "retdet-export": "export",
    "retdet-analyze": "analyze_model", "retdet-analyze-errors": "analyze_errors",
    "retdet-analyze-anchors": "analyze_anchors", "retdet-visualize": "visualize_data",
    "retdet-convert-weights": "convert_weights",
    "retdet-soak": "soak", "retdet-convert-dataset": "convert_dataset", "retdet-quantize": "quantize",
    "retdet-prune": "prune",
}

setup(
    name="retdet",
    version="0.1.0",
    description="RetinaNet object detection in PyTorch: registry-driven, with fused CPU/CUDA ops",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "configs.*", "tools")) + sorted(CONFIGS),
    package_dir=CONFIGS,
    package_data={name: ["*.py"] for name in CONFIGS},
    entry_points={"console_scripts": [f"{cmd} = retdet.tools.{module}:main" for cmd, module in COMMANDS.items()]},
    python_requires=">=3.9",
    # Optional: a faster COCO evaluator (dataloader.evaluator.backend="faster_coco_eval") and Slurm
    # submission (tools/train_net.py --slurm). The tests install both (requirements-test.txt).
    # int8 inference (tools/quantize.py) needs onnx and onnxruntime; OpenVINO is a second runtime for it.
    extras_require={"fast-eval": ["faster-coco-eval==1.8.0"], "slurm": ["submitit==1.5.4"],
                    "int8": ["onnx>=1.16", "onnxruntime>=1.20"], "openvino": ["openvino==2026.4.1"],
                    "prune": ["torch-pruning==1.6.1"],
                    # experiment trackers (retdet/engine/trackers.py); mlflow-skinny: the client without the server
                    "mlflow": ["mlflow-skinny==3.18.0"], "wandb": ["wandb==0.31.0"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
