"""retdet as an installed library: the wheel is built from the tracked sources, installed into a fresh
virtual environment (which reuses this environment's torch and other dependencies through a .pth
file, not the repository), and docs/your_project.md is run from a folder outside the repository:
a registered backbone of the user's own, a shipped config extended by name, training, evaluation.

The wheel packages the extension this environment has built (`make`'s editable install:
RETDET_PREBUILT_EXTENSION, see setup.py) instead of compiling csrc/ a second time; without one it is
compiled with the CPU kernels only. RETDET_TEST_WHEEL=path/to.whl reuses a wheel built before.
"""
import glob
import os
import shutil
import site
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.docs, pytest.mark.slow]
from .test_docs import bash_blocks


def tracked_sources(dst):
    """A clean copy of what git tracks (build outputs and the editable install's .so stay behind)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, (f.decode() for f in files)):
        if os.path.isfile(os.path.join(ROOT, f)):
            os.makedirs(os.path.join(dst, os.path.dirname(f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(dst, f))
    return dst


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """bin/ of a fresh virtual environment with the retdet wheel installed (not editable)."""
    work = tmp_path_factory.mktemp("install")
    wheel = os.environ.get("RETDET_TEST_WHEEL")
    if not wheel:
        src = tracked_sources(str(work / "src"))
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
        env["FORCE_CUDA"] = "0"
        built = glob.glob(os.path.join(ROOT, "retdet", "_C*.so"))
        if built:
            env["RETDET_PREBUILT_EXTENSION"] = built[0]
        out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                              "--disable-pip-version-check", "-w", str(work / "dist"), src],
                             capture_output=True, text=True, env=env, timeout=1800)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        wheel = glob.glob(str(work / "dist" / "retdet-*.whl"))[0]
    env_dir = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    target = glob.glob(str(env_dir / "lib" / "python*" / "site-packages"))[0]
    # torch and the other dependencies come from this environment's site-packages (a plain path in
    # a .pth: the editable install's own .pth hooks there are not run, so the repository stays out)
    with open(os.path.join(target, "_retdet_test_dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    out = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                          "--disable-pip-version-check", wheel], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return str(env_dir / "bin")


def run_outside(venv_bin, cwd, code, timeout=1200):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_installed_package_imports_its_ops_and_configs_outside_the_repository(venv, tmp_path):
    out = run_outside(venv, tmp_path, """
python - <<'PY'
import sys, retdet
from retdet import ops
from retdet.config import shipped_configs_dir
print("package", retdet.__file__)
print("configs", shipped_configs_dir())
print("extension", ops.has_extension())
print("SYSPATH", *sys.path, sep="\\n  ")
PY
python -m retdet.utils.collect_env
""")
    assert out.returncode == 0, out.stderr[-3000:]
    venv_root = os.path.dirname(venv)
    package = out.stdout.split("package ", 1)[1].split()[0]
    assert package.startswith(venv_root) and not package.startswith(ROOT + os.sep), package
    assert out.stdout.split("configs ", 1)[1].split()[0].startswith(venv_root)
    assert "extension True" in out.stdout
    sys_path = out.stdout.split("SYSPATH", 1)[1].split("|")[0].split()
    assert not [p for p in sys_path if p == ROOT or p.startswith(ROOT + os.sep + "retdet")], sys_path
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.stdout.splitlines()
            if line.startswith("| ") and line.count("|") == 3}
    assert rows["retdet._C (compiled ops)"] == "built" and rows["CPU kernels"] == "yes"
    assert rows["retdet"].startswith("0.1.0 (" + venv_root)


def test_the_user_project_guide_runs_against_the_installed_package(venv, tmp_path):
    guide = "docs/your_project.md"
    outputs = []
    for marker, arg, code in bash_blocks(guide):
        if marker == "not run":
            continue
        if marker == "file":
            os.makedirs(os.path.dirname(tmp_path / arg), exist_ok=True)
            (tmp_path / arg).write_text(code + "\n")
            continue
        out = run_outside(venv, tmp_path, code)
        assert out.returncode == 0, f"{guide}: this block failed:\n{code}\n--- output ---\n{out.stdout[-4000:]}{out.stderr[-4000:]}"
        outputs.append(out.stdout + out.stderr)
    log = "\n".join(outputs)
    run = tmp_path / "my_project" / "output" / "mobilenet"
    assert (run / "model_final.pth").exists() and "MobileNetV3" in (run / "config.py").read_text()
    assert "Evaluation on synthetic_shapes_val (120 images)" in log
    retdet_row = next(line for line in (run / "log.txt").read_text().splitlines() if line.startswith("| retdet  "))
    assert os.path.dirname(venv) in retdet_row and ROOT + os.sep + "retdet" not in retdet_row, retdet_row


def test_unknown_shipped_config_is_a_did_you_mean_error(venv, tmp_path):
    out = run_outside(venv, tmp_path, "retdet-train --config retdet.configs.quikstart")
    assert out.returncode != 0
    assert "no shipped config 'retdet.configs.quikstart'. Did you mean 'retdet.configs.quickstart'?" in out.stderr
    assert "retdet ships: retdet.configs.bccd_R18_FPN" in out.stderr
    (tmp_path / "exp.py").write_text("from retdet.configs.common.models.retinanet import modle\n")
    out = run_outside(venv, tmp_path, "retdet-analyze --config exp.py")
    assert out.returncode != 0 and "modle" in out.stderr
