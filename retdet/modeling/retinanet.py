"""RetinaNet (Lin et al. 2017): backbone -> FPN -> shared heads; focal loss; per-level decoding + NMS."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from retdet.layers import memory_format as memory_format_rule
from retdet.layers import winograd
from retdet.registry import (
    ANCHOR_GENERATORS, BACKBONES, BOX_CODERS, DETECTORS, HEADS, LOSSES, MATCHERS, NECKS, POSTPROCESSORS, Registry,
    build,
)
from retdet.structures import Detections, ImageSample
from retdet.structures.boxes import pairwise_ioa, pairwise_iou

from .losses import LossNormalizer
from .network_runner import NetworkRunner
from .postprocess import rescale_boxes
from .preprocess import Preprocessor
from .test_time_aug import TestTimeAugmentation, TiledInference


def _part(value: Union[Mapping, Any], registry: Registry, where: str, **extra: Any) -> Any:
    """A part given as a config node (built here, with ``extra`` arguments) or as an object."""
    if isinstance(value, Mapping):
        return build(value, registry, where=where, **extra)
    return value


def _options(cls: type, value: Any, where: str) -> Any:
    """``cls`` built from a dict of its options (a config node's; a ``type`` key is ignored), an unknown
    option named with the known ones."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a dict of options (or None), got {value!r}")
    options = {k: v for k, v in value.items() if k != "type"}
    known = [p for p in inspect.signature(cls).parameters if p != "where"]
    for key in options:
        if key not in known:
            raise ValueError(f"{where}.{key} is not an option: {where} takes {known}")
    return cls(**options, where=where)


def permute_to_N_HWA_K(tensor: Tensor, k: int) -> Tensor:
    """(N, A*K, H, W) -> (N, H*W*A, K), the anchors' order (location-major, then anchor)."""
    n, _, h, w = tensor.shape
    return tensor.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)


@dataclass
class DenseOutputs:
    """The detector's per-level outputs for a batch, before losses or post-processing.

    features: pyramid levels (N, C, Hi, Wi), None when an external runtime ran the network (it returns
    the head's outputs only); anchors: (Hi*Wi*A, 4) per level; logits: (N, Hi*Wi*A, K) per level;
    deltas: (N, Hi*Wi*A, 4) per level; image_sizes: each image's (h, w) inside the padding.
    """

    features: Optional[List[Tensor]]
    anchors: List[Tensor]
    logits: List[Tensor]
    deltas: List[Tensor]
    image_sizes: List[Tuple[int, int]]


@DETECTORS.register()
class RetinaNet(nn.Module):
    """The detector: a thin module wiring registered parts together.

    Every part is a config node (or an already-built object). The detector builds them in order,
    giving the neck the backbone's output shapes and the head the neck's channels and the number of
    anchors per location, so configs never repeat those numbers.

    forward(samples: list of ImageSample):
        training -> {"loss_cls": scalar, "loss_box_reg": scalar};
        inference -> list of Detections (boxes in each image's original size).
    """

    build_nested = False  # it builds its parts itself (see above)

    def __init__(
        self,
        *,
        backbone: Any,
        neck: Any,
        head: Any,
        anchor_generator: Any,
        matcher: Any,
        box_coder: Any,
        cls_loss: Any,
        box_loss: Any,
        postprocess: Any,
        loss_normalizer: Optional[Mapping] = None,
        pixel_mean: Sequence[float] = (103.53, 116.28, 123.675),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        input_format: str = "BGR",
        size_divisibility: int = 32,
        ignore_ioa_threshold: float = 0.5,
        memory_format: Any = "auto",
        channels_last: Optional[bool] = None,
        conv_algorithm: str = "auto",
        compile: Union[bool, Mapping[str, Any]] = False,
        test_time_aug: Optional[Mapping[str, Any]] = None,
        tiling: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.backbone = _part(backbone, BACKBONES, "model.backbone")
        self.neck = _part(neck, NECKS, "model.neck", input_shape=self.backbone.output_shape())
        self.anchor_generator = _part(anchor_generator, ANCHOR_GENERATORS, "model.anchor_generator")
        neck_strides = [s.stride for s in self.neck.output_shape().values()]
        if list(self.anchor_generator.strides) != neck_strides:
            raise ValueError(f"model.anchor_generator.strides {self.anchor_generator.strides} must equal the neck's "
                             f"output strides {neck_strides}")
        self.head = _part(head, HEADS, "model.head", in_channels=self.neck.out_channels,
                          num_anchors=self.anchor_generator.num_anchors)
        self.num_classes: int = self.head.num_classes
        self.matcher = _part(matcher, MATCHERS, "model.matcher")
        self.box_coder = _part(box_coder, BOX_CODERS, "model.box_coder")
        self.cls_loss = _part(cls_loss, LOSSES, "model.cls_loss")
        self.box_loss = _part(box_loss, LOSSES, "model.box_loss")
        self.loss_normalizer = LossNormalizer(**(loss_normalizer or {}))
        self.postprocess = _part(postprocess, POSTPROCESSORS, "model.postprocess", box_coder=self.box_coder)
        self.preprocess = Preprocessor(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format,
                                       size_divisibility=size_divisibility)
        self.ignore_ioa_threshold = ignore_ioa_threshold
        # NHWC or NCHW activations and weights, per mode (retdet/layers/memory_format.py): whichever
        # layout oneDNN or cuDNN runs faster there. In NHWC the head's outputs are already in the
        # anchors' order. channels_last=True/False: the former bool setting, one layout for both modes.
        if channels_last is not None:
            memory_format = "NHWC" if channels_last else "NCHW"
        # How network() runs: eagerly, torch.compile'd (model.compile) or in an int8 runtime (attached by
        # retdet/quantization/artifact.py). Not module state: copies and checkpoints are the eager model's.
        self.runner = NetworkRunner(compile=compile)
        # Direct or Winograd 3x3 convolutions (retdet/layers/winograd.py); "auto": Winograd for the
        # large float32 ones on the CPU, in forward() (the layout rule below depends on it).
        self.conv_algorithm = winograd.check_algorithm(conv_algorithm)
        self.memory_format_spec = memory_format_rule.check_spec(memory_format)
        self.memory_format = torch.contiguous_format
        self.apply_memory_format()
        # A pruned network's layer widths (retdet/pruning/widths.py), saved in its checkpoints; None: the
        # widths the config builds.
        self.pruned_widths: Optional[Dict[str, List[int]]] = None
        # Inference on several views of each image, merged (retdet/modeling/test_time_aug.py); None: one view.
        self.test_time_aug = (None if test_time_aug is None
                              else _options(TestTimeAugmentation, test_time_aug, "model.test_time_aug"))
        self.tiling = None if tiling is None else _options(TiledInference, tiling, "model.tiling")

    # ---- memory layout ---------------------------------------------------------------------------

    @property
    def channels_last(self) -> bool:
        """Whether the network now runs NHWC (the current mode's layout)."""
        return self.memory_format == torch.channels_last

    def apply_memory_format(self, force: bool = False) -> torch.memory_format:
        """Put weights and the input batch in the layout of the current mode and device (a no-op when
        they are in it already; ``force``: again, e.g. after layers were replaced)."""
        param = next(self.parameters(), None)
        device_type = param.device.type if param is not None else "cpu"
        mode = "train" if self.training else "inference"
        # Compiled networks run no Winograd layer: their layout is the direct kernels'.
        algorithm = "direct" if self.runner.compile_options is not None else self.conv_algorithm
        fmt = memory_format_rule.resolve(self.memory_format_spec, mode, device_type, algorithm)
        if force or fmt != self.memory_format:
            self.to(memory_format=fmt)
            self.memory_format = fmt
            self.preprocess.memory_format = fmt
        return fmt

    def train(self, mode: bool = True) -> "RetinaNet":
        super().train(mode)
        self.apply_memory_format()
        return self

    # ---- network ---------------------------------------------------------------------------------

    def features(self, images: Tensor) -> List[Tensor]:
        """(N, 3, Hp, Wp) normalised batch -> the pyramid levels, shallow to deep."""
        pyramid = self.neck(self.backbone(images))
        return [pyramid[name] for name in self.neck.out_features]

    def network(self, images: Tensor) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """(N, 3, Hp, Wp) normalised batch -> (features, logits, deltas): the pyramid levels and the
        head's per-level (N, A*K, H, W) and (N, A*4, H, W) outputs. The part ``model.compile`` compiles:
        dense tensor work of fixed structure (matching, losses and post-processing stay eager)."""
        features = self.features(images)
        logits, deltas = self.head(features)
        return features, logits, deltas

    # ---- forward ---------------------------------------------------------------------------------

    def forward(self, samples: Sequence[ImageSample]) -> Union[Dict[str, Tensor], List[Detections]]:
        return self.forward_training(samples) if self.training else self.forward_inference(samples)

    def forward_training(self, samples: Sequence[ImageSample]) -> Dict[str, Tensor]:
        """-> {"loss_cls": scalar, "loss_box_reg": scalar}."""
        out = self.dense_outputs(samples)
        gt_labels, gt_boxes = self.label_anchors(torch.cat(out.anchors), samples)
        return self.losses(out.anchors, out.logits, out.deltas, gt_labels, gt_boxes)

    def summed_losses(self, samples: Sequence[ImageSample]) -> Tuple[Dict[str, Tensor], Tensor]:
        """-> ({"loss_cls", "loss_box_reg"} summed over every anchor of the batch, its number of
        foreground anchors (0-dim)): not normalised, so that sums over a whole set divided by the
        set's count do not depend on batching (the validation loss, retdet/evaluation/validation_loss.py)."""
        out = self.dense_outputs(samples)
        gt_labels, gt_boxes = self.label_anchors(torch.cat(out.anchors), samples)
        summed = self._summed_losses(torch.cat(out.logits, dim=1), torch.cat(out.deltas, dim=1), torch.cat(out.anchors),
                                     gt_labels, gt_boxes)
        return summed, ((gt_labels >= 0) & (gt_labels != self.num_classes)).sum()

    def forward_inference(self, samples: Sequence[ImageSample]) -> List[Detections]:
        """-> one Detections per image, boxes in its original size."""
        original_sizes = [s.original_size or s.image_size for s in samples]
        if self.test_time_aug is None and self.tiling is None:
            out = self.dense_outputs(samples)
            return self.postprocess(out.logits, out.deltas, out.anchors, out.image_sizes, original_sizes,
                                    [s.image_id for s in samples])
        detect = self.detect_in_input
        if self.test_time_aug is not None:
            detect = functools.partial(self.test_time_aug.detect, self, detect=self.detect_in_input)
        results = self.tiling.detect(self, samples, detect) if self.tiling is not None else detect(samples)
        for s, dets, original_size in zip(samples, results, original_sizes):
            dets.boxes = rescale_boxes(dets.boxes, s.image_size, original_size)
            self.postprocess.finish(dets, original_size)
            dets.image_id = s.image_id
        return results

    def detect_in_input(self, samples: Sequence[ImageSample]) -> List[Detections]:
        """One view: detections after NMS, boxes in each sample's input pixels (not its original size)."""
        out = self.dense_outputs(samples)
        return self.postprocess.in_input(out.logits, out.deltas, out.anchors, out.image_sizes)

    def dense_outputs(self, samples: Sequence[ImageSample]) -> DenseOutputs:
        """Everything before losses or post-processing: preprocessing, the network and the anchors
        (what a distillation loss compares between a student and its teacher)."""
        batch = self.preprocess([s.image for s in samples])
        with winograd.conv_algorithm(self.conv_algorithm):
            net = self.runner(self, batch.tensor)
        # The anchors read only each level's size and device. The logits have the features' (Hi, Wi),
        # and they exist in every runner mode (an external runtime returns no features).
        anchors = self.anchor_generator(net.logits)
        return DenseOutputs(features=net.features, anchors=anchors,
                            logits=[permute_to_N_HWA_K(x, self.num_classes) for x in net.logits],
                            deltas=[permute_to_N_HWA_K(x, 4) for x in net.deltas], image_sizes=batch.image_sizes)

    # ---- training --------------------------------------------------------------------------------

    @torch.no_grad()
    def label_anchors(self, anchors: Tensor, samples: Sequence[ImageSample]) -> Tuple[Tensor, Tensor]:
        """anchors (R, 4) -> per-anchor labels (N, R) int64 (class, K = background, -1 = ignore) and
        matched gt boxes (N, R, 4)."""
        labels, matched_boxes = [], []
        k = self.num_classes
        for s in samples:
            gt_boxes = s.gt_boxes if s.gt_boxes is not None else anchors.new_zeros(0, 4)
            gt_boxes = gt_boxes.to(anchors.device, torch.float32)
            gt_labels = (s.gt_labels if s.gt_labels is not None else torch.zeros(0, dtype=torch.long)).to(anchors.device)
            if gt_boxes.shape[0] != gt_labels.shape[0]:
                raise ValueError(f"image {s.image_id}: {gt_boxes.shape[0]} gt boxes but {gt_labels.shape[0]} labels")
            matched_idx, match_labels = self.matcher(pairwise_iou(gt_boxes, anchors))
            if gt_boxes.shape[0] > 0:
                lbl = gt_labels[matched_idx].clone()
                boxes = gt_boxes[matched_idx]
            else:  # an image without objects trains as all negatives
                lbl = torch.full((anchors.shape[0],), k, dtype=torch.long, device=anchors.device)
                boxes = torch.zeros_like(anchors)
            lbl[match_labels == 0] = k
            lbl[match_labels == -1] = -1
            if s.ignore_boxes is not None and s.ignore_boxes.numel() > 0:
                # Background anchors mostly inside a crowd region are neither positive nor negative.
                ioa = pairwise_ioa(s.ignore_boxes.to(anchors.device, torch.float32), anchors).max(dim=0).values
                lbl[(lbl == k) & (ioa > self.ignore_ioa_threshold)] = -1
            labels.append(lbl)
            matched_boxes.append(boxes)
        return torch.stack(labels), torch.stack(matched_boxes)

    def losses(self, anchors: Sequence[Tensor], logits: Sequence[Tensor], deltas: Sequence[Tensor],
               gt_labels: Tensor, gt_boxes: Tensor) -> Dict[str, Tensor]:
        """anchors (Hi*Wi*A, 4), logits (N, Hi*Wi*A, K) and deltas (N, Hi*Wi*A, 4) per level; gt_labels
        (N, R) and gt_boxes (N, R, 4) from label_anchors -> {"loss_cls", "loss_box_reg"}: summed over
        anchors, divided by the loss normaliser (which also says which images are summed together)."""
        all_anchors = torch.cat(anchors)
        logits_all, deltas_all = torch.cat(logits, dim=1), torch.cat(deltas, dim=1)  # (N, R, K), (N, R, 4)
        summed = [self._summed_losses(logits_all[g], deltas_all[g], all_anchors, gt_labels[g], gt_boxes[g])
                  for g in self.loss_normalizer.groups(gt_labels.shape[0])]
        foreground = (gt_labels >= 0) & (gt_labels != self.num_classes)
        return self.loss_normalizer(summed, foreground.sum(dim=1))

    def _summed_losses(self, logits: Tensor, deltas: Tensor, anchors: Tensor, gt_labels: Tensor,
                       gt_boxes: Tensor) -> Dict[str, Tensor]:
        """The losses summed over all anchors of n images: logits (n, R, K), deltas (n, R, 4), anchors
        (R, 4), gt_labels (n, R), gt_boxes (n, R, 4)."""
        n, k = logits.shape[0], self.num_classes
        labels = gt_labels.reshape(-1)
        foreground = (labels >= 0) & (labels != k)
        return {"loss_cls": self.cls_loss(logits.reshape(-1, k), labels),
                "loss_box_reg": self._box_loss(deltas.reshape(-1, 4), anchors.repeat(n, 1), gt_boxes.reshape(-1, 4),
                                               foreground)}

    def _box_loss(self, deltas: Tensor, anchors: Tensor, gt_boxes: Tensor, foreground: Tensor) -> Tensor:
        """Summed box loss over foreground anchors; deltas (R, 4), anchors (R, 4), gt (R, 4), mask (R,)."""
        deltas, anchors, gt_boxes = deltas[foreground].float(), anchors[foreground], gt_boxes[foreground]
        if self.box_loss.on_boxes:
            return self.box_loss(self.box_coder.decode(deltas, anchors), gt_boxes)
        return self.box_loss(deltas, self.box_coder.encode(anchors, gt_boxes))
