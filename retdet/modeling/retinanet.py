"""RetinaNet (Lin et al. 2017): backbone -> FPN -> shared heads; focal loss; per-level decoding + NMS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from retdet.registry import (
    ANCHOR_GENERATORS, BACKBONES, BOX_CODERS, DETECTORS, HEADS, LOSSES, MATCHERS, NECKS, POSTPROCESSORS, Registry,
    build,
)
from retdet.structures import Detections, ImageSample
from retdet.structures.boxes import pairwise_ioa, pairwise_iou

from .losses import LossNormalizer
from .preprocess import Preprocessor


def _part(value: Union[Mapping, Any], registry: Registry, where: str, **extra: Any) -> Any:
    """A part given as a config node (built here, with ``extra`` arguments) or as an object."""
    if isinstance(value, Mapping):
        return build(value, registry, where=where, **extra)
    return value


COMPILE_KEYS = ("mode", "dynamic", "fullgraph", "backend", "options")


def compile_options(value: Union[bool, Mapping[str, Any], None]) -> Optional[Dict[str, Any]]:
    """``model.compile``: False/None -> None (eager); True -> {} (torch.compile's defaults); a dict
    -> torch.compile's keyword arguments (mode, dynamic, fullgraph, backend, options)."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(COMPILE_KEYS))
        if unknown:
            raise ValueError(f"model.compile: unknown key(s) {unknown}; torch.compile takes {list(COMPILE_KEYS)}")
        return dict(value)
    raise ValueError(f"model.compile must be True, False or a dict of torch.compile arguments, got {value!r}")


def permute_to_N_HWA_K(tensor: Tensor, k: int) -> Tensor:
    """(N, A*K, H, W) -> (N, H*W*A, K), the anchors' order (location-major, then anchor)."""
    n, _, h, w = tensor.shape
    return tensor.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)


@dataclass
class DenseOutputs:
    """The detector's per-level outputs for a batch, before losses or post-processing.

    features: pyramid levels (N, C, Hi, Wi); anchors: (Hi*Wi*A, 4) per level; logits: (N, Hi*Wi*A, K)
    per level; deltas: (N, Hi*Wi*A, 4) per level; image_sizes: each image's (h, w) inside the padding.
    """

    features: List[Tensor]
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
        size_divisibility: int = 128,
        ignore_ioa_threshold: float = 0.5,
        channels_last: bool = False,
        compile: Union[bool, Mapping[str, Any]] = False,
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
                                       size_divisibility=size_divisibility, channels_last=channels_last)
        self.ignore_ioa_threshold = ignore_ioa_threshold
        # NHWC activations and weights: oneDNN (CPU) and cuDNN (with AMP) run these convolutions
        # faster without layout conversions; the head's outputs are then already in the anchors' order.
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        # torch.compile options for network() (None: eager). The compiled function is made on the first
        # forward and is not part of the module's state: state dicts, checkpoints and copies (the EMA
        # model) are those of the eager model; a copy compiles itself again when it first runs.
        self.compile_options = compile_options(compile)
        self._compiled_network: Optional[Any] = None
        self._frozen_versions: Optional[Tuple[int, ...]] = None  # weights a frozen graph was compiled with
        # An external runtime for network() (an int8 graph, see retdet/quantization): inference only.
        self.network_runtime: Optional[Any] = None
        self.network_runtime_description = ""

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

    def set_network_runtime(self, runtime: Optional[Any], *, description: str = "") -> None:
        """Run network() in ``runtime`` (images -> (logits, deltas), e.g. a quantized graph) instead of the
        module's layers; None restores them. Anchors, decoding and NMS stay as they are."""
        self.network_runtime, self.network_runtime_description = runtime, description if runtime else ""

    def _run_network(self, images: Tensor) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        if self.network_runtime is not None:
            if self.training:
                raise RuntimeError(f"this model's network runs in an inference runtime "
                                   f"({self.network_runtime_description}): it cannot train; load a float32 "
                                   f"checkpoint to train or fine-tune")
            logits, deltas = self.network_runtime(images)
            device = images.device
            logits, deltas = [t.to(device) for t in logits], [t.to(device) for t in deltas]
            return logits, logits, deltas  # the anchors read only the levels' sizes: the logits have them
        if self.compile_options is None:
            return self.network(images)
        if self.freezes_weights:
            self._check_frozen_weights()
        if self._compiled_network is None:
            self._compiled_network = torch.compile(self.network, **self.compile_options)
        return self._compiled_network(images)

    @property
    def freezes_weights(self) -> bool:
        """model.compile with options={"freezing": True}: inductor folds the weights into the compiled
        graph as constants (which it may pre-pack for oneDNN on CPU), an inference-only mode."""
        return bool(self.compile_options and (self.compile_options.get("options") or {}).get("freezing"))

    def _weight_versions(self) -> Tuple[int, ...]:
        # Every in-place write (optimizer step, load_state_dict's copy_) bumps a tensor's version.
        return tuple(t._version for t in (*self.parameters(), *self.buffers()))

    def _check_frozen_weights(self) -> None:
        """A frozen graph keeps the weights it was compiled with and no guard sees new values: refuse
        training, and refuse weights that changed after the first compiled call, instead of silently
        computing with the old ones."""
        if self.training or torch.is_grad_enabled():
            raise RuntimeError("model.compile options={'freezing': True} compiles the weights into the graph as "
                               "constants: it is for inference only (eval mode under torch.no_grad()); train with "
                               "model.compile=True instead")
        versions = self._weight_versions()
        if self._frozen_versions is None:
            self._frozen_versions = versions
        elif versions != self._frozen_versions:
            raise RuntimeError("model.compile options={'freezing': True}: the weights changed after the network was "
                               "compiled with them (training or load_state_dict after the first inference); build "
                               "the model again for the new weights")

    def __getstate__(self) -> Dict[str, Any]:
        # copy.deepcopy and pickle: the compiled function is bound to this instance; a copy makes its own.
        state = self.__dict__.copy()
        state["_compiled_network"] = None
        state["_frozen_versions"] = None
        state["network_runtime"] = None  # a runtime session does not copy; a copy runs the module's layers
        return state

    def forward(self, samples: Sequence[ImageSample]) -> Union[Dict[str, Tensor], List[Detections]]:
        out = self.dense_outputs(samples)
        if self.training:
            return self.losses(out.anchors, out.logits, out.deltas, samples)
        original_sizes = [s.original_size or s.image_size for s in samples]
        return self.postprocess(out.logits, out.deltas, out.anchors, out.image_sizes, original_sizes,
                                [s.image_id for s in samples])

    def dense_outputs(self, samples: Sequence[ImageSample]) -> "DenseOutputs":
        """Everything before losses or post-processing: preprocessing, the network and the anchors
        (what a distillation loss compares between a student and its teacher)."""
        batch = self.preprocess([s.image for s in samples])
        features, logits, deltas = self._run_network(batch.tensor)
        return DenseOutputs(features=list(features), anchors=self.anchor_generator(features),
                            logits=[permute_to_N_HWA_K(x, self.num_classes) for x in logits],
                            deltas=[permute_to_N_HWA_K(x, 4) for x in deltas], image_sizes=batch.image_sizes)

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

    def losses(self, anchors: List[Tensor], logits: List[Tensor], deltas: List[Tensor],
               samples: Sequence[ImageSample], *, labeled: Optional[Tuple[Tensor, Tensor]] = None) -> Dict[str, Tensor]:
        """labeled: label_anchors()'s result when the caller has it already."""
        all_anchors = torch.cat(anchors)
        labels, matched_boxes = labeled if labeled is not None else self.label_anchors(all_anchors, samples)
        logits_all, deltas_all = torch.cat(logits, dim=1), torch.cat(deltas, dim=1)  # (N, R, K), (N, R, 4)
        foreground = (labels >= 0) & (labels != self.num_classes)
        if self.loss_normalizer.mode == "per_image":
            cls_terms, box_terms = [], []
            for i in range(len(samples)):
                divisor = foreground[i].sum().clamp(min=1).float()
                cls_terms.append(self.cls_loss(logits_all[i], labels[i]) / divisor)
                box_terms.append(self._box_loss(deltas_all[i], all_anchors, matched_boxes[i], foreground[i]) / divisor)
            return {"loss_cls": torch.stack(cls_terms).mean(), "loss_box_reg": torch.stack(box_terms).mean()}
        divisor = self.loss_normalizer.batch_normalizer(foreground.sum())
        k = self.num_classes
        loss_cls = self.cls_loss(logits_all.reshape(-1, k), labels.reshape(-1))
        loss_box = self._box_loss(deltas_all.reshape(-1, 4), all_anchors.repeat(len(samples), 1),
                                  matched_boxes.reshape(-1, 4), foreground.reshape(-1))
        return {"loss_cls": loss_cls / divisor, "loss_box_reg": loss_box / divisor}

    def _box_loss(self, deltas: Tensor, anchors: Tensor, gt_boxes: Tensor, foreground: Tensor) -> Tensor:
        """Summed box loss over foreground anchors; deltas (R, 4), anchors (R, 4), gt (R, 4), mask (R,)."""
        deltas, anchors, gt_boxes = deltas[foreground].float(), anchors[foreground], gt_boxes[foreground]
        if self.box_loss.on_boxes:
            return self.box_loss(self.box_coder.decode(deltas, anchors), gt_boxes)
        return self.box_loss(deltas, self.box_coder.encode(anchors, gt_boxes))
