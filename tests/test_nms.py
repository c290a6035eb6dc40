"""retdet.ops.batched_nms against torchvision.ops.batched_nms (same indices, same order) on random,
clustered and adversarial inputs; the pure-PyTorch reference; opcheck; CPU vs CUDA when available."""
import pytest
import torch
import torchvision

from retdet.ops import batched_nms, batched_nms_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_boxes(n, seed=0, scale=500.0, max_wh=100.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * max_wh
    return torch.cat([xy, xy + wh], 1).to(dtype)


def clustered_boxes(num_objects, per_object, seed=0, jitter=6.0):
    """RetinaNet-like candidates: many jittered copies of a few object boxes."""
    g = torch.Generator().manual_seed(seed)
    objects = random_boxes(num_objects, seed + 1, max_wh=150.0)
    boxes = objects.repeat_interleave(per_object, 0)
    return boxes + torch.randn(boxes.shape, generator=g) * jitter


def check_against_torchvision(boxes, scores, idxs, thr, device="cpu"):
    # torchvision on the same device: above a size it orders equal scores by an unstable sort, whose
    # order differs between CPU and CUDA (torch.rand gives ties: 2^24 values).
    expected = torchvision.ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), thr).cpu()
    got = batched_nms(boxes.to(device), scores.to(device), idxs.to(device), thr).cpu()
    assert torch.equal(got, expected), f"kept {len(got)} vs torchvision {len(expected)}"
    if device == "cpu":
        assert torch.equal(batched_nms_reference(boxes, scores, idxs, thr), expected)
    return got


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, num_classes", [(1, 1), (10, 1), (300, 3), (3000, 80), (6000, 5)])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_random(device, n, num_classes, thr):
    g = torch.Generator().manual_seed(n + num_classes)
    boxes = random_boxes(n, seed=n)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, num_classes, (n,), generator=g)
    check_against_torchvision(boxes, scores, idxs, thr, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("thr", [0.4, 0.5, 0.6])
def test_clustered_retinanet_like(device, thr):
    boxes = clustered_boxes(40, 125)  # 5000 candidates, 5 levels x 1000 in spirit
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(len(boxes), generator=g)
    idxs = torch.randint(0, 20, (len(boxes),), generator=g)
    kept = check_against_torchvision(boxes, scores, idxs, thr, device)
    assert 40 <= len(kept) < len(boxes) // 2  # clusters were actually suppressed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_object", [50, 400])  # 500 boxes: stable path; 4000: torchvision's other path
def test_score_ties_ordered_as_torchvision(device, per_object):
    boxes = clustered_boxes(10, per_object, seed=3)
    g = torch.Generator().manual_seed(3)
    scores = (torch.rand(len(boxes), generator=g) * 4).floor() / 4  # only 4 distinct scores
    idxs = torch.randint(0, 3, (len(boxes),), generator=g)
    kept = check_against_torchvision(boxes, scores, idxs, 0.5, device)
    s = scores[kept]
    assert torch.all(s[:-1] >= s[1:])
    if per_object == 50:  # small inputs: the lower index first
        same = s[:-1] == s[1:]
        assert same.any() and torch.all(kept[:-1][same] < kept[1:][same])


@pytest.mark.parametrize("device", DEVICES)
def test_identical_boxes_and_scores(device):
    boxes = torch.tensor([[10.0, 10, 50, 50]]).repeat(7, 1)
    scores = torch.full((7,), 0.5)
    idxs = torch.tensor([0, 0, 1, 0, 1, 2, 2])
    kept = check_against_torchvision(boxes, scores, idxs, 0.5, device)
    assert kept.tolist() == [0, 2, 5]  # one per class, the lowest index


@pytest.mark.parametrize("device", DEVICES)
def test_degenerate_boxes(device):
    # zero-area boxes (IoU 0/0 = NaN is never > thr, so all are kept), lines, inverted boxes.
    boxes = torch.tensor([
        [5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0], [0, 0, 10, 0], [0, 0, 10, 10], [1, 1, 10, 10],
        [10, 10, 0, 0], [3, 3, 3, 9],
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.7, 0.6, 0.5, 0.4, 0.3])
    idxs = torch.zeros(8, dtype=torch.long)
    check_against_torchvision(boxes, scores, idxs, 0.5, device)


@pytest.mark.parametrize("device", DEVICES)
def test_many_classes_and_float64(device):
    n = 4000
    g = torch.Generator().manual_seed(5)
    boxes = random_boxes(n, seed=5, dtype=torch.float64, scale=100.0)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 1000, (n,), generator=g)
    check_against_torchvision(boxes, scores, idxs, 0.5, device)
    # non-contiguous class ids, negative ids and int32 ids
    idxs2 = (idxs * 7 - 3000).int()
    assert torch.equal(batched_nms(boxes, scores, idxs2, 0.5).cpu(), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_empty(device):
    out = batched_nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
                      torch.zeros(0, dtype=torch.long, device=device), 0.5)
    assert out.shape == (0,) and out.dtype == torch.int64


def test_large_input_does_not_need_quadratic_memory():
    # 60k boxes in one class would need 3.6e9 IoU entries if materialised; the kernel streams them.
    n = 60000
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(n, seed=7, scale=20000.0, max_wh=60.0)
    scores = torch.rand(n, generator=g)
    idxs = torch.zeros(n, dtype=torch.long)
    kept = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(kept, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["boxes", "scores"])
def test_non_finite_inputs_are_errors(bad, where):
    boxes, scores, idxs = random_boxes(5), torch.rand(5), torch.zeros(5, dtype=torch.long)
    if where == "boxes":
        boxes[2, 1] = bad
    else:
        scores[3] = bad
    with pytest.raises(RuntimeError, match="must be finite"):
        batched_nms(boxes, scores, idxs, 0.5)
    with pytest.raises(ValueError, match="must be finite"):
        batched_nms_reference(boxes, scores, idxs, 0.5)


def test_bad_shapes_are_errors():
    with pytest.raises(RuntimeError, match=r"boxes must be \(N, 4\)"):
        batched_nms(torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, dtype=torch.long), 0.5)
    with pytest.raises(RuntimeError, match=r"scores must be \(N,\)"):
        batched_nms(torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, dtype=torch.long), 0.5)


def test_half_and_autocast_compare_in_float32():
    boxes = clustered_boxes(5, 20, seed=11)
    scores = torch.rand(len(boxes))
    idxs = torch.zeros(len(boxes), dtype=torch.long)
    expected = torchvision.ops.batched_nms(boxes.half().float(), scores.half().float(), idxs, 0.5)
    assert torch.equal(batched_nms(boxes.half(), scores.half().float(), idxs, 0.5), expected)
    expected = torchvision.ops.batched_nms(boxes.bfloat16().float(), scores.bfloat16().float(), idxs, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = batched_nms(boxes.bfloat16(), scores.bfloat16(), idxs, 0.5)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    boxes = clustered_boxes(4, 10, seed=2).to(device)
    scores = torch.rand(len(boxes), device=device)
    idxs = torch.randint(0, 2, (len(boxes),), device=device)
    torch.library.opcheck(torch.ops.retdet.batched_nms.default, (boxes, scores, idxs, 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n, num_classes", [(20000, 80), (200000, 80), (70000, 1)])
def test_cpu_and_cuda_agree_large(n, num_classes):
    g = torch.Generator().manual_seed(n)
    boxes = random_boxes(n, seed=n, scale=3000.0)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, num_classes, (n,), generator=g)
    on_cuda = batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu()
    on_cpu = batched_nms(boxes, scores, idxs, 0.5)
    # The same boxes kept, in the same score order; equal scores (torch.rand has ties) may come in
    # another order, as torchvision's do on the two devices.
    assert torch.equal(on_cuda.sort()[0], on_cpu.sort()[0])
    assert torch.equal(scores[on_cuda], scores[on_cpu])
