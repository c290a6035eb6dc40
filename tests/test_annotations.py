"""Malformed COCO annotation files: each case is a DatasetFormatError naming the file, the record and
the field (or a counted warning where a user would rather go on), and a fuzz test over random
mutations of a valid file never lets a bare KeyError/TypeError/IndexError or a NaN through."""
import copy
import json
import math
import random

import numpy as np
import pytest

from retdet.data import DatasetFormatError
from retdet.data.coco import MAX_IMAGE_SIDE, load_coco_json


def valid_coco():
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 40 + i, "width": 60} for i in (1, 2, 3)]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "iscrowd": 0, "area": 400.0},
        {"id": 11, "image_id": 1, "category_id": 9, "bbox": [30.5, 5, 10, 12.25], "iscrowd": 0},
        {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 59, 41], "iscrowd": 1},
        {"id": 13, "image_id": 3, "category_id": 9, "bbox": [50, 30, 30, 30]},  # leaves the image: clipped
    ]
    categories = [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def load(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))  # allow_nan: NaN/Infinity literals, as Python's json reads them
    return load_coco_json(str(path), str(tmp_path), name="t")


def test_valid_file_loads(tmp_path):
    info = load(tmp_path, valid_coco())
    assert [r.image_id for r in info.records] == [1, 2, 3] and info.class_names == ["cat", "dog"]
    np.testing.assert_allclose(info.records[0].boxes, [[10, 10, 30, 30], [30.5, 5, 40.5, 17.25]])
    assert info.records[0].labels.tolist() == [0, 1]
    np.testing.assert_allclose(info.records[1].ignore_boxes, [[0, 0, 59, 41]])
    np.testing.assert_allclose(info.records[2].boxes, [[50, 30, 60, 43]])
    assert info.stats["clipped_boxes"] == 1 and "annotations_without_image" not in info.stats


def mutated(edit):
    data = valid_coco()
    edit(data)
    return data


# The table, one row each: (edit, what the message must name)
CASES = {
    "nan_bbox": (lambda d: d["annotations"][0].update(bbox=[math.nan, 10, 20, 20]),
                 r"annotation id 10 \(annotations\[0\]\) of image 1: 'bbox' value 0 must be finite, found nan"),
    "no_bbox": (lambda d: d["annotations"][1].pop("bbox"),
                r"annotation id 11 \(annotations\[1\]\) of image 1: no 'bbox' field"),
    "bbox_3_values": (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]),
                      r"annotation id 12 .* of image 2: 'bbox' must be \[x, y, width, height\], found \[1, 2, 3\]"),
    "no_height": (lambda d: d["images"][1].pop("height"), r"image id 2 \(images\[1\]\): no 'height' field"),
    "duplicate_image_id": (lambda d: d["images"][2].update(id=1),
                           r"image id 1 \(images\[2\]\): duplicate image id 1 \(also '1.jpg'\)"),
    "string_coordinate": (lambda d: d["annotations"][0].update(bbox=[1, "2", 3, 4]),
                          r"annotation id 10 .*'bbox' value 1 must be a number, found '2'"),
    "infinite_width": (lambda d: d["images"][0].update(width=math.inf), r"image id 1 .*'width' must be finite"),
    "huge_height": (lambda d: d["images"][0].update(height=10**400), r"image id 1 .*'height' must be finite"),
    "negative_height": (lambda d: d["images"][0].update(height=-5),
                        rf"image id 1 .*'height' must be a whole number of pixels in 1..{MAX_IMAGE_SIDE}"),
    "unknown_category": (lambda d: d["annotations"][0].update(category_id=8),
                         r"annotation id 10 .*unknown category_id 8 \(categories: \[7, 9\]\)"),
    "duplicate_annotation_id": (lambda d: d["annotations"][3].update(id=10),
                                r"annotation id 10 \(annotations\[3\]\): duplicate annotation id 10"),
    "no_file_name": (lambda d: d["images"][0].pop("file_name"), r"image id 1 \(images\[0\]\): no 'file_name'"),
    "empty_file_name": (lambda d: d["images"][0].update(file_name=""), r"'file_name' must be a non-empty string"),
    "no_categories": (lambda d: d.pop("categories"), r"top level: no 'categories' list"),
    "images_not_a_list": (lambda d: d.update(images={"id": 1}), r"'images': expected a list, found dict"),
    "boolean_id": (lambda d: d["images"][0].update(id=True), r"image id True \(images\[0\]\): 'id' must be an integer, found True"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_field_is_a_clear_error(tmp_path, case):
    edit, message = CASES[case]
    with pytest.raises(DatasetFormatError, match=message) as err:
        load(tmp_path, mutated(edit))
    assert str(err.value).startswith(str(tmp_path / "ann.json"))  # names the file


def test_annotation_without_image_is_a_counted_warning(tmp_path):
    data = mutated(lambda d: d["annotations"].append({"id": 99, "image_id": 42, "category_id": 7, "bbox": [1, 1, 2, 2]}))
    info = load(tmp_path, data)
    assert info.stats["annotations_without_image"] == 1 and info.num_boxes == 3


def test_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "ann.json").write_text('{"images": [')
    with pytest.raises(DatasetFormatError, match=r"ann.json: not a valid JSON file"):
        load_coco_json(str(tmp_path / "ann.json"), str(tmp_path))


def test_evaluation_accepts_ground_truth_without_area_and_iscrowd(tmp_path):
    """A file the loader accepts also evaluates: COCOeval itself would fail on a missing 'area'."""
    from retdet.evaluation.coco_evaluator import evaluate_coco

    data = valid_coco()
    for ann in data["annotations"]:
        ann.pop("area", None)
        ann.pop("iscrowd", None)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    info = load_coco_json(str(path), str(tmp_path))
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in data["annotations"]]  # every box found exactly
    metrics, _, _ = evaluate_coco(str(path), results, [1, 2, 3], info.class_names, info.label_to_category_id)
    assert metrics["AP"] == pytest.approx(100.0)


# ---- fuzz ----------------------------------------------------------------------------------------

BAD_VALUES = [None, True, "7", "", "ünïcødé ☃.jpg", [], {}, [1, 2], math.nan, math.inf, -math.inf, 1e308, -1e308,
              10**400, -1, 0, 0.5, -0.0, 2**63, 1.5e9]


def random_mutation(data, rng: random.Random) -> str:
    """Apply one random mutation to ``data`` in place; returns what it did."""
    kind = rng.choice(["delete", "value", "value", "duplicate_id", "bbox_item", "bbox_len", "top", "drop_entry"])
    section = rng.choice(["images", "annotations", "categories"])
    entries = [e for e in data.get(section) or () if isinstance(e, dict)] if isinstance(data.get(section), list) else []
    if kind == "top":
        key = rng.choice(["images", "annotations", "categories"])
        data[key] = rng.choice([None, {}, "x", 3, [1], [None]])
        return f"top-level {key} -> {data[key]!r}"
    if not entries:
        return "nothing to mutate"
    entry = rng.choice(entries)
    if kind == "drop_entry":
        data[section].remove(entry)
        return f"removed an entry of {section}"
    if kind == "duplicate_id":
        entry["id"] = rng.choice(entries).get("id")
        return f"{section} id -> {entry['id']}"
    if kind in ("bbox_item", "bbox_len") and section == "annotations" and isinstance(entry.get("bbox"), list):
        if kind == "bbox_item":
            i = rng.randrange(4)
            entry["bbox"][i] = rng.choice(BAD_VALUES)
            return f"bbox[{i}] -> {entry['bbox'][i]!r}"
        entry["bbox"] = entry["bbox"][: rng.randrange(4)] if rng.random() < 0.5 else entry["bbox"] + [1]
        return f"bbox -> {entry['bbox']!r}"
    if not entry:
        return "nothing to mutate"
    key = rng.choice(sorted(entry))
    if kind == "delete":
        del entry[key]
        return f"deleted {section}.{key}"
    entry[key] = rng.choice(BAD_VALUES)
    return f"{section}.{key} -> {entry[key]!r}"


def check_clean(info) -> None:
    """What a clean load guarantees the model: finite boxes of positive size inside their image,
    labels in range, positive whole image sizes."""
    for r in info.records:
        assert isinstance(r.height, int) and isinstance(r.width, int) and r.height > 0 and r.width > 0
        for boxes in (r.boxes, r.ignore_boxes):
            assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and np.isfinite(boxes).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= r.width).all() and (boxes[:, 3] <= r.height).all()
        assert ((r.labels >= 0) & (r.labels < len(info.class_names))).all()


def test_fuzzed_annotation_files_load_cleanly_or_raise_our_error(tmp_path):
    rng = random.Random(0)
    outcomes = {"loaded": 0, "error": 0}
    for trial in range(400):
        data = valid_coco()
        steps = [random_mutation(data, rng) for _ in range(rng.randint(1, 3))]
        path = tmp_path / "fuzz.json"
        path.write_text(json.dumps(copy.deepcopy(data)))
        try:
            info = load_coco_json(str(path), str(tmp_path), name="fuzz")
        except DatasetFormatError as e:
            assert str(path) in str(e), (steps, str(e))
            outcomes["error"] += 1
            continue
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"trial {trial}: {steps} raised {type(e).__name__}: {e}")
        check_clean(info)
        outcomes["loaded"] += 1
    # both outcomes occur, so the test exercises the checks and the clean path alike
    assert outcomes["loaded"] > 20 and outcomes["error"] > 100, outcomes
