"""ConfigDict: a dict with attribute access, the one container configs are made of."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigDict(dict):
    """A ``dict`` whose keys are also attributes; nested plain dicts become ConfigDicts.

    It stays a real ``dict`` (``isinstance(cfg, dict)``, ``==``, ``copy.deepcopy``, ``**cfg`` all
    behave as usual), so a config node can be passed straight to a constructor.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    @staticmethod
    def wrap(value: Any) -> Any:
        """Turn nested dicts (also inside lists and tuples) into ConfigDicts."""
        if isinstance(value, ConfigDict):
            return value
        if isinstance(value, Mapping):
            return ConfigDict(value)
        if isinstance(value, list):
            return [ConfigDict.wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(ConfigDict.wrap(v) for v in value)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, ConfigDict.wrap(value))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            from .overrides import unknown_key_message

            raise AttributeError(unknown_key_message(name, self, prefix="")) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __deepcopy__(self, memo: dict) -> "ConfigDict":
        import copy

        return ConfigDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        """A plain nested ``dict`` copy (ConfigDicts inside lists and tuples converted too)."""

        def unwrap(value: Any) -> Any:
            if isinstance(value, Mapping):
                return {k: unwrap(v) for k, v in value.items()}
            if isinstance(value, list):
                return [unwrap(v) for v in value]
            if isinstance(value, tuple):
                return tuple(unwrap(v) for v in value)
            return value

        return unwrap(self)
