import sys
import textwrap

import pytest

from retdet.config import load_config
from retdet.registry import HEADS, RegistryError, build, lookup


def test_register_get_and_alias(scratch_registry):
    reg = scratch_registry("widgets")

    @reg.register()
    class Widget:
        def __init__(self, *, size=1):
            self.size = size

    @reg.register("FancyWidget")
    class _Impl(Widget):
        pass

    assert reg.get("Widget") is Widget
    assert reg.get("FancyWidget") is _Impl
    assert "_Impl" not in reg
    assert reg.names() == ["FancyWidget", "Widget"]
    assert build(dict(type="Widget", size=3), reg).size == 3
    assert build(dict(type="widgets.FancyWidget")).size == 1  # qualified name, no registry given


def test_duplicate_name_is_an_error(scratch_registry):
    reg = scratch_registry("gadgets")

    @reg.register()
    class Gadget:
        pass

    with pytest.raises(RegistryError, match="already registered"):

        @reg.register("Gadget")
        class Other:
            pass

    assert reg.get("Gadget") is Gadget  # the first registration is untouched


def test_unknown_name_lists_close_matches_and_registered(scratch_registry):
    reg = scratch_registry("things")
    for name in ("RetinaHead", "RetinaNetHead", "FCOSHead"):
        reg.add(type(name, (), {}), name=name)
    with pytest.raises(RegistryError) as err:
        reg.get("RetinaNetHeaad")
    msg = str(err.value)
    assert "Did you mean: 'RetinaNetHead'" in msg
    assert "Registered things: FCOSHead, RetinaHead, RetinaNetHead" in msg
    assert "--import" in msg


def test_unknown_argument_is_named_with_suggestion(scratch_registry):
    reg = scratch_registry("parts")

    @reg.register()
    class Part:
        def __init__(self, *, num_convs: int = 4, channels: int = 256):
            pass

    with pytest.raises(TypeError, match=r"no argument 'num_conv'.*Did you mean 'num_convs'"):
        build(dict(type="Part", num_conv=2), reg, where="model.head")


def test_recursive_build_of_nested_nodes(scratch_registry):
    inner = scratch_registry("inner_parts")
    outer = scratch_registry("outer_parts")

    @inner.register()
    class Leaf:
        def __init__(self, value=0):
            self.value = value

    @outer.register()
    class Tree:
        def __init__(self, leaf, leaves=(), plain=None):
            self.leaf, self.leaves, self.plain = leaf, leaves, plain

    tree = build(
        dict(type="Tree", leaf=dict(type="Leaf", value=1), leaves=[dict(type="Leaf", value=2), 5],
             plain=dict(a=1)),
        outer,
    )
    assert isinstance(tree.leaf, Leaf) and tree.leaf.value == 1
    assert isinstance(tree.leaves[0], Leaf) and tree.leaves[0].value == 2 and tree.leaves[1] == 5
    assert tree.plain == {"a": 1}  # a dict without `type` is passed through


def test_ambiguous_bare_name_asks_for_qualification(scratch_registry):
    a, b = scratch_registry("reg_a"), scratch_registry("reg_b")
    a.add(type("Same", (), {}), name="Same")
    b.add(type("Same", (), {}), name="Same")
    with pytest.raises(RegistryError, match="'reg_a.Same', 'reg_b.Same'"):
        lookup("Same")
    assert lookup("reg_b.Same") is b.get("Same")


def test_all_typed_registries_exist():
    from retdet import registry

    for name in ("BACKBONES", "NECKS", "HEADS", "LOSSES", "ANCHOR_GENERATORS", "BOX_CODERS", "MATCHERS",
                 "DETECTORS", "DATASETS", "TRANSFORMS", "OPTIMIZERS", "LR_SCHEDULERS", "HOOKS", "EVALUATORS"):
        assert isinstance(getattr(registry, name), registry.Registry)


@pytest.mark.parametrize("how", ["config_imports", "extra_import_flag", "file_path"])
def test_user_head_outside_the_package(tmp_path, monkeypatch, how):
    """A researcher's head in their own module registers on import and builds from a config."""
    module_name = f"my_heads_{how}"
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(f"""
        import torch
        from retdet.registry import HEADS

        @HEADS.register()
        class MyHead_{how}(torch.nn.Module):
            def __init__(self, *, in_channels: int, num_classes: int):
                super().__init__()
                self.cls = torch.nn.Conv2d(in_channels, num_classes, 3, padding=1)

            def forward(self, x):
                return self.cls(x)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    if how == "config_imports":
        imports_line, extra = f'imports = ["{module_name}"]', ()
    elif how == "file_path":
        imports_line, extra = f'imports = ["{module_name}.py"]', ()
    else:
        imports_line, extra = "imports = []", (module_name,)
    cfg_file = tmp_path / "exp.py"
    cfg_file.write_text(f"{imports_line}\nhead = dict(type='MyHead_{how}', in_channels=8, num_classes=3)\n")
    assert f"MyHead_{how}" not in HEADS
    try:
        cfg = load_config(str(cfg_file), extra_imports=extra)
        head = build(cfg.head, HEADS)
        import torch

        assert head(torch.zeros(1, 8, 5, 5)).shape == (1, 3, 5, 5)
    finally:
        HEADS._entries.pop(f"MyHead_{how}", None)
        sys.modules.pop(module_name, None)


def test_missing_user_module_is_a_clear_error(tmp_path):
    cfg_file = tmp_path / "exp.py"
    cfg_file.write_text('imports = ["no_such_module_xyz"]\n')
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        load_config(str(cfg_file))


def test_a_file_already_imported_as_part_of_a_package_is_not_run_again(tmp_path, monkeypatch):
    """`imports=['pkg/heads.py']` after `import pkg.heads` reuses the module: running the file a second
    time would register its classes twice (a RegistryError naming both modules)."""
    (tmp_path / "pkg_twice").mkdir()
    (tmp_path / "pkg_twice" / "__init__.py").write_text("")
    (tmp_path / "pkg_twice" / "heads_twice.py").write_text(textwrap.dedent("""
        import torch
        from retdet.registry import HEADS

        @HEADS.register()
        class HeadImportedTwice(torch.nn.Identity):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import importlib

        package_module = importlib.import_module("pkg_twice.heads_twice")
        cfg_file = tmp_path / "exp.py"
        cfg_file.write_text('imports = ["pkg_twice/heads_twice.py"]\nhead = dict(type="HeadImportedTwice")\n')
        cfg = load_config(str(cfg_file))
        assert type(build(cfg.head, HEADS)) is package_module.HeadImportedTwice
        assert "heads_twice" not in sys.modules  # not loaded a second time under its file name
    finally:
        HEADS._entries.pop("HeadImportedTwice", None)
        for name in ("pkg_twice", "pkg_twice.heads_twice", "heads_twice"):
            sys.modules.pop(name, None)
