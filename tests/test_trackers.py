"""Experiment trackers (retdet/engine/trackers.py): real MLflow and W&B runs, written by a short
training and read back with each tracker's own format; the errors that come before the first step.

Nothing here reaches the network or the home folder: MLflow writes a file store under tmp_path, W&B
runs offline with all its folders under tmp_path, and the unreachable server is a closed port on
the loopback."""
import glob
import json
import os
import socket
import struct
import sys
import time
from types import SimpleNamespace

import pytest

from retdet.config import config_to_python, load_config
from retdet.data.synthetic import generate_synthetic_shapes
from retdet.engine import Trainer
from retdet.engine.trackers import MLflowTracker
from retdet.registry import HOOKS, RegistryError, build

from .helpers.training import TINY, USER_HOOKS, losses_by_iteration, train_net

SHORT = ["train.checkpoint_period=0", "train.log_period=1"]


def isolate_trackers(mp, folder):
    """Environment for a tracker under test: W&B offline with its config, cache and data folders in
    ``folder``, no credentials; no tracking URI or file-store opt-in inherited from the shell (what
    the hook sets is undone afterwards: ``mp`` records every variable it touches)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE", "WANDB_API_KEY",
                 "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME"):
        mp.setenv(name, "")
        mp.delenv(name)
    for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        os.makedirs(os.path.join(folder, name.lower()), exist_ok=True)
        mp.setenv(f"WANDB_{name}", os.path.join(folder, name.lower()))
    mp.setenv("WANDB_MODE", "offline")
    # the usage statistics both packages send unless told not to (MLflow reads this when imported)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.setenv("DO_NOT_TRACK", "true")
    mp.setenv("WANDB_ERROR_REPORTING", "false")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_DISABLE_GIT", "true")
    mp.setenv("WANDB_DISABLE_CODE", "true")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    isolate_trackers(monkeypatch, str(tmp_path / "wandb_env"))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_wandb_records(path):
    """The protobuf records of a W&B run file (``run-ID.wandb``), in order. Its format is LevelDB's
    log: a 7-byte file header, then 32 KiB blocks of records, each a 7-byte header (CRC, length,
    kind: 1 whole, 2 first, 3 middle, 4 last piece) and its data. wandb 0.31 ships no reader."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zeros: the rest of the block is padding
            pos += left
            continue
        piece, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_history(records):
    """[{key: value}] of the history records (what run.log wrote, with W&B's ``_step``)."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return rows


def fake_trainer(folder):
    """What a tracker reads of the Trainer, for the hook's methods called one by one."""
    return SimpleNamespace(cfg=load_config(TINY), output_dir=str(folder), start_iter=0, iter=0)


# ---- one real training with both trackers, read back by the tests below ---------------------------------

@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """3 iterations of the tiny training with both trackers and an evaluation at the end, on 4 images
    of its own (a second's evaluation) and with every score kept, so that it draws its pictures."""
    root = tmp_path_factory.mktemp("tracked")
    json_file = generate_synthetic_shapes(str(root / "eval_set"), num_images=4, seed=11)
    out, store = str(root / "run"), str(root / "mlruns")
    hooks = (f"[dict(type='MLflowTracker', tracking_uri='file:{store}', experiment='tiny', run_name='r1'), "
             f"dict(type='WandbTracker', project='tiny', mode='offline', dir='{root / 'wb'}')]")
    cfg = load_config(TINY, [
        *SHORT, "train.max_iter=3", "train.eval_at_end=True", f"+train.hooks={hooks}",
        f"+dataloader.register=[dict(name='tracker_eval_t', json_file='{json_file}', "
        f"image_root='{root / 'eval_set' / 'images'}')]",
        "dataloader.test.dataset.names=['tracker_eval_t']", "model.postprocess.score_threshold=0.0"])
    with pytest.MonkeyPatch.context() as mp:
        isolate_trackers(mp, str(root / "wandb_env"))  # before MLflow is imported (it reads some when imported)
        pytest.importorskip("mlflow")
        pytest.importorskip("wandb")
        results = Trainer(cfg, output_dir=out).train()
    assert os.path.exists(os.path.join(out, "eval", "pr_curves.png"))
    assert len(set(results["per_class"].values())) > 1  # numbers that tell the classes apart
    return SimpleNamespace(cfg=cfg, out=out, store=f"file:{store}", wandb_dir=str(root / "wb"), results=results)


def mlflow_run(run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=run.store)
    record = json.load(open(os.path.join(run.out, "mlflow_run.json")))
    return client, client.get_run(record["run_id"])


def test_mlflow_run_has_the_config_metrics_and_evaluation(tracked_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the file store back
    client, run = mlflow_run(tracked_run)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    params = run.data.params
    assert params["train.max_iter"] == "3" and params["model.backbone.depth"] == "18"
    assert params["optimizer.type"] == "SGD" and params["dataloader.test.dataset.names"] == "['tracker_eval_t']"
    # every loss of metrics.json, at its iteration, exactly
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "total_loss")}
    assert logged == losses_by_iteration(tracked_run.out) and sorted(logged) == [0, 1, 2]
    lr = [m.step for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lr == [0, 1, 2]
    # the evaluation: COCO numbers (through metrics.json) and per-class AP, at the last iteration
    ap = client.get_metric_history(run.info.run_id, "bbox/AP")
    assert [(m.step, m.value) for m in ap] == [(2, tracked_run.results["bbox"]["AP"])]
    for name, value in tracked_run.results["per_class"].items():
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"per_class_AP/{name}")] \
            == [(2, value)]
    # the artifacts: the whole config and the evaluation's table and pictures, byte for byte
    assert [a.path for a in client.list_artifacts(run.info.run_id, "eval")] == ["eval/iter_0000002"]
    folder = client.download_artifacts(run.info.run_id, "", str(tmp_path))
    assert open(os.path.join(folder, "config.py")).read() == config_to_python(tracked_run.cfg)
    table = json.load(open(os.path.join(folder, "eval", "iter_0000002", "ap.json")))
    assert table["per_class_AP"] == tracked_run.results["per_class"] and table["iteration"] == 2
    for picture in ("pr_curves.png", "detections.png"):
        got = open(os.path.join(folder, "eval", "iter_0000002", picture), "rb").read()
        assert got[:8] == b"\x89PNG\r\n\x1a\n"
        assert got == open(os.path.join(tracked_run.out, "eval", picture), "rb").read()


def test_wandb_offline_run_has_the_config_metrics_and_evaluation(tracked_run):
    record = json.load(open(os.path.join(tracked_run.out, "wandb_run.json")))
    (run_dir,) = glob.glob(os.path.join(tracked_run.wandb_dir, "wandb", f"offline-run-*-{record['run_id']}"))
    records = read_wandb_records(os.path.join(run_dir, f"run-{record['run_id']}.wandb"))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0  # finished by after_train
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "tiny" and run.display_name == "run"  # the output folder's name
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["train"]["max_iter"] == 3 and config["model"]["backbone"]["depth"] == 18
    history = wandb_history(records)
    losses = {row["_step"]: row["total_loss"] for row in history if "total_loss" in row}
    assert losses == losses_by_iteration(tracked_run.out)
    last = [row for row in history if row["_step"] == 2]
    assert len(last) == 1  # W&B merges what is logged at one step: losses, evaluation, pictures
    last = last[0]
    assert last["bbox/AP"] == tracked_run.results["bbox"]["AP"]
    for name, value in tracked_run.results["per_class"].items():
        assert last[f"per_class_AP/{name}"] == value
    assert last["eval/per_class_AP/_type"] == "table-file" and last["eval/pr_curves/_type"] == "image-file"
    files = os.path.join(run_dir, "files")
    table = json.load(open(os.path.join(files, last["eval/per_class_AP/path"])))
    assert dict(table["data"]) == tracked_run.results["per_class"]
    for picture in ("pr_curves", "detections"):
        path = os.path.join(files, last[f"eval/{picture}/path"])
        assert open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert open(os.path.join(files, "config.py")).read() == config_to_python(tracked_run.cfg)


# ---- resume: the same tracker run continues --------------------------------------------------------------

def test_resume_continues_the_same_runs(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    store, out = f"file:{tmp_path / 'mlruns'}", str(tmp_path / "run")
    hooks = (f"+train.hooks=[dict(type='MLflowTracker', tracking_uri='{store}'), "
             f"dict(type='WandbTracker', project='tiny', mode='offline', dir='{tmp_path / 'wb'}')]")
    Trainer(load_config(TINY, [*SHORT, "train.max_iter=1", hooks]), output_dir=out).train()
    first = json.load(open(os.path.join(out, "mlflow_run.json")))["run_id"]
    first_wandb = json.load(open(os.path.join(out, "wandb_run.json")))["run_id"]
    trainer = Trainer(load_config(TINY, [*SHORT, "train.max_iter=2", hooks]), output_dir=out, resume=True)
    assert trainer.start_iter == 1
    trainer.train()
    assert json.load(open(os.path.join(out, "mlflow_run.json")))["run_id"] == first
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    assert [r.info.run_id for r in client.search_runs(["0"])] == [first]  # no second run
    run = client.get_run(first)
    assert run.info.status == "FINISHED" and run.data.params["train.max_iter"] == "1"  # write-once params
    history = {m.step: m.value for m in client.get_metric_history(first, "total_loss")}
    assert history == losses_by_iteration(out) and sorted(history) == [0, 1]
    names = {a.path for a in client.list_artifacts(first)}
    assert {"config.py", "config_resumed_0000001.py"} <= names
    # W&B (offline): the resumed part is written under the same run id
    assert json.load(open(os.path.join(out, "wandb_run.json")))["run_id"] == first_wandb
    runs = sorted(glob.glob(str(tmp_path / "wb" / "wandb" / f"offline-run-*-{first_wandb}*")))
    assert len(runs) == 2
    resumed = wandb_history(read_wandb_records(os.path.join(runs[-1], f"run-{first_wandb}.wandb")))
    assert [row["_step"] for row in resumed if "total_loss" in row] == [1]


@pytest.mark.slow
def test_train_net_knows_the_trackers_and_a_failed_run_ends_killed(tmp_path, monkeypatch):
    """tools/train_net.py in a fresh process (no --import for the trackers: retdet registers them),
    with a NaN loss at iteration 2: the MLflow run is ended KILLED at exit, not left RUNNING."""
    pytest.importorskip("mlflow")
    store, out = f"file:{tmp_path / 'mlruns'}", str(tmp_path / "run")
    hooks = f"[dict(type='InjectNaN', iteration=2), dict(type='MLflowTracker', tracking_uri='{store}')]"
    result = train_net("--config", TINY, "--output-dir", out, "--import", USER_HOOKS, *SHORT, "train.max_iter=4",
                       f"+train.hooks={hooks}", expect_ok=False)
    assert result.returncode != 0 and "NonFiniteLossError" in result, result[-3000:]
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the file store back
    client = MlflowClient(tracking_uri=store)
    run_id = json.load(open(os.path.join(out, "mlflow_run.json")))["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "total_loss")] == [0, 1]


# ---- errors before the first step --------------------------------------------------------------------------

def test_unknown_tracker_type_lists_the_trackers(tmp_path):
    cfg = load_config(TINY, [*SHORT, "train.max_iter=1", "+train.hooks=[dict(type='MLFlowTraker')]"])
    with pytest.raises(RegistryError) as err:
        Trainer(cfg, output_dir=str(tmp_path))
    msg = str(err.value)
    assert "'MLFlowTraker' is not registered in hooks" in msg and "Did you mean: 'MLflowTracker'" in msg
    assert "MLflowTracker" in msg.split("Registered hooks:")[1] and "WandbTracker" in msg.split("Registered hooks:")[1]
    assert not os.path.exists(tmp_path / "metrics.json")


def test_unreachable_tracking_server_is_a_quick_clear_error(tmp_path):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = load_config(TINY, [*SHORT, "train.max_iter=1",
                             f"+train.hooks=[dict(type='MLflowTracker', tracking_uri='{uri}')]"])
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"the tracking server {uri} is unreachable") as err:
        Trainer(cfg, output_dir=str(tmp_path))
    assert "file:./output/mlruns" in str(err.value)  # what to do instead
    assert time.perf_counter() - start < 30  # the Trainer's own set-up included; MLflow's retries take minutes
    assert not os.path.exists(tmp_path / "metrics.json")


def test_tracking_server_that_answers_passes_the_check():
    pytest.importorskip("mlflow")
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hook = MLflowTracker(tracking_uri=f"http://127.0.0.1:{server.server_address[1]}")
        assert hook.tracking_uri.startswith("http://127.0.0.1:")
    finally:
        server.shutdown()
        server.server_close()


def test_bad_wandb_mode_is_an_error():
    with pytest.raises(ValueError, match=r"mode must be one of online, offline, disabled, got 'ofline'"):
        build(dict(type="WandbTracker", mode="ofline"), HOOKS)


@pytest.mark.parametrize("tracker, module, extra", [("MLflowTracker", "mlflow", "mlflow"),
                                                    ("WandbTracker", "wandb", "wandb")])
def test_missing_package_names_the_extra(monkeypatch, tracker, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=rf"pip install 'retdet\[{extra}\]'"):
        build(dict(type=tracker), HOOKS)


def test_sqlite_store_without_sqlalchemy_names_what_to_install(monkeypatch, tmp_path):
    pytest.importorskip("mlflow")
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ImportError, match=r"needs sqlalchemy and alembic"):
        MLflowTracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


# ---- only rank 0 logs; W&B disabled; failures mid-run ----------------------------------------------------

def test_other_ranks_log_nothing(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from retdet.engine import trackers

    monkeypatch.setattr(trackers.comm, "is_main_process", lambda: False)
    store = tmp_path / "mlruns"
    hook = MLflowTracker(tracking_uri=f"file:{store}")
    hook.trainer = fake_trainer(tmp_path)
    hook.before_train()
    hook.after_train()
    assert not store.exists() and not (tmp_path / "mlflow_run.json").exists()


def test_wandb_disabled_mode_runs_through_and_writes_nothing(tmp_path):
    pytest.importorskip("wandb")
    hook = build(dict(type="WandbTracker", mode="disabled", dir=str(tmp_path / "wb")), HOOKS)
    hook.trainer = fake_trainer(tmp_path)
    hook.before_train()
    hook.after_metrics(0, {"total_loss": 1.0})
    hook.after_eval({"bbox": {"AP": 1.0}, "per_class": {"circle": 1.0}}, str(tmp_path))
    hook.after_train()
    assert hook.failures == 0 and not (tmp_path / "wb" / "wandb").exists()


def test_a_logging_failure_mid_run_is_a_warning(tmp_path, retdet_log):
    pytest.importorskip("mlflow")
    hook = MLflowTracker(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    hook.trainer = fake_trainer(tmp_path)
    hook.before_train()

    def outage(*args, **kwargs):
        raise ConnectionError("the server went away")

    log_batch, hook.client.log_batch = hook.client.log_batch, outage
    hook.trainer.iter = 7
    hook.after_metrics(7, {"total_loss": 1.0})  # does not raise: training goes on
    hook.client.log_batch = log_batch
    hook.after_metrics(8, {"total_loss": 0.5})
    hook.after_train()
    assert hook.failures == 1
    assert any("logging metrics at iteration 7 failed (1 so far): ConnectionError: the server went away" in m
               for m in retdet_log)
    assert any("1 logging call(s) failed during training" in m for m in retdet_log)
    from mlflow.tracking import MlflowClient

    run_id = json.load(open(tmp_path / "mlflow_run.json"))["run_id"]
    history = MlflowClient(f"file:{tmp_path / 'mlruns'}").get_metric_history(run_id, "total_loss")
    assert [(m.step, m.value) for m in history] == [(8, 0.5)]
