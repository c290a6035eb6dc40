import math
import os

import pytest

from retdet.config import ConfigDict, apply_overrides, dump_config, load_config, parse_value

from .conftest import CONFIGS


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.fixture
def tree(tmp_path):
    """common/model.py, common/sched.py and an experiment that imports and overrides them."""
    write(tmp_path / "common" / "model.py", "model = dict(type='Net', depth=50, head=dict(type='Head', convs=4))\n")
    write(tmp_path / "common" / "sched.py", "train = dict(max_iter=100, lr=0.01, steps=[60, 80])\n")
    exp = write(
        tmp_path / "exp" / "r101.py",
        "from ..common.model import model\nfrom ..common.sched import train\n"
        "model.depth = 101\ntrain.steps = [70, 90]\n",
    )
    return tmp_path, exp


def test_composition_overrides_base_and_leaves_it_unchanged(tree):
    root, exp = tree
    cfg = load_config(exp)
    assert cfg.model.depth == 101 and cfg.model.head.convs == 4
    assert cfg.train.steps == [70, 90] and cfg.train.lr == 0.01
    base = load_config(str(root / "common" / "model.py"))
    assert base.model.depth == 50  # each load runs the base file afresh: no leaking edits
    assert set(cfg) == {"model", "train"}  # imported modules/functions are not config entries


def test_two_level_composition_and_module_import(tmp_path):
    write(tmp_path / "common" / "models" / "net.py", "model = dict(depth=50, width=64)\n")
    write(tmp_path / "a.py", "from .common.models.net import model\nmodel.depth = 101\n")
    write(tmp_path / "b.py", "from .a import model\nmodel.width = 128\n")
    write(tmp_path / "c.py", "from .common.models import net\nmodel = net.model\nmodel.depth = 18\n")
    assert load_config(str(tmp_path / "b.py")).model == {"depth": 101, "width": 128}
    assert load_config(str(tmp_path / "c.py")).model == {"depth": 18, "width": 64}


def test_bad_relative_import_names_the_file(tmp_path):
    cfg = write(tmp_path / "x.py", "from .nothing_here import model\n")
    with pytest.raises(ImportError, match="nothing_here"):
        load_config(cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(str(tmp_path / "missing.py"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4", 4), ("-2", -2), ("0.01", 0.01), ("1e-4", 1e-4), ("True", True), ("false", False),
        ("None", None), ("null", None), ("[1, 2]", [1, 2]), ("(800, 1333)", (800, 1333)),
        ("'GN'", "GN"), ("GN", "GN"), ("a/b.pth", "a/b.pth"), ("[0.5, 1.0, 2.0]", [0.5, 1.0, 2.0]),
        ("[dict(type='RandomFlip', prob=0.5)]", [{"type": "RandomFlip", "prob": 0.5}]), ("print(1)", "print(1)"),
    ],
)
def test_parse_value_types(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_overrides_each_type(tree):
    _, exp = tree
    cfg = load_config(exp, [
        "model.depth=152", "train.lr=0.02", "train.steps=[10, 20]", "model.head.convs=2",
        "+model.head.norm=None", "+model.head.extra=(1, 2)", "train.steps.0=5", "+train.amp=true",
        "model.type=OtherNet",
    ])
    assert cfg.model.depth == 152 and cfg.train.lr == 0.02
    assert cfg.train.steps == [5, 20]
    assert cfg.model.head == {"type": "Head", "convs": 2, "norm": None, "extra": (1, 2)}
    assert cfg.train.amp is True and cfg.model.type == "OtherNet"


def test_unknown_override_key_suggests(tree):
    _, exp = tree
    with pytest.raises(KeyError, match=r"unknown config key 'model.head.conv'.*Did you mean 'model.head.convs'"):
        load_config(exp, ["model.head.conv=3"])
    with pytest.raises(KeyError, match=r"Did you mean 'train'"):
        load_config(exp, ["trian.lr=0.1"])
    with pytest.raises(KeyError, match="list of 2 items"):
        load_config(exp, ["train.steps.5=1"])
    with pytest.raises(ValueError, match="key.path=value"):
        apply_overrides(ConfigDict(a=1), ["a"])


def test_dump_reload_equality(tree, tmp_path):
    _, exp = tree
    cfg = load_config(exp, ["+train.amp=dict(enabled=True)", "+train.tuple=(1,)", "+train.inf=float('inf')"])
    cfg.train["weird key"] = {"nested": [1, (2, 3)], 5: "int key"}
    cfg.train.inf = math.inf
    cfg.model["cls"] = ConfigDict  # classes and functions are written by their import path
    path = dump_config(cfg, str(tmp_path / "out" / "config.py"))
    again = load_config(path)
    assert again == cfg
    assert again.model["cls"] is ConfigDict
    assert dump_config(again, str(tmp_path / "out" / "config2.py"))
    assert open(path).read() == open(str(tmp_path / "out" / "config2.py")).read()


SHIPPED = sorted(os.path.relpath(os.path.join(d, f), CONFIGS) for d, _, fs in os.walk(CONFIGS) for f in fs
                 if f.endswith(".py") and "common" not in d)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    cfg = load_config(os.path.join(CONFIGS, name))
    required = {"model"} if name.startswith("compat") else {"model", "optimizer", "lr_scheduler", "train", "dataloader"}
    assert required <= set(cfg)
    assert load_config(dump_config(cfg, str(tmp_path / "c.py"))) == cfg


def test_r101_overrides_the_common_model():
    r50 = load_config(os.path.join(CONFIGS, "retinanet_R50_FPN_1x.py"))
    r101 = load_config(os.path.join(CONFIGS, "retinanet_R101_FPN_3x.py"))
    assert r50.model.backbone.depth == 50 and r101.model.backbone.depth == 101
    assert r101.train.max_iter == 270000 and r101.lr_scheduler.milestones == [210000, 250000]
    r101.model.backbone.depth = 50
    r101.train.output_dir = r50.train.output_dir
    r101.train.max_iter, r101.lr_scheduler.milestones = r50.train.max_iter, r50.lr_scheduler.milestones
    assert r101 == r50  # nothing else differs


def test_config_dict_attribute_access():
    c = ConfigDict(a=dict(b=[dict(c=1)]))
    assert c.a.b[0].c == 1
    c.a.d = {"e": 2}
    assert c.a.d.e == 2
    with pytest.raises(AttributeError, match="Did you mean 'a.d'|Did you mean 'd'"):
        c.a.dd


# ---- shipped configs by name, from any folder ------------------------------------------------------

def test_a_config_anywhere_extends_a_shipped_one_by_name(tmp_path):
    from retdet.config import list_shipped_configs, shipped_configs_dir

    assert os.path.samefile(shipped_configs_dir(), CONFIGS)  # a checkout: the one copy is configs/
    (tmp_path / "exp.py").write_text(
        "from retdet.configs.quickstart import dataloader, model, train\n"
        "from retdet.configs.common.models import retinanet\n"
        "model.head.num_convs = 1\n"
        "common_depth = retinanet.model.backbone.depth\n")
    cfg = load_config(str(tmp_path / "exp.py"))
    assert cfg.model.head.num_convs == 1 and cfg.model.backbone.depth == 18 and cfg.common_depth == 50
    # each import runs the shipped file afresh: the change above did not leak into it
    assert load_config("retdet.configs.quickstart").model.head.num_convs == 2
    assert load_config(os.path.join(CONFIGS, "quickstart.py")) == load_config("retdet.configs.quickstart")
    shipped = list_shipped_configs()
    assert "retdet.configs.quickstart" in shipped and "retdet.configs.common.models.retinanet" in shipped
    assert len(shipped) == sum(f.endswith(".py") for _, _, files in os.walk(CONFIGS) for f in files)


def test_an_unknown_shipped_name_lists_what_ships(tmp_path):
    with pytest.raises(ImportError, match=r"no shipped config 'retdet.configs.quikstart'. Did you mean "
                                          r"'retdet.configs.quickstart'\? retdet ships: retdet.configs.bccd_R18_FPN"):
        load_config("retdet.configs.quikstart")
    (tmp_path / "exp.py").write_text("from retdet.configs.commn.models.retinanet import model\n")
    with pytest.raises(ImportError, match=r"Did you mean 'retdet.configs.common.models.retinanet'"):
        load_config(str(tmp_path / "exp.py"))
