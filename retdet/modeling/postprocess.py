"""From raw head outputs to per-image detections (a separate object from the network); the same code
runs eagerly and in the exported graphs (retdet/export.py traces it)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from retdet import ops
from retdet.registry import POSTPROCESSORS
from retdet.structures import Detections

from .box_coder import DeltaXYWHBoxCoder

DROP_EMPTY = (None, "before_nms", "after_nms")
NMS_CHOICES = ("retdet", "torchvision")  # single_image's nms: the compiled op, or one ONNX can express
ImageSize = Union[Tuple[int, int], Tensor]  # (h, w); a (2,) int64 tensor in traced graphs


@POSTPROCESSORS.register()
class RetinaNetPostProcess:
    """Score threshold, top-k per level, box decoding, class-wise NMS, the best detections.

    Args:
        score_threshold: candidates need sigmoid score > this.
        topk_per_level: at most this many candidates per level (by score) before NMS.
        nms_threshold: class-wise NMS IoU threshold.
        max_detections: detections kept per image.
        clip_before_nms: clip decoded boxes to the input image before NMS (torchvision,
            MMDetection). False is Detectron2's order: NMS on the unclipped boxes, which are clipped
            to the original image after rescaling.
        drop_empty: remove boxes of zero width or height: None (never), "before_nms" (MMDetection
            3.x, after clipping) or "after_nms" (Detectron2, after the final clip, so an image may
            keep fewer than max_detections).
        box_coder: decodes deltas against anchors (given by the detector).

    All of it runs in float32 with autocast off: scores near the threshold and large box
    coordinates must not be rounded to half precision.
    """

    def __init__(
        self,
        *,
        score_threshold: float = 0.05,
        topk_per_level: int = 1000,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        clip_before_nms: bool = True,
        drop_empty: Optional[str] = None,
        box_coder: Optional[DeltaXYWHBoxCoder] = None,
    ) -> None:
        if drop_empty not in DROP_EMPTY:
            raise ValueError(f"model.postprocess.drop_empty must be one of {DROP_EMPTY}, got {drop_empty!r}")
        self.score_threshold, self.topk_per_level = score_threshold, topk_per_level
        self.nms_threshold, self.max_detections = nms_threshold, max_detections
        self.clip_before_nms, self.drop_empty = bool(clip_before_nms), drop_empty
        self.box_coder = box_coder or DeltaXYWHBoxCoder()

    def __call__(
        self,
        logits_per_level: Sequence[Tensor],
        deltas_per_level: Sequence[Tensor],
        anchors_per_level: Sequence[Tensor],
        image_sizes: Sequence[Tuple[int, int]],
        original_sizes: Sequence[Tuple[int, int]],
        image_ids: Sequence[Optional[int]] = (),
    ) -> List[Detections]:
        """logits (N, Hi*Wi*A, K), deltas (N, Hi*Wi*A, 4), anchors (Hi*Wi*A, 4) per level ->
        one Detections per image, boxes in original-image pixels."""
        results = []
        for i, (dets, image_size, original_size) in enumerate(zip(
                self.in_input(logits_per_level, deltas_per_level, anchors_per_level, image_sizes), image_sizes,
                original_sizes)):
            dets.boxes = rescale_boxes(dets.boxes, image_size, original_size)
            dets = self.finish(dets, original_size)
            dets.image_id = image_ids[i] if i < len(image_ids) else None
            results.append(dets)
        return results

    def in_input(self, logits_per_level: Sequence[Tensor], deltas_per_level: Sequence[Tensor],
                 anchors_per_level: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]]) -> List[Detections]:
        """As ``__call__`` up to NMS: one Detections per image, boxes in the input's pixels (before
        :meth:`finish`); what test-time augmentation and tiling merge across views."""
        device_type = logits_per_level[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return [self.single_image([lg[i].float() for lg in logits_per_level],
                                      [d[i].float() for d in deltas_per_level], anchors_per_level, image_size)
                    for i, image_size in enumerate(image_sizes)]

    def single_image(self, logits: Sequence[Tensor], deltas: Sequence[Tensor], anchors: Sequence[Tensor],
                     image_size: ImageSize, *, nms: str = "retdet") -> Detections:
        """One image's float32 logits (Hi*Wi*A, K), deltas (Hi*Wi*A, 4) and anchors (Hi*Wi*A, 4) per
        level -> the detections after NMS, boxes in the input's pixels (before :meth:`finish`).

        The same code is traced by retdet/export.py, where ``image_size`` is the graph's (2,) input tensor.
        nms: "retdet" (the compiled op; TorchScript keeps it) or "torchvision" (:func:`class_offset_nms`,
        which ONNX can express).
        """
        boxes_all, scores_all, labels_all = [], [], []
        for logits_l, deltas_l, anchors_l in zip(logits, deltas, anchors):
            num_classes = logits_l.shape[-1]
            logits_flat = logits_l.flatten()
            # The sigmoid is monotonic, so threshold and top-k work on the logits (the threshold a
            # little lower, for rounding): the sigmoid and the exact threshold then run on at most
            # topk_per_level values, not on every candidate of H*W*A*K.
            top_logits, candidates = self._candidates(logits_flat)
            scores = torch.sigmoid(top_logits)
            above = scores > self.score_threshold
            scores, candidates = scores[above], candidates[above]
            anchor_idx = torch.div(candidates, num_classes, rounding_mode="floor")
            boxes = self.box_coder.decode(deltas_l[anchor_idx], anchors_l[anchor_idx])
            boxes_all.append(clip_boxes(boxes, image_size) if self.clip_before_nms else boxes)
            scores_all.append(scores)
            labels_all.append(candidates % num_classes)
        boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        if self.drop_empty == "before_nms":
            keep = nonempty(boxes)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if nms == "retdet":
            keep = ops.batched_nms(boxes, scores, labels, self.nms_threshold)
        else:
            keep = class_offset_nms(boxes, scores, labels, self.nms_threshold, image_size)
        keep = keep[: self.max_detections]
        return Detections(boxes=boxes[keep], scores=scores[keep], labels=labels[keep])

    @property
    def _logit_floor(self) -> float:
        """A logit below every logit whose sigmoid exceeds score_threshold (by 1e-3, far more than the
        sigmoid's rounding)."""
        t = float(self.score_threshold)
        return -math.inf if t <= 0 else math.inf if t >= 1 else math.log(t / (1 - t)) - 1e-3

    def _candidates(self, logits: Tensor) -> Tuple[Tensor, Tensor]:
        """A level's flat logits (H*W*A*K,) -> (the best ``topk_per_level`` logits above the (lowered)
        threshold, sorted, their indices into ``logits``)."""
        candidates = torch.nonzero(logits > self._logit_floor).flatten()
        top_logits, order = self._topk(logits[candidates])
        return top_logits, candidates[order]

    def _topk(self, scores: Tensor) -> Tuple[Tensor, Tensor]:
        """A level's candidate scores or logits (C,) -> the best ``topk_per_level`` (values, indices), sorted."""
        if torch.jit.is_tracing():
            # The candidate count is data-dependent: a tensor keeps it in the graph (an int would fix
            # the traced image's count). ONNX's TopK puts equal scores' lower index first, as the
            # eager topk_lower_index_first does.
            return scores.topk(torch.clamp(torch.tensor(scores.shape[0]), max=self.topk_per_level))
        return topk_lower_index_first(scores, min(self.topk_per_level, scores.numel()))

    def finish(self, dets: Detections, image_size: ImageSize) -> Detections:
        """The steps after NMS, on boxes in the pixels of ``image_size`` (h, w): Detectron2's order clips
        here (clip_before_nms=False), and drop_empty="after_nms" removes the empty boxes then."""
        if not self.clip_before_nms:
            dets.boxes = clip_boxes(dets.boxes, image_size)
        if self.drop_empty == "after_nms":
            keep = nonempty(dets.boxes)
            dets.boxes, dets.scores, dets.labels = dets.boxes[keep], dets.scores[keep], dets.labels[keep]
        return dets


def class_offset_nms(boxes: Tensor, scores: Tensor, labels: Tensor, threshold: float, image_size: ImageSize) -> Tensor:
    """Class-wise NMS as one torchvision NMS (ONNX NonMaxSuppression): (R, 4) xyxy boxes, (R,) scores and
    labels -> kept indices (K,) by decreasing score. Each class is shifted apart by more than the boxes'
    extent (unclipped boxes may be negative); the image bounds and 0 are in the extent, so no boxes at
    all does not fail (no reduction over an empty tensor) and clipped boxes lie inside it."""
    import torchvision

    bounds = _bounds(image_size, boxes)
    extent = torch.cat([boxes.flatten(), bounds, bounds.new_zeros(1)])
    offsets = labels.to(boxes.dtype)[:, None] * (extent.max() - extent.min() + 1)
    return torchvision.ops.nms(boxes + offsets, scores, threshold)


def topk_lower_index_first(scores: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """``scores.topk(k)`` with a defined order of equal scores: the lower index first, as ONNX's TopK
    (so an exported graph keeps the same candidates; an int8 network's scores tie often). topk picks
    the k-th score; only the k picked ones are sorted (stably), not all candidates."""
    if k < scores.numel():
        kth = scores.topk(k).values[-1]
        above = torch.nonzero(scores > kth).flatten()
        tied = torch.nonzero(scores == kth).flatten()[: k - above.numel()]
        picked = torch.sort(torch.cat([above, tied])).values
    else:
        picked = torch.arange(scores.numel(), device=scores.device)
    values, order = torch.sort(scores[picked], descending=True, stable=True)
    return values, picked[order]


def nonempty(boxes: Tensor) -> Tensor:
    """(R,) bool: width > 0 and height > 0 for (R, 4) xyxy boxes."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _bounds(image_size: ImageSize, boxes: Tensor) -> Tensor:
    """(w, h, w, h) of an (h, w) size, in the boxes' dtype and device."""
    if not isinstance(image_size, Tensor):
        image_size = torch.tensor(image_size, device=boxes.device)
    return image_size.flip(0).repeat(2).to(boxes.dtype)


def clip_boxes(boxes: Tensor, image_size: ImageSize) -> Tensor:
    """Clip (R, 4) xyxy boxes to [0, width] x [0, height]; ``image_size`` (h, w) ints, or a (2,) tensor
    (a traced graph's input)."""
    if isinstance(image_size, Tensor):
        return torch.min(boxes.clamp(min=0), _bounds(image_size, boxes))
    h, w = image_size
    x = boxes[:, 0::2].clamp(min=0, max=w)
    y = boxes[:, 1::2].clamp(min=0, max=h)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def rescale_boxes(boxes: Tensor, image_size: Tuple[int, int], original_size: Tuple[int, int]) -> Tensor:
    """Boxes in the (resized) model input -> boxes in the original image."""
    if tuple(image_size) == tuple(original_size):
        return boxes
    sy = original_size[0] / image_size[0]
    sx = original_size[1] / image_size[1]
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
