"""Typed name -> class registries, and building objects from config nodes.

Every pluggable part of retdet (backbones, necks, heads, losses, ...) registers here under a name.
A config node is a mapping with a ``type`` key naming the registered class and the constructor's
keyword arguments::

    dict(type="RetinaNetHead", num_classes=80, num_convs=4)

:func:`build` constructs it, first building any argument that is itself a config node (in any
registry, see :func:`lookup`). There are no scopes and no implicit imports: a researcher's module
registers its classes when it is imported, which a config asks for explicitly with
``imports = ["my_package.my_heads"]`` (or ``--import`` on the command line).
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Dict, Generic, Iterator, List, Optional, TypeVar

__all__ = [
    "Registry",
    "RegistryError",
    "build",
    "lookup",
    "ALL_REGISTRIES",
    "BACKBONES",
    "NECKS",
    "HEADS",
    "LOSSES",
    "ANCHOR_GENERATORS",
    "BOX_CODERS",
    "MATCHERS",
    "DETECTORS",
    "DATASETS",
    "TRANSFORMS",
    "OPTIMIZERS",
    "LR_SCHEDULERS",
    "HOOKS",
    "EVALUATORS",
    "POSTPROCESSORS",
    "PRUNING_IMPORTANCES",
    "DISTILL_LOSSES",
    "SAMPLERS",
]

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registered name. Its message is the whole explanation."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a repr
        return str(self.args[0]) if self.args else ""


def close_matches(name: str, candidates: List[str], n: int = 3) -> List[str]:
    """Up to ``n`` candidates that look like ``name`` (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[f] for f in found]


class Registry(Generic[T]):
    """A map from names to classes (or factory functions) of one kind.

    Args:
        name: what the registry holds, e.g. ``"backbones"``; used in error messages and
            in qualified type names (``"backbones.ResNet"``).
        base: if given, every registered class must be a subclass of it.
    """

    def __init__(self, name: str, *, base: Optional[type] = None) -> None:
        self.name = name
        self.base = base
        self._entries: Dict[str, Callable[..., T]] = {}
        if name in ALL_REGISTRIES:
            raise RegistryError(f"a registry named {name!r} already exists")
        ALL_REGISTRIES[name] = self

    def register(self, name: Optional[str] = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class decorator: ``@BACKBONES.register()`` or ``@BACKBONES.register("ResNetV1d")``."""
        if callable(name) and not isinstance(name, str):
            raise TypeError(f"use @{self.name.upper()}.register() with parentheses")

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            self.add(obj, name=name)
            return obj

        return deco

    def add(self, obj: Callable[..., T], *, name: Optional[str] = None) -> None:
        """Register ``obj`` under ``name`` (default: its ``__name__``)."""
        key = name or obj.__name__
        if not isinstance(key, str) or not key or "." in key:
            raise RegistryError(f"invalid name {key!r} for registry {self.name!r}: a non-empty name without dots")
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise TypeError(f"{self.name}: {obj!r} must be a subclass of {self.base.__name__}")
        if key in self._entries:
            old = self._entries[key]
            raise RegistryError(
                f"{self.name}: the name {key!r} is already registered by "
                f"{old.__module__}.{old.__qualname__}; register {obj.__module__}.{obj.__qualname__} "
                f"under another name, e.g. @{self.name.upper()}.register('My{key}')"
            )
        self._entries[key] = obj

    def get(self, name: str) -> Callable[..., T]:
        """The class registered as ``name``; an unknown name raises with close matches listed."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._entries)
        msg = f"{name!r} is not registered in {self.name}."
        guesses = close_matches(name, names)
        if guesses:
            msg += f" Did you mean: {', '.join(repr(g) for g in guesses)}?"
        msg += f" Registered {self.name}: {', '.join(names) if names else '(none)'}."
        msg += (
            " If it lives in your own module, import it first: add the module to the config's "
            "`imports` list or pass --import MODULE."
        )
        return msg

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"


ALL_REGISTRIES: Dict[str, Registry] = {}

BACKBONES: Registry = Registry("backbones")
NECKS: Registry = Registry("necks")
HEADS: Registry = Registry("heads")
LOSSES: Registry = Registry("losses")
ANCHOR_GENERATORS: Registry = Registry("anchor_generators")
BOX_CODERS: Registry = Registry("box_coders")
MATCHERS: Registry = Registry("matchers")
DETECTORS: Registry = Registry("detectors")
DATASETS: Registry = Registry("datasets")
TRANSFORMS: Registry = Registry("transforms")
OPTIMIZERS: Registry = Registry("optimizers")
LR_SCHEDULERS: Registry = Registry("lr_schedulers")
HOOKS: Registry = Registry("hooks")
EVALUATORS: Registry = Registry("evaluators")
POSTPROCESSORS: Registry = Registry("postprocessors")
PRUNING_IMPORTANCES: Registry = Registry("pruning_importances")  # channel importance for tools/prune.py
DISTILL_LOSSES: Registry = Registry("distill_losses")  # student-teacher losses for train.distill
SAMPLERS: Registry = Registry("samplers")  # training index streams for dataloader.train.sampler


def lookup(type_name: str, registry: Optional[Registry] = None) -> Callable[..., Any]:
    """Resolve a ``type`` value to a class.

    ``"registry.Name"`` names the registry explicitly. A bare name is looked up in ``registry``
    when one is given; otherwise in every registry, and it must be unique there.
    """
    if "." in type_name:
        reg_name, _, name = type_name.partition(".")
        if reg_name not in ALL_REGISTRIES:
            guesses = close_matches(reg_name, list(ALL_REGISTRIES))
            hint = f" Did you mean {guesses[0]!r}?" if guesses else ""
            raise RegistryError(
                f"unknown registry {reg_name!r} in type {type_name!r}.{hint} "
                f"Registries: {', '.join(sorted(ALL_REGISTRIES))}."
            )
        return ALL_REGISTRIES[reg_name].get(name)
    if registry is not None:
        return registry.get(type_name)
    owners = [r for r in ALL_REGISTRIES.values() if type_name in r]
    if len(owners) == 1:
        return owners[0].get(type_name)
    if len(owners) > 1:
        options = ", ".join(f"'{r.name}.{type_name}'" for r in owners)
        raise RegistryError(f"type {type_name!r} is registered in several registries; write one of {options}")
    everything = [f"{r.name}.{n}" for r in ALL_REGISTRIES.values() for n in r.names()]
    guesses = close_matches(type_name, [n.split(".", 1)[1] for n in everything])
    hint = f" Did you mean: {', '.join(repr(g) for g in guesses)}?" if guesses else ""
    raise RegistryError(
        f"{type_name!r} is not registered in any registry.{hint} "
        "If it lives in your own module, add the module to the config's `imports` list or pass --import MODULE."
    )


def is_config_node(value: Any) -> bool:
    """A mapping with a ``type`` key: something :func:`build` constructs."""
    return isinstance(value, Mapping) and "type" in value


def _build_value(value: Any, where: str) -> Any:
    if is_config_node(value):
        return build(value, where=where)
    if isinstance(value, (list, tuple)):
        built = [_build_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return type(value)(built) if isinstance(value, tuple) else built
    return value


def _check_arguments(cls: Callable[..., Any], kwargs: Dict[str, Any], where: str) -> None:
    """Name an unknown constructor argument and suggest the intended one, before calling."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call itself complain
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in accepted:
            guesses = close_matches(key, accepted)
            hint = f" Did you mean {guesses[0]!r}?" if guesses else ""
            raise TypeError(
                f"{where}: {getattr(cls, '__name__', cls)} has no argument {key!r}.{hint} "
                f"Its arguments: {', '.join(accepted)}."
            )


def build(cfg: Mapping, registry: Optional[Registry] = None, *, where: str = "cfg", **overrides: Any) -> Any:
    """Build the object a config node describes.

    Args:
        cfg: a mapping with ``type`` (a registered name, ``"registry.Name"``, or a class) and the
            constructor's keyword arguments. Arguments that are config nodes themselves (also
            inside lists and tuples) are built first.
        registry: where a bare ``type`` name is looked up; ``None`` searches all registries.
        where: the node's path in the config, for error messages.
        overrides: extra keyword arguments that take precedence over ``cfg``'s.
    """
    if not is_config_node(cfg):
        raise TypeError(f"{where}: expected a config node with a 'type' key, got {cfg!r}")
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    kwargs.update(overrides)
    type_value = cfg["type"]
    cls = lookup(type_value, registry) if isinstance(type_value, str) else type_value
    if not callable(cls):
        raise TypeError(f"{where}.type: {type_value!r} is neither a registered name nor a class")
    _check_arguments(cls, kwargs, where)
    # A class with `build_nested = False` builds its own parts (e.g. a detector that must pass
    # the backbone's output shapes to the neck); it receives the config nodes as they are.
    if getattr(cls, "build_nested", True):
        kwargs = {k: _build_value(v, f"{where}.{k}") for k, v in kwargs.items()}
    return cls(**kwargs)
