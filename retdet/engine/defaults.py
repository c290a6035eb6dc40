"""What every tool does first: parse ``--config``/``--weights``/``--import``/overrides, load the config,
build the model and load its weights. One way to do it, so every tool accepts a user's plugin module.

    parser = tool_argument_parser(__doc__, weights="required")
    parser.add_argument(...)                      # the tool's own flags
    args = parser.parse_args(argv)
    cfg = load_tool_config(args)                  # imports, overrides, num_classes="from_dataset"
    model = build_model_from_config(cfg, args.weights, device="cpu")
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

REQUIREMENTS = (None, "optional", "required")  # of a shared flag: absent, optional or required


def tool_argument_parser(description: Optional[str], *, config: str = "required", weights: Optional[str] = None,
                         weights_help: str = "a checkpoint: a training checkpoint, a state dict, a pruned "
                                             "checkpoint or an int8 folder (tools/quantize.py)",
                         config_default: Optional[str] = None) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags all tools share: ``--config`` ("required", "optional" or None for
    none), ``--weights`` (``weights``: None, "optional" or "required"), ``--import`` (repeatable: a
    module name or .py path that registers the user's components) and the ``key.path=value`` overrides
    (positional, last). The tool adds its own flags before parsing."""
    if weights not in REQUIREMENTS or config not in REQUIREMENTS:
        raise ValueError(f"config and weights must be one of {REQUIREMENTS}, got {config!r}, {weights!r}")
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if config:
        parser.add_argument("--config", "--config-file", dest="config", required=config == "required" and
                            config_default is None, default=config_default,
                            help="a Python config file, or a shipped one by name (retdet.configs.quickstart)")
    if weights:
        parser.add_argument("--weights", required=weights == "required", default=None, help=weights_help)
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="your module (name or .py path) that registers components; repeatable")
    parser.add_argument("opts", nargs="*", help="config overrides key.path=value (+key.path=value adds a key)")
    return parser


def load_tool_config(args: argparse.Namespace, *, config: Optional[str] = None,
                     overrides: Optional[Sequence[str]] = None) -> Any:
    """The config of a tool's command line: ``args.config`` with ``args.imports`` imported and
    ``args.opts`` applied (or another ``config`` file with its own ``overrides``, e.g. a second model's);
    ``model.head.num_classes="from_dataset"`` resolved."""
    from retdet.config import load_config
    from retdet.data import resolve_num_classes

    if config is None:
        config, overrides = args.config, getattr(args, "opts", ()) if overrides is None else overrides
    cfg = load_config(config, overrides or (), extra_imports=getattr(args, "imports", ()))
    resolve_num_classes(cfg)
    return cfg


def default_device() -> torch.device:
    """The current CUDA device when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def build_model_from_config(cfg: Mapping, weights: Optional[str] = None,
                            device: Union[str, torch.device, None] = None, *, training: bool = False,
                            logger: Optional[logging.Logger] = None) -> nn.Module:
    """``cfg.model`` built, ``weights`` loaded (any checkpoint :func:`retdet.checkpoint.load_weights`
    accepts; None keeps the initial weights), moved to ``device`` (default: :func:`default_device`) and
    put in eval mode (``training=True``: train mode)."""
    from retdet.checkpoint import load_weights
    from retdet.modeling import build_model

    model = build_model(cfg["model"])
    if weights:
        load_weights(model, weights, logger=logger)
    return model.to(device if device is not None else default_device()).train(training)
