"""faster-coco-eval gives pycocotools' numbers (to 1e-6) on the same results, through retdet's evaluator."""
import json

import numpy as np
import pytest

from retdet.benchmarks.evaluation import synthetic_coco
from retdet.evaluation.coco_evaluator import METRICS, check_backend, evaluate_coco


def test_faster_coco_eval_equals_pycocotools(tmp_path):
    pytest.importorskip("faster_coco_eval")
    gt, results = synthetic_coco(60)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    names, cat_ids = [c["name"] for c in gt["categories"]], [c["id"] for c in gt["categories"]]
    ids = [im["id"] for im in gt["images"]]
    ref, ref_per_class, ref_eval = evaluate_coco(str(path), results, ids, names, cat_ids, backend="pycocotools")
    fast, fast_per_class, fast_eval = evaluate_coco(str(path), results, ids, names, cat_ids, backend="faster_coco_eval")
    assert 10 < ref["AP"] < 90 and ref["APs"] > 0  # a non-trivial case
    for m in METRICS:
        assert fast[m] == pytest.approx(ref[m], abs=1e-6 * 100), m  # metrics are percentages
    for name in names:
        assert fast_per_class[name] == pytest.approx(ref_per_class[name], abs=1e-6 * 100), name
    np.testing.assert_allclose(fast_eval.eval["precision"], ref_eval.eval["precision"], atol=1e-6)
    np.testing.assert_allclose(fast_eval.eval["recall"], ref_eval.eval["recall"], atol=1e-6)


def test_unknown_or_missing_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match=r"dataloader\.evaluator\.backend must be one of .*'cocoapi'"):
        check_backend("cocoapi")
    import sys

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'retdet\[fast-eval\]'"):
        check_backend("faster_coco_eval")


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_ground_truth_in_memory_equals_the_file(tmp_path, backend):
    """VOC and YOLO sets are evaluated from their COCO form in memory: the same numbers as from a file,
    and the dataset's dict is left as it was."""
    if backend == "faster_coco_eval":
        pytest.importorskip("faster_coco_eval")
    gt, results = synthetic_coco(20, seed=1)
    for ann in gt["annotations"]:
        del ann["area"]  # filled in by the evaluator, on its own copy
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    names, cat_ids = [c["name"] for c in gt["categories"]], [c["id"] for c in gt["categories"]]
    ids = [im["id"] for im in gt["images"]]
    from_file = evaluate_coco(str(path), results, ids, names, cat_ids, backend=backend)[0]
    from_dict = evaluate_coco(gt, results, ids, names, cat_ids, backend=backend)[0]
    assert from_dict == from_file and from_file["AP"] > 10
    assert all("area" not in ann for ann in gt["annotations"])
