"""How a detector's network (backbone -> FPN -> head) runs: eagerly, torch.compile'd (optionally with
its weights frozen into the graph), or in an external inference runtime (an int8 graph, see
retdet/quantization). Anchors, losses and post-processing never run here: they stay eager float32 code.

Also :class:`DetectorNetwork`, the network alone as a module with plain tensor outputs, for the tools
that trace it (FLOP counts, pruning's dependency graph, the ONNX graph that is quantized).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

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


@dataclass
class NetworkOutputs:
    """One network pass over a batch, per level (shallow to deep).

    logits: (N, A*K, Hi, Wi); deltas: (N, A*4, Hi, Wi); features: the pyramid levels (N, C, Hi, Wi), or
    None when an external runtime ran the network (its graph returns the head's outputs only).
    """

    logits: List[Tensor]
    deltas: List[Tensor]
    features: Optional[List[Tensor]] = None


class NetworkRunner:
    """Runs ``model.network(images)`` the way the config and the loaded weights ask for.

    Args:
        compile: ``model.compile`` (see :func:`compile_options`).

    The compiled function is made on the first call and is not part of the model's state: state dicts,
    checkpoints and copies (the EMA model) are those of the eager model; a copy compiles itself again
    when it first runs, and a copy of a model with a runtime runs the module's layers (see __getstate__).
    """

    def __init__(self, *, compile: Union[bool, Mapping[str, Any], None] = False) -> None:
        self.compile_options = compile_options(compile)
        self._compiled: Optional[Any] = None
        self._frozen_versions: Optional[Tuple[int, ...]] = None  # weights a frozen graph was compiled with
        # An external runtime (images -> (logits, deltas)) replacing the module's layers: inference only.
        self.runtime: Optional[Any] = None
        self.runtime_description = ""
        self.artifact: Optional[str] = None  # the runtime's graph file (what the ONNX export puts in)

    def set_runtime(self, runtime: Optional[Any], *, description: str = "", artifact: Optional[str] = None) -> None:
        """Run the network in ``runtime`` (images -> (logits, deltas), e.g. a quantized graph read from
        the file ``artifact``) instead of the module's layers; None restores them."""
        self.runtime = runtime
        self.runtime_description, self.artifact = (description, artifact) if runtime is not None else ("", None)

    def __call__(self, model: nn.Module, images: Tensor) -> NetworkOutputs:
        """(N, 3, Hp, Wp) normalised batch -> ``model``'s network outputs."""
        if self.runtime is not None:
            return self._run_runtime(model, images)
        if self.compile_options is None:
            features, logits, deltas = model.network(images)
        else:
            features, logits, deltas = self._run_compiled(model, images)
        return NetworkOutputs(logits=list(logits), deltas=list(deltas), features=list(features))

    def _run_runtime(self, model: nn.Module, images: Tensor) -> NetworkOutputs:
        if model.training:
            raise RuntimeError(f"this model's network runs in an inference runtime ({self.runtime_description}): "
                               f"it cannot train; load a float32 checkpoint to train or fine-tune")
        logits, deltas = self.runtime(images)
        device = images.device
        return NetworkOutputs(logits=[t.to(device) for t in logits], deltas=[t.to(device) for t in deltas])

    def _run_compiled(self, model: nn.Module, images: Tensor):
        if self.freezes_weights:
            self._check_frozen_weights(model)
        if self._compiled is None:
            self._compiled = torch.compile(model.network, **self.compile_options)
        return self._compiled(images)

    @property
    def freezes_weights(self) -> bool:
        """model.compile with options={"freezing": True}: inductor folds the weights into the compiled
        graph as constants (which it may pre-pack for oneDNN on CPU), an inference-only mode."""
        return bool(self.compile_options and (self.compile_options.get("options") or {}).get("freezing"))

    def _check_frozen_weights(self, model: nn.Module) -> None:
        """A frozen graph keeps the weights it was compiled with and no guard sees new values: refuse
        training, and refuse weights that changed after the first compiled call, instead of silently
        computing with the old ones."""
        if model.training or torch.is_grad_enabled():
            raise RuntimeError("model.compile options={'freezing': True} compiles the weights into the graph as "
                               "constants: it is for inference only (eval mode under torch.no_grad()); train with "
                               "model.compile=True instead")
        # Every in-place write (optimizer step, load_state_dict's copy_) bumps a tensor's version.
        versions = tuple(t._version for t in (*model.parameters(), *model.buffers()))
        if self._frozen_versions is None:
            self._frozen_versions = versions
        elif versions != self._frozen_versions:
            raise RuntimeError("model.compile options={'freezing': True}: the weights changed after the network was "
                               "compiled with them (training or load_state_dict after the first inference); build "
                               "the model again for the new weights")

    def __getstate__(self) -> Dict[str, Any]:
        # copy.deepcopy and pickle (the EMA model is a deepcopy): the compiled function is bound to the
        # original model, and a runtime session does not copy; the copy compiles its own, or runs the
        # module's layers.
        state = self.__dict__.copy()
        state.update(_compiled=None, _frozen_versions=None, runtime=None, runtime_description="", artifact=None)
        return state


class DetectorNetwork(nn.Module):
    """The detector's network alone: a normalised (N, 3, H, W) batch -> (logits_0..logits_{L-1},
    deltas_0..deltas_{L-1}), the head's (N, A*K, Hi, Wi) and (N, A*4, Hi, Wi) outputs as one flat tuple.

    What tracers take (fvcore's FLOP count, torch-pruning's dependency graph, the ONNX export of the
    network that is quantized): pre- and post-processing are not convolutions, take no FLOPs worth
    counting, and would only add data-dependent control flow.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        _, logits, deltas = self.model.network(images)
        return (*logits, *deltas)


__all__ = ["COMPILE_KEYS", "DetectorNetwork", "NetworkOutputs", "NetworkRunner", "compile_options"]
