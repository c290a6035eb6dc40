import os
import subprocess
import sys


from retdet import ops

from .conftest import ROOT

FALLBACK_SCRIPT = r"""
import warnings
import torch, torchvision
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import retdet
    from retdet import ops
    assert not ops.has_extension()
    x = torch.randn(50, 7)
    t = (torch.rand(50, 7) > 0.8).float()
    ours = ops.sigmoid_focal_loss(x, t, 0.25, 2.0, "sum")
    ref = torchvision.ops.sigmoid_focal_loss(x, t, 0.25, 2.0, "sum")
    torch.testing.assert_close(ours, ref)
    boxes = torch.rand(40, 4) * 50
    boxes[:, 2:] += boxes[:, :2]
    scores, idxs = torch.rand(40), torch.randint(0, 3, (40,))
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    ops.sigmoid_focal_loss(x, t)
mine = [w for w in caught if "compiled ops are not available" in str(w.message)]
assert len(mine) == 1, [str(w.message) for w in caught]
print("FALLBACK-OK", mine[0].message)
"""


def test_fallback_when_extension_forced_off():
    env = dict(os.environ, RETDET_DISABLE_EXTENSION="1")
    out = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "FALLBACK-OK" in out.stdout
    assert "RETDET_DISABLE_EXTENSION=1" in out.stdout  # the warning says why


def test_extension_is_built():
    # `make test` builds the extension first; its absence is a build problem, not a skip.
    assert ops.has_extension(), "retdet._C is missing: run `make install` (pip install --no-build-isolation -e .)"


def test_collect_env_prints_a_table():
    out = subprocess.run([sys.executable, "-m", "retdet.utils.collect_env"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for word in ("PyTorch", "torchvision", "CPU kernels", "CUDA kernels", "| component"):
        assert word in out.stdout
