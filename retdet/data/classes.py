"""The model's class count against the data: checked before training, or taken from the data.

A head with fewer classes than the dataset would fail inside the loss kernel mid-step ("class index
5 ... is outside [-1, 3]"); one with more would silently train classes that never occur. Both are
caught before the first step, naming the dataset and its categories.
"""
from __future__ import annotations

from typing import Any, MutableMapping, Sequence

from .build import merge_datasets, register_from_config

FROM_DATASET = "from_dataset"


def resolve_num_classes(cfg: MutableMapping[str, Any]) -> None:
    """``model.head.num_classes = "from_dataset"`` becomes the training set's category count (in
    place); any other value is left as it is."""
    head = cfg["model"].get("head", {})
    if head.get("num_classes") != FROM_DATASET:
        return
    register_from_config(cfg["dataloader"].get("register", []))
    names = cfg["dataloader"]["train"]["dataset"]["names"]
    head["num_classes"] = len(merge_datasets(names).class_names)


def check_num_classes(model: Any, names: Sequence[str], *, where: str) -> None:
    """Raise ValueError when ``model.num_classes`` differs from the category count of ``names``
    (the datasets of ``where``, e.g. "dataloader.train"). Models without ``num_classes`` pass."""
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(num_classes, int):
        return
    info = merge_datasets(names)
    if len(info.class_names) != num_classes:
        shown = info.class_names if len(info.class_names) <= 20 else info.class_names[:20] + ["..."]
        raise ValueError(
            f"the model has {num_classes} classes (model.head.num_classes) but {where} dataset {info.name!r} "
            f"({info.json_file or 'registered in code'}) has {len(info.class_names)} categories: {shown}. "
            f"Set model.head.num_classes={len(info.class_names)}, or model.head.num_classes=\"{FROM_DATASET}\" to "
            f"take it from the training set.")
