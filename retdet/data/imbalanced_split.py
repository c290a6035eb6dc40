"""A deliberately imbalanced copy of a COCO-format training set, for measuring the samplers.

Keeps a fraction of the images that contain one category (chosen with a seed) and every other image,
and writes the annotations of the kept images as a new json: the images are not copied, so register
the output with the source's image folder. Same input, category, fraction and seed -> the same file.

    python -m retdet.data.imbalanced_split --json ../shared/datasets/bccd/annotations/instances_train.json \\
        --category Platelets --keep 0.1 --output output/bccd_imbalanced/instances_train.json
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np


def make_imbalanced_split(json_file: str, output: str, *, category: str, keep: float, seed: int = 0) -> Dict[str, Any]:
    """Write ``output``: ``json_file`` with only round(keep * n) of the n images that contain ``category``
    (by name); returns what it holds (images, and per category images and boxes)."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be a fraction in [0, 1], got {keep}")
    with open(json_file) as f:
        coco = json.load(f)
    by_name = {c["name"]: c["id"] for c in coco["categories"]}
    if category not in by_name:
        raise KeyError(f"{json_file} has no category {category!r}; its categories: {sorted(by_name)}")
    with_category = sorted({a["image_id"] for a in coco["annotations"] if a["category_id"] == by_name[category]})
    rng = np.random.default_rng(seed)
    kept = set(rng.choice(with_category, size=int(round(keep * len(with_category))), replace=False).tolist())
    dropped = set(with_category) - kept
    coco["images"] = [im for im in coco["images"] if im["id"] not in dropped]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in dropped]
    coco.setdefault("info", {})["description"] = (
        f"{os.path.basename(json_file)} keeping {len(kept)} of the {len(with_category)} images with {category} "
        f"(keep={keep}, seed={seed}) and all other images")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(coco, f)
    os.replace(tmp, output)  # never a half-written file where a config expects a whole one
    return split_stats(coco)


def split_stats(coco: Dict[str, Any]) -> Dict[str, Any]:
    """{"images": N, "categories": {name: {"images": n, "boxes": m}}} of a COCO dict."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    boxes = Counter(a["category_id"] for a in coco["annotations"])
    images = Counter(cid for cid, _ in {(a["category_id"], a["image_id"]) for a in coco["annotations"]})
    return {"images": len(coco["images"]),
            "categories": {names[c]: {"images": images[c], "boxes": boxes[c]} for c in sorted(names)}}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="the COCO-format training annotations")
    parser.add_argument("--category", required=True, help="the category to make rare, by name")
    parser.add_argument("--keep", type=float, default=0.1, help="fraction of its images to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="the json to write")
    args = parser.parse_args(argv)
    stats = make_imbalanced_split(args.json, args.output, category=args.category, keep=args.keep, seed=args.seed)
    print(f"wrote {args.output}: {stats['images']} images")
    for name, s in stats["categories"].items():
        print(f"  {name:<12} {s['images']:>4} images {s['boxes']:>5} boxes")


if __name__ == "__main__":
    main()
