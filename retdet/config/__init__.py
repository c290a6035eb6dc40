"""Python config files: :func:`load_config`, overrides, :func:`dump_config`. See loader.py."""
from .config_dict import ConfigDict
from .loader import (config_to_python, dump_config, import_user_modules, list_shipped_configs, load_config, locate,
                     save_config, shipped_configs_dir)
from .overrides import apply_overrides, parse_value

__all__ = [
    "ConfigDict",
    "apply_overrides",
    "config_to_python",
    "dump_config",
    "import_user_modules",
    "list_shipped_configs",
    "load_config",
    "locate",
    "parse_value",
    "save_config",
    "shipped_configs_dir",
]
