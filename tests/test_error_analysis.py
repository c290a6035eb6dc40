"""Error analysis (retdet/evaluation/error_analysis.py, confusion_matrix.py, error_report.py) against
hand-computed cases and pycocotools, and tools/analyze_errors.py."""
import contextlib
import copy
import io
import json
import math
import os

import numpy as np
import pytest

from retdet.evaluation import error_analysis as ea
from retdet.evaluation.confusion_matrix import confusion_matrix

from .conftest import CONFIGS, run_tool


def coco_ap(gt, results, iou_index=1):
    """pycocotools' AP50 (stats[1]) or AP75 (stats[2]), in %."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ea.load_ground_truth(gt)  # iscrowd and area filled in, as the evaluator does
        coco.createIndex()
        if not results:
            return 0.0
        e = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats[iou_index] * 100


def random_case(seed, n_images=30):
    """Ground truth and results with every kind of error: jittered, relabelled, duplicated, missed and
    background detections, tied scores, and crowd regions."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + 3 * i, "width": 200, "height": 160} for i in range(n_images)]
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 3, 7)]
    anns, results = [], []
    for im in images:
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(8, 60, 2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 160 - h)
            c = int(rng.choice([1, 3, 7]))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            r = rng.random()
            if r < 0.15:
                continue
            jitter = rng.normal(0, 0.05 if r < 0.6 else 0.3, 4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
            label = c if rng.random() < 0.85 else int(rng.choice([1, 3, 7]))
            results.append({"image_id": im["id"], "category_id": label, "bbox": box,
                            "score": float(np.round(rng.random(), 1))})  # rounded: many ties
            if rng.random() < 0.2:
                results.append({"image_id": im["id"], "category_id": label, "bbox": [v + 1 for v in box],
                                "score": float(np.round(rng.random(), 1))})
        for _ in range(rng.integers(0, 3)):
            results.append({"image_id": im["id"], "category_id": int(rng.choice([1, 3, 7])),
                            "bbox": list(rng.uniform(0, 100, 2)) + list(rng.uniform(5, 50, 2)),
                            "score": float(np.round(rng.random(), 1))})
        if rng.random() < 0.2:
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1, "bbox": [0, 0, 80, 80],
                         "area": 6400.0, "iscrowd": 1})
    return {"images": images, "categories": cats, "annotations": anns}, results


@pytest.mark.parametrize("seed", [0, 1])
def test_each_oracle_gain_is_what_pycocotools_gives_the_fixed_results(seed):
    gt, results = random_case(seed)
    m = ea.match(gt, results)
    breakdown = ea.error_breakdown(m)
    assert breakdown["counts"]["ignored"] > 0 and min(breakdown["counts"][k] for k in ea.ERROR_KINDS) > 0
    assert breakdown["ap"] == pytest.approx(coco_ap(gt, results), abs=1e-9)
    for kind in ea.ERROR_KINDS + ea.SPECIAL_KINDS:
        fixed = ea.fix(m, [kind])
        fixed_gt, fixed_results = ea.oracle_files(m, fixed, gt, results)
        assert len(fixed_results) < len(results) or kind in ("miss", "fn")
        reference = coco_ap(fixed_gt, fixed_results)
        assert breakdown["ap"] + breakdown["dap"][kind] == pytest.approx(reference, abs=1e-9), kind
        assert breakdown["dap"][kind] >= 0, kind
    everything = ea.fix(m, ea.ERROR_KINDS)
    assert breakdown["ap_all_fixed"] == pytest.approx(100.0)
    assert coco_ap(*ea.oracle_files(m, everything, gt, results)) == pytest.approx(100.0)


def test_the_base_ap_at_another_iou_is_pycocotools_ap75():
    gt, results = random_case(2)
    assert ea.error_breakdown(ea.match(gt, results, iou=0.75))["ap"] == pytest.approx(coco_ap(gt, results, 2), abs=1e-9)


def test_only_the_top_100_detections_of_an_image_and_class_count():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}
    # 100 background detections above the one true positive: COCO never sees it
    results = [{"image_id": 1, "category_id": 1, "bbox": [50 + i, 50, 5, 5], "score": 0.9} for i in range(100)]
    results.append({"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5})
    m = ea.match(gt, results)
    assert len(m.det_kind) == 100 and ea.error_breakdown(m)["ap"] == 0.0 == coco_ap(gt, results)


def box(x, y=0.0):
    return [float(x), float(y), 10.0, 10.0]


def hand_case():
    """Classes 1 (A, D, E) and 2 (B, C, G), 10 x 10 boxes in a row; one detection of each kind."""
    gt_boxes = {"A": (box(0), 1), "D": (box(60), 1), "E": (box(80), 1), "B": (box(20), 2), "C": (box(40), 2),
                "G": (box(140), 2)}
    gt = {"images": [{"id": 5}], "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
          "annotations": [{"id": i + 1, "image_id": 5, "category_id": c, "bbox": b}
                          for i, (b, c) in enumerate(gt_boxes.values())]}
    dets = [(box(0), 1, 0.9),        # TP on A
            (box(1), 1, 0.8),        # dupe: IoU 90/110 with A, taken
            (box(20), 1, 0.7),       # cls: IoU 1 with B (class 2)
            (box(65), 1, 0.6),       # loc: IoU 50/150 with D
            (box(45), 1, 0.5),       # both: IoU 1/3 with C (class 2), none with class 1
            (box(100, 100), 1, 0.4),  # bkg
            (box(80), 1, 0.3),       # TP on E
            (box(140), 2, 0.2)]      # TP on G
    return gt, [{"image_id": 5, "category_id": c, "bbox": b, "score": s} for b, c, s in dets]


def test_hand_case_kinds_and_gains():
    gt, results = hand_case()
    m = ea.match(gt, results)
    code = {v: k for k, v in ea.KIND_CODE.items()}
    code.update({ea.TP: "tp"})
    assert [code[k] for k in m.det_kind[np.argsort(m.det_index)]] == ["tp", "dupe", "cls", "loc", "both", "bkg", "tp",
                                                                      "tp"]
    assert m.gt_missed.tolist() == [False, False, False, False, True, False]  # C only: B and D have cls/loc errors
    b = ea.error_breakdown(m)
    # Class 1 (3 boxes) ranks T F F F F F T: precision 1 up to recall 1/3 (34 of COCO's 101 recall
    # points), then 2/7 up to 2/3 (33 points). Class 2 (3 boxes): only G's detection, 34 points at 1.
    cls1, cls2 = 34 + 33 * 2 / 7, 34
    expect = {
        "base": (cls1 + cls2) / 202,
        "cls": ((34 + 33 / 3) + 67) / 202,  # class 1: T F F F F T; class 2 gains B: T T
        "loc": ((34 + 33 / 2 + 34 * 3 / 7) + cls2) / 202,  # class 1: T F F T F F T, 3/7 up to recall 1
        "dupe": ((34 + 33 / 3) + cls2) / 202,  # each removal leaves class 1 T F F F F T
        "both": ((34 + 33 / 3) + cls2) / 202,
        "bkg": ((34 + 33 / 3) + cls2) / 202,
        "miss": (cls1 + 51) / 202,  # class 2 without C: recall 1/2 reaches the 0.50 point (51 points)
        "fp": (67 + cls2) / 202,
        "fn": ((51 + 50 * 2 / 7) + 101) / 202,  # class 1 without D: 2 boxes; class 2 without B, C: 1 box
    }
    assert b["ap"] == pytest.approx(expect["base"] * 100, abs=1e-9)
    for kind in ea.ERROR_KINDS + ea.SPECIAL_KINDS:
        assert b["ap"] + b["dap"][kind] == pytest.approx(expect[kind] * 100, abs=1e-9), kind
    assert b["counts"] == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 1, "miss": 1, "tp": 3, "ignored": 0,
                           "gt": 6}
    assert b["ap"] == pytest.approx(coco_ap(gt, results), abs=1e-9)


def test_a_box_claimed_by_two_fixes_goes_to_the_higher_score():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}, {"id": 2}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": box(0)}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": box(0), "score": 0.6},
               {"image_id": 1, "category_id": 1, "bbox": box(1), "score": 0.9}]
    m = ea.match(gt, results)
    fixed = ea.fix(m, ["cls"])
    kept = m.det_index[fixed.keep].tolist()
    assert kept == [1] and fixed.det_cat[fixed.keep].tolist() == [2]
    assert ea.mean_ap(ea.fixed_ap(m, fixed)) == pytest.approx(100.0) == coco_ap(*ea.oracle_files(m, fixed, gt, results))


def test_best_f1_threshold_hand_case():
    gt = {"images": [{"id": 1}], "categories": [{"id": 4}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": box(0)},
                          {"id": 2, "image_id": 1, "category_id": 4, "bbox": box(30)}]}
    results = [{"image_id": 1, "category_id": 4, "bbox": b, "score": s}
               for b, s in ((box(0), 0.9), (box(100), 0.8), (box(30), 0.7), (box(200), 0.6))]
    # P/R after each: (1, 1/2), (1/2, 1/2), (2/3, 1), (1/2, 1): F1 2/3, 1/2, 4/5, 2/3
    best = ea.precision_recall_at_best_f1(ea.match(gt, results))[4]
    assert best["threshold"] == 0.7 and best["f1"] == pytest.approx(80.0)
    assert best["precision"] == pytest.approx(200 / 3) and best["recall"] == pytest.approx(100.0)


def test_confusion_matrix_with_one_class():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box(x)}
                          for i, x in enumerate((0, 20, 40))]}
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s}
               for b, s in ((box(0), 0.9), (box(1), 0.8), (box(20), 0.2), (box(100, 100), 0.5))]
    # found: the first box; missed: the second (its detection is below 0.3) and the third;
    # false: the duplicate and the stray box
    assert confusion_matrix(ea.match(gt, results), score_threshold=0.3).tolist() == [[1, 2], [2, 0]]


def test_confusion_matrix_with_several_classes_and_a_crowd_region():
    anns = [(box(0), 1, 0), (box(20), 2, 0), (box(40), 3, 0), (box(60), 3, 0), ([100, 0, 50, 50], 1, 1)]
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}, {"id": 2}, {"id": 3}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "iscrowd": crowd}
                          for i, (b, c, crowd) in enumerate(anns)]}
    dets = [(box(0), 2, 0.9),    # class 1 box seen as class 2
            (box(20), 2, 0.8),   # correct
            (box(44), 3, 0.5),   # IoU 0.43 with the third box: below 0.5
            (box(41), 1, 0.4),   # IoU 0.82 with the third box: class 3 seen as class 1
            (box(110, 10), 3, 0.9),  # inside the crowd region: ignored
            (box(300), 3, 0.6)]  # background
    results = [{"image_id": 1, "category_id": c, "bbox": b, "score": s} for b, c, s in dets]
    matrix = confusion_matrix(ea.match(gt, results), iou=0.5, score_threshold=0.3)
    assert matrix.tolist() == [[0, 1, 0, 0],
                               [0, 1, 0, 0],
                               [1, 0, 0, 1],   # the fourth box is missed
                               [0, 0, 2, 0]]   # the low-IoU class-3 detection and the background one


def test_pairs_go_by_iou_first():
    """A box overlapped by a detection of its class (IoU 0.6) and one of another class (IoU 0.9) pairs
    with the closer one: the matrix says what each box was detected as."""
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}, {"id": 2}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 6], "score": 0.9},
               {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 9], "score": 0.5}]
    assert confusion_matrix(ea.match(gt, results)).tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("entry, message", [
    ({"image_id": 999}, "image_id 999"),
    ({"category_id": 42}, "category_id 42"),
    ({"score": float("nan")}, "score nan"),
    ({"bbox": [0, 0, -1, 5]}, "negative width"),
    ({"bbox": [0, 0, 5]}, "4 finite numbers"),
])
def test_a_bad_results_entry_is_an_error_naming_it(entry, message):
    gt, results = hand_case()
    results[3].update(entry)
    with pytest.raises(ValueError, match=f"detection 3 .*{message}|detection 3 has {message}"):
        ea.match(gt, results)


def test_a_bad_results_file_is_an_error_naming_it(tmp_path):
    from retdet.evaluation.error_report import load_results

    gt, _ = hand_case()
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_results(str(tmp_path / "missing.json"), gt)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="bad.json.*not valid json"):
        load_results(str(tmp_path / "bad.json"), gt)
    (tmp_path / "dict.json").write_text("{}")
    with pytest.raises(ValueError, match="dict.json: a COCO results file is a list"):
        load_results(str(tmp_path / "dict.json"), gt)


def test_analyze_errors_tool_writes_the_report(tmp_path):
    """On the quickstart's validation set, with its ground truth as detections (every image but one,
    class labels rotated on a few boxes): AP, confusion matrix and gallery follow from that."""
    from retdet.data import get_dataset

    dataset = get_dataset("synthetic_shapes_val")
    data = json.load(open(dataset.json_file))
    skipped = data["images"][0]["id"]
    cats = sorted(c["id"] for c in data["categories"])
    results, relabelled = [], 0
    for a in data["annotations"]:
        if a["image_id"] == skipped:
            continue
        c = a["category_id"]
        if a["id"] % 10 == 0:
            c, relabelled = cats[(cats.index(c) + 1) % len(cats)], relabelled + 1
        results.append({"image_id": a["image_id"], "category_id": c, "bbox": a["bbox"], "score": 0.9})
    path = tmp_path / "coco_results.json"
    path.write_text(json.dumps(results))
    out = run_tool("analyze_errors", "--config", os.path.join(CONFIGS, "quickstart.py"), "--results", path,
                   "--num-images", 2)
    assert f"report: {tmp_path / 'analysis' / 'report.md'}" in out.stdout
    report = json.load(open(tmp_path / "analysis" / "report.json"))
    missed = sum(a["image_id"] == skipped for a in data["annotations"])
    counts = np.array(report["confusion_matrix"]["counts"])
    assert counts[:-1, -1].sum() == missed and counts[-1].sum() == 0  # no false detection but the relabelled
    assert np.trace(counts[:-1, :-1]) == len(results) - relabelled and counts[:-1, :-1].sum() == len(results)
    assert report["errors"]["counts"]["cls"] == relabelled and report["errors"]["counts"]["miss"] == missed
    errors = {im["id"]: 0 for im in data["images"]}
    for a in data["annotations"]:
        # the skipped image's boxes are missed; a relabelled box is missed and its detection false
        errors[a["image_id"]] += 1 if a["image_id"] == skipped else 2 * (a["id"] % 10 == 0)
    worst = sorted(errors, key=lambda i: (-errors[i], i))[:2]
    got = [(w["image_id"], w["missed"] + w["false"]) for w in report["worst_images"]]
    assert got == [(i, errors[i]) for i in worst]
    assert report["pictures"] == {"errors": "errors.png", "confusion_matrix": "confusion_matrix.png",
                                  "worst_images": "worst_images.png"}
    assert all(os.path.getsize(tmp_path / "analysis" / p) > 1000 for p in report["pictures"].values())
    assert "| classification | cls" in open(tmp_path / "analysis" / "report.md").read()
    assert math.isclose(report["errors"]["ap"], report["coco"]["AP50"], abs_tol=1e-6)


def test_error_benchmark_times_the_analysis_against_pycocotools():
    out = run_tool("benchmark", "--task", "errors", "--images", 10, "--iters", 1)
    assert "error analysis alone (10 images, 1000 detections, 80 classes)" in out.stdout
    assert "the whole report, per-class AP by pycocotools" in out.stdout


def test_analyze_errors_needs_one_source(tmp_path):
    out = run_tool("analyze_errors", "--config", os.path.join(CONFIGS, "quickstart.py"), ok=False)
    assert "exactly one of --results" in out.stderr
