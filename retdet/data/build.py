"""Building datasets and data loaders from the config's ``dataloader`` node."""
from __future__ import annotations

import functools
import logging
import random
import signal
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from retdet.registry import SAMPLERS, TRANSFORMS, RegistryError, build, is_config_node

from .catalog import get_dataset, register_coco, register_voc, register_yolo
from .dataset import DetectionDataset
from .records import DatasetInfo
from .samplers import EpochSampler, GroupedBatchSampler, InferenceSampler

logger = logging.getLogger("retdet")


# format -> (required keys, optional keys) of a dataloader.register entry
REGISTER_KEYS = {"coco": ({"name", "json_file", "image_root"}, set()),
                 "voc": ({"name", "root", "split"}, {"class_names"}),
                 "yolo": ({"name", "root", "names"}, {"split"})}


def register_from_config(entries: Sequence[Mapping]) -> None:
    """``dataloader.register``: [dict(name=, json_file=, image_root=)] (COCO), [dict(name=, format="voc",
    root=, split=[, class_names=])] or [dict(name=, format="yolo", root=, names=[, split=])]
    -> register_coco / register_voc / register_yolo (idempotent)."""
    from .catalog import _LOADERS

    for entry in entries or ():
        entry = dict(entry)
        fmt = entry.pop("format", "coco")
        if fmt not in REGISTER_KEYS:
            raise ValueError(f"dataloader.register entry {entry}: format must be one of {sorted(REGISTER_KEYS)}, "
                             f"got {fmt!r}")
        required, optional = REGISTER_KEYS[fmt]
        missing, unknown = required - set(entry), set(entry) - required - optional
        if missing or unknown:
            raise KeyError(f"dataloader.register entry {entry} (format {fmt!r}): "
                           + (f"lacks {sorted(missing)}" if missing else f"unknown key(s) {sorted(unknown)}")
                           + f"; it takes {sorted(required)}" + (f" and optionally {sorted(optional)}" if optional else ""))
        name = entry.pop("name")
        overwrite = name in _LOADERS
        if fmt == "coco":
            register_coco(name, entry["json_file"], entry["image_root"], overwrite=overwrite)
        elif fmt == "voc":
            register_voc(name, entry["root"], entry["split"], class_names=entry.get("class_names"), overwrite=overwrite)
        else:
            register_yolo(name, entry["root"], entry["names"], entry.get("split"), overwrite=overwrite)


def merge_datasets(names: Sequence[str], *, filter_empty: bool = False) -> DatasetInfo:
    """The named datasets' records together (their classes must agree), optionally without images
    that have no boxes."""
    if not names:
        raise ValueError("dataloader: dataset.names is empty")
    infos = [get_dataset(n) for n in names]
    for other in infos[1:]:
        if other.class_names != infos[0].class_names:
            raise ValueError(f"datasets {infos[0].name} and {other.name} have different classes: "
                             f"{infos[0].class_names} vs {other.class_names}")
    records = [r for info in infos for r in info.records]
    if filter_empty:
        records = [r for r in records if len(r.boxes) > 0]
    single = infos[0] if len(infos) == 1 else None  # several sets: no single ground truth to evaluate against
    return DatasetInfo(name="+".join(names), records=records, class_names=infos[0].class_names,
                       label_to_category_id=infos[0].label_to_category_id, json_file=infos[0].json_file,
                       image_root=infos[0].image_root, coco=single.coco if single else None,
                       source_format=single.source_format if single else infos[0].source_format)


def build_transforms(cfgs: Sequence[Mapping]) -> List[Any]:
    if cfgs is not None and not isinstance(cfgs, (list, tuple)):
        raise TypeError(f"transforms must be a list of config nodes, got {cfgs!r}")
    return [build(c, TRANSFORMS, where=f"transforms[{i}]") for i, c in enumerate(cfgs or ())]


def trivial_collate(batch: List[Any]) -> List[Any]:
    """The model pads and normalises its own batch (Preprocessor), so a batch is a list of samples."""
    return batch


def worker_init(worker_id: int, ignore_signals: Sequence[int] = ()) -> None:
    """Seed python/numpy in each worker from torch's per-worker seed (base seed + worker id).

    ``ignore_signals``: the trainer's preemption signals. A scheduler signals every process of the
    job; a data worker killed by one would make the training process fail mid-step, before it can
    save its checkpoint. The workers end with the training process anyway.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    for sig in ignore_signals:
        signal.signal(sig, signal.SIG_IGN)


# what build_train_sampler passes itself: a sampler node that sets one would be silently overridden
SAMPLER_CONTEXT = ("image_labels", "seed", "rank", "world_size")


def build_train_sampler(node: Optional[Mapping], info: DatasetInfo, *, seed: int = 0, rank: int = 0,
                        world_size: int = 1) -> EpochSampler:
    """``dataloader.train.sampler`` (default ``dict(type="TrainingSampler")``), a registered sampler built
    with the records' labels, ``seed`` (train.seed), ``rank`` and ``world_size``. A bad node is an error
    naming the key, raised here, before the first step."""
    where = "dataloader.train.sampler"
    node = dict(type="TrainingSampler") if node is None else node
    if not is_config_node(node):
        raise TypeError(f"{where} must be dict(type=NAME, ...) with NAME one of {SAMPLERS.names()}, got {node!r}")
    fixed = [k for k in SAMPLER_CONTEXT if k in node]
    if fixed:
        raise ValueError(f"{where}.{fixed[0]} cannot be set: the loader passes it (the seed is train.seed)")
    try:
        sampler = build(node, SAMPLERS, where=where, image_labels=[r.labels for r in info.records], seed=seed,
                        rank=rank, world_size=world_size)
    except RegistryError as e:
        raise RegistryError(f"{where}.type: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}={dict(node)} on dataset {info.name}: {e}") from None
    logger.info("Training sampler: %s", sampler.summary(info.class_names))
    return sampler


def build_train_loader(cfg: Mapping, *, input_format: str, seed: int = 0, rank: int = 0, world_size: int = 1,
                       start_batch: int = 0, ignore_signals: Sequence[int] = ()) -> Tuple[DataLoader, DetectionDataset]:
    """An infinite loader of this rank's batches (total_batch_size / world_size images each), in the
    order of ``cfg["sampler"]`` (see :func:`build_train_sampler`); its worker processes ignore
    ``ignore_signals`` (see :func:`worker_init`)."""
    total = int(cfg["total_batch_size"])
    if total % world_size:
        raise ValueError(f"dataloader.train.total_batch_size={total} is not divisible by {world_size} workers")
    info = merge_datasets(cfg["dataset"]["names"], filter_empty=cfg["dataset"].get("filter_empty", False))
    dataset = DetectionDataset(info, build_transforms(cfg.get("transforms")), input_format=input_format,
                               skip_bad_images=cfg.get("skip_bad_images", False),
                               cache_images_mb=float(cfg.get("cache_images_mb", 0)))
    sampler = build_train_sampler(cfg.get("sampler"), info, seed=seed, rank=rank, world_size=world_size)
    landscape = [r.width >= r.height for r in info.records]
    batches = GroupedBatchSampler(sampler, landscape, total // world_size,
                                  group=cfg.get("aspect_ratio_grouping", True), start_batch=start_batch)
    workers = int(cfg.get("num_workers", 0))
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=trivial_collate,
                        pin_memory=cfg.get("pin_memory", False),
                        worker_init_fn=functools.partial(worker_init, ignore_signals=tuple(ignore_signals)),
                        persistent_workers=False, generator=torch.Generator().manual_seed(seed + rank))
    return loader, dataset


def build_test_loader(cfg: Mapping, *, input_format: str, rank: int = 0, world_size: int = 1,
                      names: Optional[Sequence[str]] = None) -> Tuple[DataLoader, DetectionDataset]:
    """Each image once across ranks, in order, no shuffling."""
    info = merge_datasets(names or cfg["dataset"]["names"], filter_empty=cfg["dataset"].get("filter_empty", False))
    dataset = DetectionDataset(info, build_transforms(cfg.get("transforms")), input_format=input_format,
                               skip_bad_images=cfg.get("skip_bad_images", False))
    batches = BatchSampler(InferenceSampler(len(dataset), rank=rank, world_size=world_size),
                           batch_size=int(cfg.get("batch_size", 1)), drop_last=False)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=int(cfg.get("num_workers", 0)),
                        collate_fn=trivial_collate, pin_memory=cfg.get("pin_memory", False), worker_init_fn=worker_init)
    return loader, dataset
