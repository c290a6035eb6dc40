"""Command-line overrides: ``a.b.c=value`` changes an existing key, ``+a.b.c=value`` adds one.

Values are Python literals (``4``, ``0.01``, ``True``, ``None``, ``[1, 2]``, ``(800, 1333)``,
``'text'``, and ``dict(type="RandomFlip", prob=0.5)``); ``true``/``false``/``none``/``null`` are accepted too, and anything that is not a
literal is taken as a string (``model.backbone.norm=GN``). List elements are addressed by index
(``data.transforms.0.max_size=1000``). Changing a key that does not exist is an error with a
did-you-mean suggestion, so a typo never silently does nothing.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any, Iterable, List, Tuple

from ..registry import close_matches

__all__ = ["apply_overrides", "parse_override", "parse_value", "unknown_key_message"]

_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _literal(node: ast.AST) -> Any:
    """ast.literal_eval's literals, plus ``dict(key=literal, ...)`` calls (how configs write nodes)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def parse_value(text: str) -> Any:
    """A typed value from its command-line text (see module docstring)."""
    stripped = text.strip()
    if stripped.lower() in _WORDS:
        return _WORDS[stripped.lower()]
    try:
        return _literal(ast.parse(stripped, mode="eval").body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_override(item: str) -> Tuple[List[str], Any, bool]:
    """``"+a.b=1"`` -> (``["a", "b"]``, ``1``, add=True)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.path=value")
    key, _, text = item.partition("=")
    key = key.strip()
    add = key.startswith("+")
    key = key.lstrip("+")
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ValueError(f"override {item!r}: empty key path")
    return parts, parse_value(text), add


def unknown_key_message(key: str, node: Any, prefix: str) -> str:
    full = f"{prefix}.{key}" if prefix else key
    if isinstance(node, Mapping):
        options = [str(k) for k in node]
        guesses = close_matches(str(key), options)
        hint = f" Did you mean {(prefix + '.' if prefix else '') + guesses[0]!r}?" if guesses else ""
        where = f"'{prefix}'" if prefix else "the config"
        return (
            f"unknown config key {full!r}.{hint} Keys of {where}: {', '.join(options) or '(none)'}. "
            f"To add a new key, write +{full}=VALUE."
        )
    return f"unknown config key {full!r}: {prefix or 'the config'} is a {type(node).__name__}, not a dict"


def _child(node: Any, key: str, prefix: str) -> Any:
    if isinstance(node, Mapping):
        if key not in node:
            raise KeyError(unknown_key_message(key, node, prefix))
        return node[key]
    if isinstance(node, (list, tuple)):
        try:
            return node[int(key)]
        except (ValueError, IndexError):
            raise KeyError(f"config key {prefix}.{key}: {prefix} is a list of {len(node)} items; "
                           "use an index 0..{}".format(len(node) - 1)) from None
    raise KeyError(unknown_key_message(key, node, prefix))


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``key.path=value`` strings to ``cfg`` in place; returns ``cfg``."""
    for item in overrides:
        parts, value, add = parse_override(item)
        node, prefix = cfg, ""
        for part in parts[:-1]:
            node = _child(node, part, prefix)
            prefix = f"{prefix}.{part}" if prefix else part
        last = parts[-1]
        if isinstance(node, tuple):
            raise KeyError(f"override {item!r}: {prefix} is a tuple; replace it whole ({prefix}=(...))")
        if isinstance(node, list):
            _child(node, last, prefix)  # validates the index
            node[int(last)] = value
        elif isinstance(node, Mapping):
            if last not in node and not add:
                raise KeyError(unknown_key_message(last, node, prefix))
            node[last] = value
        else:
            raise KeyError(unknown_key_message(last, node, prefix))
    return cfg
