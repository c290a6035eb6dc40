"""Detector speed: retdet's model against torchvision's RetinaNet, both timed in one process.

The reference mirrors the config as far as torchvision's RetinaNet can: the same ResNet depth, norm
(FrozenBN, as torchvision uses with pretrained weights), frozen stages, FPN width, P6/P7 input,
anchors, classes and post-processing thresholds. When the two state dicts line up, our model loads
the reference's (converted) weights, so both run the same function on the same pixels and the
post-processing sees the same number of candidates. torchvision's in-model resize is replaced by an
identity (our resizing lives in the data pipeline), so both get the same image sizes; its
normalisation and batching stay. Calls alternate (ours, torchvision, ours, ...) and medians are
reported.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from retdet.checkpoint.convert import convert_torchvision_retinanet
from retdet.engine.defaults import build_model_from_config
from retdet.layers import winograd
from retdet.modeling import DetectorNetwork, permute_to_N_HWA_K
from retdet.structures import ImageSample
from retdet.utils.model_analysis import count_parameters, flop_analysis
from retdet.utils.timing import interleaved_ms, percentile


class _TorchvisionNetwork(nn.Module):
    """torchvision RetinaNet's backbone + FPN + head alone (for FLOP counting)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        features = list(self.model.backbone(images).values())
        return tuple(self.model.head(features).values())


def torchvision_reference(model_cfg: Mapping) -> Tuple[nn.Module, List[str]]:
    """torchvision's RetinaNet built like ``model_cfg``; also the settings it cannot mirror."""
    import torchvision
    from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    backbone_cfg, neck, head, anchors = (model_cfg["backbone"], model_cfg["neck"], model_cfg["head"],
                                         model_cfg["anchor_generator"])
    if backbone_cfg.get("type") != "ResNet":
        raise ValueError(f"--compare torchvision needs a ResNet backbone (model.backbone.type), "
                         f"got {backbone_cfg.get('type')!r}")
    differences = []
    depth = int(backbone_cfg.get("depth", 50))
    norm = backbone_cfg.get("norm", "FrozenBN")
    resnet = getattr(torchvision.models, f"resnet{depth}")(
        weights=None, norm_layer=FrozenBatchNorm2d if norm == "FrozenBN" else nn.BatchNorm2d)
    if int(backbone_cfg.get("width", 64)) != 64:
        differences.append(f"backbone width {backbone_cfg['width']} (torchvision's ResNet: 64)")
    freeze_at = int(backbone_cfg.get("freeze_at", 2))
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: 5 - freeze_at]
    for name, p in resnet.named_parameters():
        if not any(name.startswith(t) for t in trainable):
            p.requires_grad_(False)
    out_channels = int(neck.get("out_channels", 256))
    c5 = resnet.fc.in_features
    p6_in = c5 if neck.get("top_block", "p6p7_from_c5") == "p6p7_from_c5" else out_channels
    fpn = BackboneWithFPN(resnet, {"layer2": "0", "layer3": "1", "layer4": "2"}, [c5 // 4, c5 // 2, c5],
                          out_channels, extra_blocks=LastLevelP6P7(p6_in, out_channels))
    if neck.get("norm"):
        differences.append("FPN norm (torchvision's FPN here has none)")

    spo = int(anchors.get("scales_per_octave", 3))
    sizes = tuple(tuple(float(s) * 2 ** (i / spo) for i in range(spo)) if isinstance(s, (int, float)) else tuple(s)
                  for s in anchors["sizes"])
    ratios = tuple(anchors.get("aspect_ratios", (0.5, 1.0, 2.0)))
    anchor_generator = AnchorGenerator(sizes, (ratios,) * len(sizes))
    num_classes = int(head["num_classes"])
    head_norm = head.get("norm")
    norm_layer = None
    if head_norm == "GN":
        from functools import partial
        norm_layer = partial(nn.GroupNorm, 32)
    elif head_norm:
        differences.append(f"head norm {head_norm!r} (torchvision's head: none)")
    if int(head.get("num_convs", 4)) != 4:
        differences.append(f"head num_convs {head.get('num_convs')} (torchvision's head: 4)")
    tv_head = RetinaNetHead(out_channels, anchor_generator.num_anchors_per_location()[0], num_classes,
                            norm_layer=norm_layer)
    post = model_cfg.get("postprocess", {})
    model = TorchvisionRetinaNet(
        fpn, num_classes, anchor_generator=anchor_generator, head=tv_head,
        score_thresh=post.get("score_threshold", 0.05), nms_thresh=post.get("nms_threshold", 0.5),
        detections_per_img=post.get("max_detections", 100), topk_candidates=post.get("topk_per_level", 1000))
    # Same pixels on both sides: resizing is the data pipeline's job in retdet.
    model.transform.resize = lambda image, target=None: (image, target)
    return model, differences


def share_weights(ours: nn.Module, ref: nn.Module) -> str:
    """Load the reference's weights into ours when the state dicts line up; says what happened."""
    converted = convert_torchvision_retinanet(ref.state_dict())
    own = ours.state_dict()
    mismatched = [k for k, v in converted.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in converted and not k.startswith("loss_normalizer.")]  # training state
    if mismatched or missing:
        return (f"independent random weights ({len(mismatched)} reference tensors do not fit ours, "
                f"{len(missing)} of ours have no counterpart)")
    ours.load_state_dict(converted, strict=False)
    return "shared (torchvision's random weights converted into ours)"


def synthetic_batch(batch_size: int, height: int, width: int, num_classes: int, seed: int = 0,
                    input_format: str = "BGR"):
    """The same random images and boxes for both models: (ours: samples, torchvision: images, targets);
    ours in ``input_format`` channel order and 0..255, torchvision's RGB in 0..1."""
    g = torch.Generator().manual_seed(seed)
    samples, images, targets = [], [], []
    for i in range(batch_size):
        image = torch.rand(3, height, width, generator=g) * 255
        n = 5
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.05 + torch.rand(n, 2, generator=g) * 0.25) * torch.tensor([width, height])
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        ours = image.flip(0) if input_format == "RGB" else image
        samples.append(ImageSample(image=ours, image_id=i, gt_boxes=boxes, gt_labels=labels))
        images.append(image.flip(0) / 255)  # torchvision: RGB in 0..1
        targets.append({"boxes": boxes.clone(), "labels": labels.clone()})
    return samples, images, targets


def _to(device: torch.device, samples, images, targets):
    samples = [ImageSample(image=s.image.to(device), image_id=s.image_id, gt_boxes=s.gt_boxes.to(device),
                           gt_labels=s.gt_labels.to(device)) for s in samples]
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return samples, images, targets


def _amp(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def _row(name: str, ours: Optional[float], ref: Optional[float], unit: str, higher_is_better: bool) -> Dict[str, Any]:
    speedup = None
    if ours and ref:
        speedup = ours / ref if higher_is_better else ref / ours
    return {"name": name, "ours": ours, "ref": ref, "unit": unit, "speedup": speedup}


def _peak_memory_mb(device: torch.device) -> Optional[float]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def _stage_times(model: nn.Module, samples: Sequence[ImageSample], device: torch.device, runs: int,
                 amp: bool) -> Dict[str, float]:
    """Median ms of each inference stage of our detector (its forward, stage by stage)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stages: Dict[str, List[float]] = {k: [] for k in ("preprocessing", "backbone+FPN", "head", "post-processing")}
    for _ in range(runs):
        marks = [time.perf_counter()]

        def mark():
            sync()
            marks.append(time.perf_counter())

        # the model's conv_algorithm, as its forward runs it (retdet/layers/winograd.py)
        with torch.no_grad(), _amp(device, amp), winograd.conv_algorithm(getattr(model, "conv_algorithm", "auto")):
            batch = model.preprocess([s.image for s in samples])
            mark()
            features = model.features(batch.tensor)
            mark()
            logits, deltas = model.head(features)
            mark()
            anchors = model.anchor_generator(features)
            model.postprocess([permute_to_N_HWA_K(x, model.num_classes) for x in logits],
                              [permute_to_N_HWA_K(x, 4) for x in deltas], anchors, batch.image_sizes,
                              batch.image_sizes)
            mark()
        for name, a, b in zip(stages, marks, marks[1:]):
            stages[name].append((b - a) * 1e3)
    return {k: statistics.median(v) for k, v in stages.items()}


def network_cost(ours: nn.Module, ref: Optional[nn.Module], height: int, width: int,
                 device: torch.device) -> List[Dict[str, Any]]:
    """Parameters (millions) and GFLOPs of one image's network pass, ours and the reference."""
    images = torch.zeros(1, 3, height, width, device=device)
    rows = []
    params_ref = count_parameters(ref)["total"] / 1e6 if ref is not None else None
    rows.append(_row("parameters", count_parameters(ours)["total"] / 1e6, params_ref, "M", False))
    flops = flop_analysis(DetectorNetwork(ours), images).total() / 1e9
    flops_ref = flop_analysis(_TorchvisionNetwork(ref), images).total() / 1e9 if ref is not None else None
    rows.append(_row(f"GFLOPs (network, {height}x{width})", flops, flops_ref, "GFLOPs", False))
    for r in rows:
        r["speedup"] = None  # sizes, not speeds
    return rows


# torchvision's input normalisation (RGB in 0..1, ImageNet mean and std), in our 0..255 scale.
TORCHVISION_NORMALISATION = dict(pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
                                 input_format="RGB")


def build_pair(model_cfg: Mapping, *, device: torch.device, training: bool, compare: bool,
               log: Callable[[str], None]) -> Dict[str, nn.Module]:
    """{"ours": our model, "ref": torchvision's like it (when compare)}, sharing weights if they fit.

    With a reference, ours takes torchvision's input normalisation: with shared weights both then
    compute the same function, so the same number of candidates reach post-processing (with the
    default 0..255 scale and random weights, millions of ours would pass the score threshold and none
    of torchvision's). It does not change the cost of anything else."""
    torch.manual_seed(0)
    if compare:
        model_cfg = {**model_cfg, **TORCHVISION_NORMALISATION}
    models = {"ours": build_model_from_config({"model": model_cfg}, device=device, training=training)}
    if compare:
        ref, differences = torchvision_reference(model_cfg)
        models["ref"] = ref.to(device).train(training)
        log(f"weights: {share_weights(models['ours'], models['ref'])}")
        for d in differences:
            log(f"not mirrored in torchvision's model: {d}")
    return models


def int8_variant(ours: nn.Module, samples: Sequence[ImageSample], int8: str,
                 log: Callable[[str], None]) -> Tuple[nn.Module, Dict[str, Any]]:
    """A copy of ``ours`` whose network runs int8: from the artifact folder ``int8``, or, when ``int8``
    is "calibrate", quantized here on the benchmark's own images (a speed measurement, not accuracy)."""
    import copy
    import os
    import tempfile

    from retdet.quantization import attach_quantized
    from retdet.quantization.calibration import calibration_tensors
    from retdet.quantization.artifact import write_metadata
    from retdet.quantization.onnxruntime_backend import quantize_network

    quantized = copy.deepcopy(ours).cpu().eval()  # ours exactly: its config, normalisation and weights
    if int8 != "calibrate":
        return quantized, attach_quantized(quantized, int8, logger=None)
    with tempfile.TemporaryDirectory(prefix="retdet_int8_") as folder:
        path = os.path.join(folder, "network_int8.onnx")
        report = quantize_network(ours.cpu(), calibration_tensors(ours, [s.image.cpu() for s in samples]), path)
        log(f"int8: ours quantized on the {len(samples)} benchmark image(s) (minmax observer)")
        write_metadata(folder, ours, calib_images=len(samples), **report)
        meta = attach_quantized(quantized, folder, logger=None)  # the session holds the graph in memory
    return quantized, meta


def inference_benchmark(model_cfg: Mapping, *, device: torch.device, batch_size: int, height: int, width: int,
                        iters: int, warmup: int = 2, amp: bool = False, compare: bool = True,
                        weights: Optional[str] = None, int8: Optional[str] = None,
                        variants: Optional[Mapping[str, Tuple[Mapping, str]]] = None,
                        log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Rows of ours against torchvision (``compare``); with ``int8`` (an artifact folder or "calibrate")
    also our int8 network, and with ``variants`` ({name: (model config, checkpoint)}: a pruned or a
    distilled model) each of those, timed in the same interleaved loop against ours."""
    models = build_pair(model_cfg, device=device, training=False, compare=compare, log=log)
    ours, ref = models["ours"], models.get("ref")
    if weights:
        from retdet.checkpoint import load_weights

        load_weights(ours, weights)
    samples, images, targets = _to(device, *synthetic_batch(batch_size, height, width, ours.num_classes,
                                                            input_format=ours.preprocess.input_format))

    run_ours = _inference_fn(ours, samples, device, amp)

    def run_ref():
        with torch.no_grad(), _amp(device, amp):
            return ref(images)

    fns = {"ours": run_ours} if ref is None else {"ours": run_ours, "ref": run_ref}
    meta = None
    if int8:
        if device.type != "cpu":
            raise ValueError("--int8 runs on the CPU: use --device cpu")
        quantized, meta = int8_variant(ours, samples, int8, log)

        def run_int8():
            with torch.no_grad():
                return quantized(samples)
        fns["int8"] = run_int8
    # a pruned checkpoint narrows the variant's layers to its widths
    others = {name: build_model_from_config({"model": cfg}, path, device)
              for name, (cfg, path) in (variants or {}).items()}
    for name, other in others.items():
        fns[name] = _inference_fn(other, samples, device, amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = interleaved_ms(fns, device=device.type, warmup=warmup, runs=iters)
    med = {k: statistics.median(v) for k, v in times.items()}
    p90 = {k: percentile(v, 90) for k, v in times.items()}
    ips = {k: batch_size * 1e3 / v for k, v in med.items()}
    rows = [
        _row(f"images/s (batch {batch_size}, {height}x{width})", ips["ours"], ips.get("ref"), "images/s", True),
        _row("latency median", med["ours"], med.get("ref"), "ms", False),
        _row("latency p90", p90["ours"], p90.get("ref"), "ms", False),
    ]
    if "int8" in ips:
        rows += [_row("int8 images/s", ips["int8"], ips.get("ref"), "images/s", True),
                 _row("int8 latency median", med["int8"], med.get("ref"), "ms", False),
                 _row("int8 images/s (ref: ours float32)", ips["int8"], ips["ours"], "images/s", True)]
        size = _row("network on disk, int8 (ref: float32 graph)", meta["int8_onnx_bytes"] / 2**20,
                    meta["fp32_onnx_bytes"] / 2**20, "MB", False)
        size["speedup"] = meta["fp32_onnx_bytes"] / meta["int8_onnx_bytes"]  # times smaller
        rows.append(size)
    for name, other in others.items():
        rows += [_row(f"{name} images/s (ref: ours)", ips[name], ips["ours"], "images/s", True),
                 _row(f"{name} latency median (ref: ours)", med[name], med["ours"], "ms", False)]
        rows += _variant_cost(name, other, ours, height, width, device)
    for name, ms in _stage_times(ours, samples, device, max(3, iters // 2), amp).items():
        rows.append(_row(f"{name} (stage)", ms, None, "ms", False))
    rows.extend(network_cost(ours, ref, height, width, device))
    return rows


def _variant_cost(name: str, model: nn.Module, ours: nn.Module, height: int, width: int,
                  device: torch.device) -> List[Dict[str, Any]]:
    """Parameters and GFLOPs of a variant's network against ours (sizes: no speedup column)."""
    images = torch.zeros(1, 3, height, width, device=device)
    rows = [_row(f"{name} parameters (ref: ours)", count_parameters(model)["total"] / 1e6,
                 count_parameters(ours)["total"] / 1e6, "M", False),
            _row(f"{name} GFLOPs (network, {height}x{width}; ref: ours)",
                 flop_analysis(DetectorNetwork(model), images).total() / 1e9,
                 flop_analysis(DetectorNetwork(ours), images).total() / 1e9, "GFLOPs", False)]
    for r in rows:
        r["speedup"] = None
    return rows


def _inference_fn(model: nn.Module, samples, device: torch.device, amp: bool) -> Callable[[], Any]:
    def run():
        with torch.no_grad(), _amp(device, amp):
            return model(samples)
    return run


def _sgd_steps(models: Dict[str, nn.Module], samples, images, targets, device: torch.device, amp: bool,
               lr: float) -> Dict[str, Callable[[], None]]:
    """One SGD step (forward with losses, backward, update) per call, for each model."""
    optimizers = {k: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=0.9)
                  for k, m in models.items()}
    scalers = {k: torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda") for k in models}

    def step(name: str) -> Callable[[], None]:
        def run():
            with _amp(device, amp):
                losses = models[name](samples) if name == "ours" else models[name](images, targets)
                loss = sum(losses.values())
            optimizers[name].zero_grad(set_to_none=True)
            scalers[name].scale(loss).backward()
            scalers[name].step(optimizers[name])
            scalers[name].update()
        return run

    return {k: step(k) for k in models}


def fresh_weights_steps(model_cfg: Mapping, *, device: torch.device, batch: tuple, steps: int, amp: bool,
                        compare: bool) -> Tuple[Dict[str, List[float]], Dict[str, int]]:
    """Step times (ms) of freshly initialised models (each its own initialisation) trained at lr 0,
    so that every step sees the fresh weights' values, and the subnormal floats one step makes.

    With random weights our Detectron2-style input scaling (0..255, std 1) gives logits of +-70, the
    region where a focal loss's gradients underflow into subnormals; on x86 CPUs those made such
    steps several times slower than a trained model's. The first step is not timed (allocation)."""
    from retdet.utils.subnormals import SubnormalCounter

    torch.manual_seed(0)
    models = {"ours": build_model_from_config({"model": model_cfg}, device=device, training=True)}
    if compare:
        models["ref"] = torchvision_reference(model_cfg)[0].to(device).train()
    fns = _sgd_steps(models, *batch, device, amp, lr=0.0)
    counts = {}
    for name, fn in fns.items():
        with SubnormalCounter() as counter:
            fn()
        counts[name] = counter.total
    return interleaved_ms(fns, device=device.type, warmup=0, runs=steps), counts


def train_benchmark(model_cfg: Mapping, *, device: torch.device, batch_size: int, height: int, width: int,
                    iters: int, warmup: int = 2, amp: bool = False, compare: bool = True, fresh_steps: int = 4,
                    log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """One SGD step (forward with losses, backward, update) per call, on a fixed synthetic batch;
    then (fresh_steps > 0) the first steps of freshly initialised models against that steady state."""
    models = build_pair(model_cfg, device=device, training=True, compare=compare, log=log)
    ours = models["ours"]
    batch = _to(device, *synthetic_batch(batch_size, height, width, ours.num_classes,
                                         input_format=ours.preprocess.input_format))
    # Equal optimisers; a small LR keeps random-weight training finite over the timed steps.
    fns = _sgd_steps(models, *batch, device, amp, lr=1e-4)
    peaks: Dict[str, Optional[float]] = {}
    for name, fn in fns.items():  # memory: one step each, alone
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        fn()
        peaks[name] = _peak_memory_mb(device)
    times = interleaved_ms(fns, device=device.type, warmup=warmup, runs=iters)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        _row(f"train images/s (batch {batch_size}, {height}x{width})", batch_size * 1e3 / med["ours"],
             batch_size * 1e3 / med["ref"] if "ref" in med else None, "images/s", True),
        _row("iterations/s", 1e3 / med["ours"], 1e3 / med["ref"] if "ref" in med else None, "it/s", True),
        _row("step time median", med["ours"], med.get("ref"), "ms", False),
    ]
    if device.type == "cuda":
        rows.append(_row("peak memory (one step)", peaks["ours"], peaks.get("ref"), "MB", False))
    else:
        import resource
        rows.append(_row("peak RSS of the process (both models)",
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None, "MB", False))
    if fresh_steps > 0:
        fresh, subnormal = fresh_weights_steps(model_cfg, device=device, batch=batch, steps=fresh_steps, amp=amp,
                                               compare=compare)
        fresh_med = {k: statistics.median(v) for k, v in fresh.items()}
        rows.append(_row(f"step time, fresh random weights at lr 0 (steps 2-{fresh_steps + 1})", fresh_med["ours"],
                         fresh_med.get("ref"), "ms", False))
        ratio = {k: fresh_med[k] / med[k] for k in fresh_med}
        rows.append(_row("  fresh-weights step / steady step (target <= 1.10)", ratio["ours"], ratio.get("ref"),
                         "ratio", False))
        rows.append(_row("  subnormal floats made by one fresh-weights step", subnormal["ours"],
                         subnormal.get("ref"), "values", False))
        for r in rows[-2:]:
            r["speedup"] = None
    rows.extend(network_cost(ours, models.get("ref"), height, width, device))
    return rows


def roofline_benchmark(cfg: Mapping, *, device: torch.device, iters: int, compare: bool,
                       infer_size: Tuple[int, int] = (800, 1216), train_size: Tuple[int, int] = (512, 512),
                       train_batch: int = 2, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """This CPU's attainable convolution throughput, then inference and a training step of ours (and
    torchvision's, ``compare``) as fractions of it, with their time split (retdet/benchmarks/roofline.py)."""
    from retdet.benchmarks import roofline

    if device.type != "cpu":
        raise ValueError("--task roofline measures the CPU: use --device cpu")
    fp32 = roofline.attainable_conv_fp32(runs=iters)
    int8 = roofline.attainable_conv_int8(runs=iters)
    peak = max(fp32.values())
    rows = [{"name": f"single 3x3 conv 256->256 on 128x128, float32 {k}", "ours": v, "ref": None,
             "unit": "GFLOP/s", "speedup": None} for k, v in fp32.items()]
    rows.append({"name": "single 3x3 conv, int8 (ONNX Runtime QLinearConv)", "ours": int8, "ref": None,
                 "unit": "GOP/s", "speedup": None})
    for mode in ("inference", "train"):
        training = mode == "train"
        models = build_pair(cfg["model"], device=device, training=training, compare=compare, log=log)
        h, w = train_size if training else infer_size
        batch = _to(device, *synthetic_batch(train_batch if training else 1, h, w, models["ours"].num_classes,
                                             input_format=models["ours"].preprocess.input_format))
        if training:
            fns = _sgd_steps(models, *batch, device, amp=False, lr=1e-4)
        else:
            samples, images, _ = batch
            fns = {"ours": _inference_fn(models["ours"], samples, device, False)}
            if "ref" in models:
                fns["ref"] = _inference_fn(models["ref"], images, device, False)
        figures = {k: roofline.roofline_figures(fn, peak, runs=iters, model=models[k]) for k, fn in fns.items()}
        label = f"train step (batch {train_batch}, {h}x{w})" if training else f"inference (batch 1, {h}x{w})"
        for i, (name, value, unit) in enumerate(figures["ours"]):
            ref = figures["ref"][i][1] if "ref" in figures else None
            rows.append({"name": f"{label}: {name}", "ours": value, "ref": ref, "unit": unit, "speedup": None})
        if training:
            try:
                from retdet.benchmarks.data import data_throughput

                r = data_throughput(cfg, iters=20, warmup=3)
                rows.append({"name": f"{label}: data loading per batch of the config's loader ({r['name']})",
                             "ours": r["ms_per_batch"], "ref": None, "unit": "ms", "speedup": None})
            except (FileNotFoundError, KeyError, OSError) as e:
                log(f"data time not measured: the config's training data is not available here ({e})")
        del models, fns
    return rows
