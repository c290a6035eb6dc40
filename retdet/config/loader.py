"""Python config files: loading (with relative imports for composition), dumping, user imports.

A config file is plain Python. Its public top-level *data* (dicts, lists, tuples, numbers, strings,
booleans, None) is the config; modules, functions, classes and names starting with ``_`` are not.

Composition is one mechanism, ordinary Python: an experiment file imports what it builds on from
another config file with a relative import, then changes it::

    # configs/retinanet_R101_FPN_1x.py
    from .common.models.retinanet import model
    from .common.data.coco import dataloader
    from .common.schedules.schedule_1x import optimizer, lr_scheduler, train

    model.backbone.depth = 101

A relative import ``from .a.b import x`` loads the *file* ``a/b.py`` next to the importing config
(``..`` goes up one folder) and runs it afresh each time, so changes never leak between configs.

The configs retdet ships (``configs/`` of the repository, installed as ``retdet/configs``) are
reachable from a config in any folder by name, with the same run-afresh semantics::

    # ~/my_project/my_experiment.py
    from retdet.configs.quickstart import dataloader, lr_scheduler, model, optimizer, train

and ``load_config("retdet.configs.quickstart")`` loads one directly.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import keyword
import math
import os
import sys
import types
from typing import Any, Dict, Iterable, List, Optional

from .config_dict import ConfigDict

__all__ = ["load_config", "dump_config", "save_config", "config_to_python", "locate", "import_user_modules",
           "list_shipped_configs", "shipped_configs_dir"]

_DATA_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


def locate(qualified_name: str) -> Any:
    """The object a dotted path names, e.g. ``locate("torch.nn.ReLU")``."""
    module_name, _, attr_path = qualified_name.rpartition(".")
    parts = qualified_name.split(".")
    # Try the longest importable module prefix, then walk attributes (handles nested classes).
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ImportError(f"cannot locate {qualified_name!r}: no importable module {module_name!r} with {attr_path!r}")


def _resolve_relative(base_dir: str, name: str, level: int) -> str:
    """Folder or file path (without .py) that ``from {'.' * level}{name} import ...`` names."""
    folder = base_dir
    for _ in range(level - 1):
        folder = os.path.dirname(folder)
    return os.path.join(folder, *name.split(".")) if name else folder


def _namespace(path: str, entries: Dict[str, Any]) -> types.SimpleNamespace:
    ns = types.SimpleNamespace(**{k: ConfigDict.wrap(v) for k, v in entries.items()})
    ns.__file__ = path
    return ns


SHIPPED_PREFIX = "retdet.configs"


def shipped_configs_dir() -> str:
    """The folder of the configs retdet ships: ``retdet/configs`` in an installed package, the
    repository's ``configs/`` in a checkout (one copy in the tree; the wheel maps it into the package)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in (os.path.join(package, "configs"), os.path.join(os.path.dirname(package), "configs")):
        if os.path.isfile(os.path.join(folder, "quickstart.py")):
            return folder
    raise FileNotFoundError(f"retdet's shipped configs are not installed (looked in {package}/configs and "
                            f"{os.path.dirname(package)}/configs); reinstall retdet")


def list_shipped_configs() -> List[str]:
    """Every shipped config by its importable name, e.g. ``retdet.configs.common.models.retinanet``."""
    root = shipped_configs_dir()
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        rel = os.path.relpath(folder, root)
        prefix = SHIPPED_PREFIX + ("" if rel == "." else "." + rel.replace(os.sep, "."))
        names += [f"{prefix}.{f[:-3]}" for f in sorted(files) if f.endswith(".py") and not f.startswith("_")]
    return names


def shipped_config_path(name: str) -> str:
    """``retdet.configs.a.b`` -> the path of the shipped file (or folder) ``a/b``, without ``.py``;
    an unknown name is an ImportError with close matches and the list of what ships."""
    rel = name[len(SHIPPED_PREFIX):].lstrip(".")
    target = os.path.join(shipped_configs_dir(), *rel.split(".")) if rel else shipped_configs_dir()
    if os.path.isfile(target + ".py") or os.path.isdir(target):
        return target
    from retdet.registry import close_matches

    shipped = list_shipped_configs()
    guesses = close_matches(name, shipped)
    hint = f" Did you mean {guesses[0]!r}?" if guesses else ""
    raise ImportError(f"no shipped config {name!r}.{hint} retdet ships: {', '.join(shipped)}")


def _load_target(target: str, fromlist, what: str, current_file: str):
    """What ``from <what> import <fromlist>`` gives when <what> names the file or folder ``target``."""
    if os.path.isfile(target + ".py"):
        if not fromlist:
            raise ImportError(f"{current_file}: use 'from {what} import <names>' to import from a config file")
        return _namespace(target + ".py", _load_entries(target + ".py", keep_all=True))
    if os.path.isdir(target):
        # ``from .common.models import retinanet``: each imported name is a config file.
        ns = types.SimpleNamespace()
        for item in fromlist or ():
            path = os.path.join(target, item + ".py")
            if not os.path.isfile(path):
                raise ImportError(f"{current_file}: no config file {path} for 'from {what} import {item}'")
            setattr(ns, item, _namespace(path, _load_entries(path, keep_all=True)))
        return ns
    raise ImportError(f"{current_file}: {what} names neither {target}.py nor a folder")


def _make_importer(current_file: str):
    real_import = builtins.__import__
    base_dir = os.path.dirname(os.path.abspath(current_file))

    def config_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            if name == SHIPPED_PREFIX or name.startswith(SHIPPED_PREFIX + "."):
                return _load_target(shipped_config_path(name), fromlist, name, current_file)
            return real_import(name, globals, locals, fromlist, level)
        target = _resolve_relative(base_dir, name, level)
        if os.path.isfile(target + ".py") or os.path.isdir(target):
            return _load_target(target, fromlist, "." * level + name, current_file)
        raise ImportError(
            f"{current_file}: relative import {'.' * level}{name} names neither {target}.py nor a folder"
        )

    return config_import


def _is_data(value: Any) -> bool:
    return isinstance(value, _DATA_TYPES)


def _load_entries(path: str, keep_all: bool = False) -> Dict[str, Any]:
    """Run a config file; return its top-level names (all of them when imported by another config,
    so helper values can be shared, only the public data when it is the config being loaded)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    module_globals: Dict[str, Any] = {
        "__file__": path,
        "__name__": "retdet_config." + os.path.splitext(os.path.basename(path))[0],
        # dict(...) makes ConfigDicts, so a config can write `model.depth = 101`.
        "__builtins__": {**vars(builtins), "__import__": _make_importer(path), "dict": ConfigDict},
    }
    exec(compile(source, path, "exec"), module_globals)
    entries = {}
    for key, value in module_globals.items():
        if key.startswith("__"):
            continue
        if keep_all or (not key.startswith("_") and _is_data(value)):
            entries[key] = value
    return entries


def _module_file(name: str, relative_to: Optional[str]) -> str:
    """The absolute path of an ``imports`` entry ending in .py (relative to the config's folder, then
    to the working directory)."""
    candidates = [name] if os.path.isabs(name) else [os.path.join(relative_to or "", name), os.path.join(os.getcwd(), name)]
    path = next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise ImportError(f"imports: module file {name!r} not found (looked in: {', '.join(candidates)})")
    return path


def _same_file(a: Optional[str], b: str) -> bool:
    return a is not None and os.path.exists(a) and os.path.samefile(a, b)


def import_user_modules(names: Iterable[str], relative_to: Optional[str] = None) -> List[types.ModuleType]:
    """Import the researcher's own modules so their classes register themselves.

    Each entry is a module name (``my_package.my_heads``) or a path to a ``.py`` file, relative to
    ``relative_to`` (the config file's folder) or to the working directory.
    """
    modules = []
    for name in names:
        if name.endswith(".py"):
            path = _module_file(name, relative_to)
            mod_name = os.path.splitext(os.path.basename(path))[0]
            # Already imported, under this name or as part of a package (``tests.helpers.user_hooks``):
            # running the file again would register its classes a second time.
            loaded = next((m for m in list(sys.modules.values())
                           if _same_file(getattr(m, "__file__", None), path)), None)
            if loaded is not None:
                modules.append(loaded)
                continue
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            modules.append(module)
        else:
            try:
                modules.append(importlib.import_module(name))
            except ImportError as e:
                raise ImportError(
                    f"imports: cannot import {name!r} ({e}); is its folder on PYTHONPATH, "
                    "or give the path to its .py file"
                ) from e
    return modules


def load_config(path: str, overrides: Iterable[str] = (), *, extra_imports: Iterable[str] = ()) -> ConfigDict:
    """Load a config file (a path, or a shipped config by name: ``retdet.configs.quickstart``), import
    its ``imports`` (and ``extra_imports``), apply ``a.b=value`` overrides (see :mod:`retdet.config.overrides`)."""
    from .overrides import apply_overrides

    if not os.path.exists(path) and (path == SHIPPED_PREFIX or path.startswith(SHIPPED_PREFIX + ".")):
        path = shipped_config_path(path) + ".py"  # a shipped config by name, e.g. retdet.configs.quickstart
    cfg = ConfigDict(_load_entries(path))
    cfg = apply_overrides(cfg, overrides)
    base = os.path.dirname(os.path.abspath(path))
    if cfg.get("imports"):
        # File paths become absolute, so the resolved config (dumped into the run folder) reloads anywhere.
        cfg["imports"] = [_module_file(n, base) if n.endswith(".py") else n for n in cfg["imports"]]
    import_user_modules(list(cfg.get("imports", [])) + list(extra_imports), relative_to=base)
    return cfg


# ----------------------------------------------------------------------------------------------
# Dumping: the resolved config as a Python file that loads back to an equal config.


def _format(value: Any, indent: int) -> str:
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "dict()"
        if all(isinstance(k, str) and k.isidentifier() and k not in _KEYWORDS for k in value):
            items = [f"{pad}{k}={_format(v, indent + 4)}," for k, v in value.items()]
            return "dict(\n" + "\n".join(items) + "\n" + " " * indent + ")"
        items = [f"{pad}{_format(k, indent + 4)}: {_format(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, (list, tuple)):
        inner = [_format(v, indent + 4) for v in value]
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if isinstance(value, tuple) and len(value) == 1:
            return f"({inner[0]},)"
        flat = open_ + ", ".join(inner) + close
        if len(flat) <= 80 and "\n" not in flat:
            return flat
        return open_ + "\n" + "".join(f"{pad}{i},\n" for i in inner) + " " * indent + close
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if callable(value) and hasattr(value, "__qualname__") and "<locals>" not in value.__qualname__:
        return f"locate({value.__module__ + '.' + value.__qualname__!r})"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) into a Python config file")


_KEYWORDS = set(keyword.kwlist)


def config_to_python(cfg: dict) -> str:
    """Source text of a config file equal to ``cfg``."""
    lines = [
        "# Resolved retdet config, written by retdet.config.dump_config; reload with load_config().",
        "from retdet.config import locate  # noqa: F401  (used for classes and functions, if any)",
        "",
    ]
    for key, value in cfg.items():
        if not (isinstance(key, str) and key.isidentifier()) or key.startswith("_"):
            raise TypeError(f"top-level config key {key!r} must be a public Python identifier")
        lines.append(f"{key} = {_format(value, 0)}")
        lines.append("")
    return "\n".join(lines)


def dump_config(cfg: dict, path: str) -> str:
    """Write ``cfg`` to ``path`` as a Python config file (atomically); return the path."""
    text = config_to_python(cfg)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def save_config(cfg: dict, output_dir: str, name: str = "config.py") -> str:
    """Write the resolved config next to a run's outputs, as ``output_dir/config.py``."""
    return dump_config(cfg, os.path.join(output_dir, name))
