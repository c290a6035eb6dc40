"""Exporting a detector, post-processing included, to TorchScript or ONNX.

The exported graph is traced from :class:`ExportableRetinaNet`, which runs the model's own network,
anchors and post-processor (its eager code, written to trace shape-agnostically), so one graph serves
every input size:

    boxes (D, 4), scores (D,), labels (D,) = exported(image, image_size)

    image:      (1, 3, Hp, Wp) float32 in 0..255, the model's channel order, already resized; Hp and Wp
                are multiples of the model's size_divisibility and the padding holds the pixel mean
                (it normalises to exactly 0, as the eager model's zero padding does).
    image_size: (2,) int64, the (h, w) of the image inside the padding; boxes are clipped to it.

:func:`prepare_input` does the resize and padding from a raw image and returns the scale back to
its pixels. TorchScript keeps retdet's batched NMS (load it with ``import retdet`` first, which
registers the op); ONNX uses torchvision's NMS with a class offset (ONNX NonMaxSuppression).
"""
from __future__ import annotations

import os
from typing import List, Mapping, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from retdet.data.build import build_transforms
from retdet.data.transforms import test_resize
from retdet.modeling import permute_to_N_HWA_K
from retdet.modeling.postprocess import NMS_CHOICES

FORMATS = ("torchscript", "onnx")


class ExportableRetinaNet(nn.Module):
    """A built RetinaNet as one traceable function (see the module docstring): the model's own network,
    anchors and post-processor (:meth:`RetinaNetPostProcess.single_image`, which traces).

    Args:
        model: the detector (its parts, weights and post-processing settings are used as they are).
        nms: "retdet" (the compiled op, TorchScript) or "torchvision" (ONNX-exportable).
    """

    def __init__(self, model: nn.Module, *, nms: str = "retdet") -> None:
        super().__init__()
        if nms not in NMS_CHOICES:
            raise ValueError(f"nms must be one of {NMS_CHOICES}, got {nms!r}")
        for key in ("test_time_aug", "tiling"):
            if getattr(model, key, None) is not None:
                raise ValueError(f"model.{key} is set, but the exported graph holds the single-view model only: "
                                 f"export without it (model.{key}=None) and run the views around the exported "
                                 "model, or keep it in PyTorch (docs/inference.md)")
        self.model, self.nms = model.eval(), nms

    def forward(self, image: Tensor, image_size: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        model = self.model
        x = (image - model.preprocess.pixel_mean) / model.preprocess.pixel_std
        if model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _, logits, deltas = model.network(x)
        return self.postprocess(logits, deltas, image_size)

    def postprocess(self, logits: List[Tensor], deltas: List[Tensor],
                    image_size: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The head's per-level (1, A*K, Hi, Wi) and (1, A*4, Hi, Wi) outputs -> (boxes, scores, labels),
        boxes in the input's pixels."""
        model, post = self.model, self.model.postprocess
        # The anchors read only the levels' sizes, which the logits have (the int8 graph gives no features).
        anchors = model.anchor_generator(logits)
        dets = post.single_image([permute_to_N_HWA_K(x, model.num_classes)[0].float() for x in logits],
                                 [permute_to_N_HWA_K(x, 4)[0].float() for x in deltas], anchors, image_size,
                                 nms=self.nms)
        dets = post.finish(dets, image_size)
        return dets.boxes, dets.scores, dets.labels


def prepare_input(image: np.ndarray, cfg: Mapping, model: nn.Module, *,
                  input_format: str = "BGR") -> Tuple[Tensor, Tensor, Tensor]:
    """A raw (H, W, 3) uint8 image -> (image (1, 3, Hp, Wp), image_size (2,), scale (4,)): the
    exported ``model``'s inputs and the factors taking its boxes back to the raw image's pixels.
    Resized by the config's test transforms; channel order, padding and pixel mean are the model's."""
    preprocess = model.preprocess
    if input_format != preprocess.input_format:
        image = image[:, :, ::-1]
    resized = test_resize(build_transforms(cfg.get("dataloader", {}).get("test", {}).get("transforms", [])), image)
    h, w = resized.shape[:2]
    div = max(preprocess.size_divisibility, 1)
    hp, wp = -(-h // div) * div, -(-w // div) * div
    padded = preprocess.pixel_mean.detach().float().cpu().expand(3, hp, wp).clone()
    padded[:, :h, :w] = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
    sy, sx = image.shape[0] / h, image.shape[1] / w
    return padded[None], torch.tensor([h, w]), torch.tensor([sx, sy, sx, sy], dtype=torch.float32)


class _Postprocess(nn.Module):
    """The post-processing alone: (image_size, logits_0..L-1, deltas_0..L-1) -> (boxes, scores, labels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.wrapper = ExportableRetinaNet(model, nms="torchvision")

    def forward(self, image_size: Tensor, *outputs: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        half = len(outputs) // 2
        return self.wrapper.postprocess(list(outputs[:half]), list(outputs[half:]), image_size)


def export_model(model: nn.Module, example: Tuple[Tensor, Tensor], path: str, fmt: str) -> str:
    """Trace ``model`` on ``example`` and write it to ``path`` as ``fmt`` (torchscript or onnx).

    A model whose network runs from an int8 artifact (tools/quantize.py) exports to ONNX only: its
    quantized graph, with the normalisation in front and the float32 post-processing behind it."""
    import warnings

    if fmt not in FORMATS:
        raise ValueError(f"unsupported export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if model.runner.runtime is not None:
        if fmt != "onnx":
            raise ValueError(f"an int8 model exports to ONNX (QDQ) only, not {fmt!r}: use --format onnx")
        return export_quantized_onnx(model, example, path)
    wrapper = ExportableRetinaNet(model, nms="retdet" if fmt == "torchscript" else "torchvision")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about the data-dependent counts handled above
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            traced.save(path)
        else:
            torch.onnx.export(wrapper, example, path, dynamo=False, opset_version=17,
                              input_names=["image", "image_size"], output_names=["boxes", "scores", "labels"],
                              dynamic_axes={"image": {2: "height", 3: "width"}, "boxes": {0: "detections"},
                                            "scores": {0: "detections"}, "labels": {0: "detections"}})
    return path


def _prefix_internal_names(graph, prefix: str, keep: set) -> None:
    """Rename every value and node of ``graph`` but those in ``keep`` (two exported graphs use the
    same generated names, which must not collide when they are joined)."""
    def rename(name: str) -> str:
        return name if not name or name in keep else prefix + name

    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = rename(value.name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)


def export_quantized_onnx(model: nn.Module, example: Tuple[Tensor, Tensor], path: str) -> str:
    """One ONNX graph with the exported model's inputs and outputs: (image - mean) / std -> the int8
    network graph, unchanged -> the float32 post-processing traced from ``model``."""
    import tempfile
    import warnings

    import onnx
    from onnx import compose, helper, numpy_helper

    network = onnx.load(model.runner.artifact)
    image, image_size = example
    with torch.no_grad():
        x = (image - model.preprocess.pixel_mean) / model.preprocess.pixel_std
        outputs = model.runner(model, x)  # the int8 graph's outputs: example inputs of the post-processing
    logits, deltas = outputs.logits, outputs.deltas
    names = [o.name for o in network.graph.output]
    dynamic = {"image_size": {}, **{n: {2: f"h_{n}", 3: f"w_{n}"} for n in names},
               "boxes": {0: "detections"}, "scores": {0: "detections"}, "labels": {0: "detections"}}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post_path = os.path.join(tmp, "postprocess.onnx")
        torch.onnx.export(_Postprocess(model).eval(), (image_size, *logits, *deltas), post_path, dynamo=False,
                          opset_version=17, input_names=["image_size", *names],
                          output_names=["boxes", "scores", "labels"], dynamic_axes=dynamic)
        post = onnx.load(post_path)
    # The network graph takes the normalised batch "images": put the normalisation in front of it.
    graph = network.graph
    (network_input,) = [i for i in graph.input if i.name == "images"]
    mean = model.preprocess.pixel_mean.detach().float().reshape(1, 3, 1, 1).numpy()
    std = model.preprocess.pixel_std.detach().float().reshape(1, 3, 1, 1).numpy()
    graph.initializer.extend([numpy_helper.from_array(mean, "pixel_mean"), numpy_helper.from_array(std, "pixel_std")])
    graph.node.insert(0, helper.make_node("Div", ["image_centred", "pixel_std"], ["images"], name="/normalize/Div"))
    graph.node.insert(0, helper.make_node("Sub", ["image", "pixel_mean"], ["image_centred"], name="/normalize/Sub"))
    network_input.name = "image"
    network.ir_version = post.ir_version = max(network.ir_version, post.ir_version)
    domains = {o.domain: o.version for o in post.opset_import}
    for o in network.opset_import:
        domains[o.domain] = max(o.version, domains.get(o.domain, 0))
    for m in (network, post):
        del m.opset_import[:]
        m.opset_import.extend(helper.make_opsetid(d, v) for d, v in domains.items())
    _prefix_internal_names(post.graph, "post/", keep={"image_size", "boxes", "scores", "labels", *names})
    onnx.save(compose.merge_models(network, post, io_map=[(n, n) for n in names]), path)
    return path
