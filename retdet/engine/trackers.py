"""Experiment trackers as training hooks: MLflow and Weights & Biases (optional packages).

    train.hooks = [dict(type="MLflowTracker", tracking_uri="file:./output/mlruns", experiment="shapes")]
    train.hooks = [dict(type="WandbTracker", project="shapes", mode="offline")]

Both log the same things (:class:`TrackerHook`): the resolved config (flattened to parameters, and
the whole config as ``config.py``), every record written to metrics.json at its iteration (losses,
lr, the evaluation numbers ``bbox/AP``...), after each evaluation its per-class AP (as metrics
``per_class_AP/NAME`` and as a table) and its pictures (pr_curves.png, detections.png), and end the
run when training ends. Only rank 0 logs. A resumed training (``--resume``) continues the same
tracker run: its id is kept in ``output_dir/{mlflow,wandb}_run.json``.

What can be checked before the first step is checked when the hook is built (a missing package, an
unreachable tracking server, a bad W&B mode): a bad value fails at once, not hours into a run. A
failure while logging mid-run is a warning: metrics.json still has every value, and an outage of
the tracking server should not end a training run.

Install: ``pip install 'retdet[mlflow]'`` (mlflow-skinny) or ``pip install 'retdet[wandb]'``.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from retdet.registry import HOOKS
from retdet.utils import comm

from .hooks import HookBase

logger = logging.getLogger("retdet")

PICTURES = ("pr_curves.png", "detections.png")  # what an evaluation draws into its folder (coco_evaluator.py)
WANDB_MODES = ("online", "offline", "disabled")


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """{"model.backbone.depth": "18", ...}: nested mappings become dotted keys; every other value
    (lists of transforms, hooks...) is written as its ``repr`` -- what a tracker's parameter table shows."""
    flat: Dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = repr(value) if not isinstance(value, str) else value
    return flat


def plain_config(value: Any) -> Any:
    """``value`` with only JSON types (dicts, lists, str, numbers, bool, None): a W&B config. Classes
    and functions (``locate(...)`` in a config) become their names."""
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def per_class_ap(results: Mapping[str, Any]) -> List[Tuple[str, float]]:
    """[(class name, AP), ...] of an evaluation's ``results["per_class"]``, in the dataset's order."""
    return [(str(name), float(ap)) for name, ap in (results.get("per_class") or {}).items()]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def require(module: str, extra: str, package: str) -> Any:
    """Import ``module`` or say which pip extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this tracker needs {package}, which is not installed: pip install 'retdet[{extra}]' "
                          f"(or {package} alone)") from e


class TrackerHook(HookBase):
    """What every tracker does, at the right moments and on rank 0 only; a tracker implements the
    ``_start``/``_log_*``/``_finish`` methods for its service, and names ``run_file``: the file in
    ``output_dir`` that keeps its run's id for a resumed training."""

    run_file = "tracker_run.json"

    def __init__(self) -> None:
        self.active = False
        self.failures = 0

    # ---- the hook -------------------------------------------------------------------------------

    def before_train(self) -> None:
        if not comm.is_main_process():
            return
        trainer = self.trainer
        previous = self._read_run_file() if trainer.start_iter > 0 else None
        continued = self._start(previous)
        self.active = True
        self._write_run_file()
        # A continued run keeps the parameters it started with (MLflow's are write-once); the config
        # it resumed with is kept beside the first one.
        name = f"config_resumed_{trainer.start_iter:07d}.py" if continued else "config.py"
        if not continued:
            self._log_params(flatten_config(trainer.cfg))
        self._log_text(self._config_text(), name)
        logger.info("%s: logging to %s", type(self).__name__, self.describe())

    def after_metrics(self, iteration: int, values: Mapping[str, float]) -> None:
        if self.active:
            self._safely("metrics", self._log_metrics, {k: float(v) for k, v in values.items()}, iteration)

    def after_eval(self, results: Mapping[str, Any], eval_dir: str) -> None:
        if self.active:
            pictures = [os.path.join(eval_dir, p) for p in PICTURES if os.path.exists(os.path.join(eval_dir, p))]
            self._safely("evaluation", self._log_eval, results, pictures, self.trainer.iter)

    def after_train(self) -> None:
        if self.active:
            self.active = False
            self._finish(ok=True)
            if self.failures:
                logger.warning("%s: %d logging call(s) failed during training (see the warnings above); "
                               "metrics.json has every value", type(self).__name__, self.failures)

    # ---- shared details -------------------------------------------------------------------------

    def _safely(self, what: str, fn, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # the tracking service failed: training goes on, metrics.json has the values
            self.failures += 1
            if self.failures <= 3 or self.failures % 100 == 0:
                logger.warning("%s: logging %s at iteration %d failed (%d so far): %s: %s", type(self).__name__,
                               what, self.trainer.iter, self.failures, type(e).__name__, e)

    def _config_text(self) -> str:
        from retdet.config import config_to_python

        try:
            return config_to_python(self.trainer.cfg)
        except TypeError as e:  # a value that has no Python source: its flattened form is still logged
            return f"# the config could not be written as a Python file: {e}\n"

    def _run_file_path(self) -> str:
        return os.path.join(self.trainer.output_dir, self.run_file)

    def _read_run_file(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self._run_file_path()) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _write_run_file(self) -> None:
        tmp = self._run_file_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._run_record(), f)
        os.replace(tmp, self._run_file_path())

    # ---- what a tracker implements --------------------------------------------------------------

    def _start(self, previous: Optional[Mapping[str, Any]]) -> bool:
        """Start a run, or continue ``previous`` (the run file's record, on a resume) when it can be
        found; True when it continues one."""
        raise NotImplementedError

    def _run_record(self) -> Dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _log_params(self, params: Mapping[str, str]) -> None:
        raise NotImplementedError

    def _log_text(self, text: str, name: str) -> None:
        raise NotImplementedError

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def _log_eval(self, results: Mapping[str, Any], pictures: Sequence[str], step: int) -> None:
        raise NotImplementedError

    def _finish(self, ok: bool) -> None:
        raise NotImplementedError


# ---- MLflow -------------------------------------------------------------------------------------

def _metric_key(name: str) -> str:
    """MLflow's metric names take letters, digits and ``_ - . / : space`` only."""
    return re.sub(r"[^\w\-./: ]", "_", name)


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError naming ``uri`` unless an HTTP server answers there within ``timeout``
    seconds (any answer counts, an authentication error included). MLflow's own client retries a
    refused connection for minutes before it gives up."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # an HTTP answer: a server is there
    except (urllib.error.URLError, OSError, socket.timeout) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLError):
            return  # a TLS answer (a certificate MLflow may be told to accept): a server is there
        raise ConnectionError(
            f"MLflowTracker: the tracking server {uri} is unreachable ({reason}). Start it (e.g. `mlflow server "
            f"--port PORT`), fix tracking_uri, or log to a local store: tracking_uri='file:./output/mlruns'") from None


@HOOKS.register()
class MLflowTracker(TrackerHook):
    """Logs the training to MLflow through its client (``mlflow.tracking.MlflowClient``), without
    touching MLflow's global active run.

    Args:
        tracking_uri: where runs go: a folder or ``file:`` URI (MLflow's file store, no server), a
            tracking server ``http(s)://host:port``, or a database (``sqlite:///mlflow.db``, which
            needs sqlalchemy and alembic, or the full ``mlflow`` package). None: MLflow's default
            (``$MLFLOW_TRACKING_URI``, else ``./mlruns``).
        experiment: the experiment's name, created when missing. None: ``$MLFLOW_EXPERIMENT_NAME``,
            else MLflow's "Default".
        run_name: None: the name of the output folder.
        tags: extra run tags.
    """

    run_file = "mlflow_run.json"

    def __init__(self, *, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                 run_name: Optional[str] = None, tags: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        mlflow = require("mlflow", "mlflow", "mlflow-skinny")
        self.tracking_uri = str(tracking_uri) if tracking_uri else mlflow.get_tracking_uri()
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        self.run_name, self.tags = run_name, dict(tags or {})
        self.client: Any = None
        self.run_id: Optional[str] = None
        scheme = urllib.parse.urlparse(self.tracking_uri).scheme
        if scheme in ("", "file"):
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless this is set; a
            # run folder with no server and no database is what the file store is for, so opt in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        elif scheme in ("sqlite", "postgresql", "mysql", "mssql") or "+" in scheme:
            require("sqlalchemy", "mlflow", "sqlalchemy and alembic (a database store; or the full mlflow package)")
            require("alembic", "mlflow", "sqlalchemy and alembic (a database store; or the full mlflow package)")
        elif scheme in ("http", "https") and comm.is_main_process():
            check_tracking_server(self.tracking_uri)

    def _start(self, previous: Optional[Mapping[str, Any]]) -> bool:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if previous and previous.get("tracking_uri") == self.tracking_uri and self._reopen(previous.get("run_id")):
            return True
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
        name = self.run_name or os.path.basename(os.path.abspath(self.trainer.output_dir))
        run = self.client.create_run(exp_id, run_name=name, tags={"retdet.output_dir": os.path.abspath(
            self.trainer.output_dir), **self.tags})
        self.run_id = run.info.run_id
        self._end_at_exit()
        return False

    def _reopen(self, run_id: Optional[str]) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id) if run_id else None
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            logger.warning("MLflowTracker: the run %s of %s is not in %s any more: starting a new run", run_id,
                           self._run_file_path(), self.tracking_uri)
            return False
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self._end_at_exit()
        return True

    def _end_at_exit(self) -> None:
        # The trainer calls after_train only when training ends normally: a preempted or failed run
        # would show as RUNNING forever. At exit it is marked KILLED (a --resume reopens it).
        atexit.register(self._finish, ok=False)

    def _run_record(self) -> Dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "experiment": self.experiment}

    def describe(self) -> str:
        return f"{self.tracking_uri}, experiment {self.experiment!r}, run {self.run_id}"

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        # a long value (a list of transforms) is cut to MLflow's limit; config.py has it whole
        items = [Param(k, v if len(v) <= MAX_PARAM_VAL_LENGTH else v[:MAX_PARAM_VAL_LENGTH - 3] + "...")
                 for k, v in params.items()]
        for batch in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=batch)

    def _log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [Metric(_metric_key(k), v, now, step) for k, v in values.items()]
        for batch in chunks(metrics, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch)

    def _log_eval(self, results: Mapping[str, Any], pictures: Sequence[str], step: int) -> None:
        rows = per_class_ap(results)
        self._log_metrics({f"per_class_AP/{name}": ap for name, ap in rows}, step)  # NaN: a class with no boxes
        folder = f"eval/iter_{step:07d}"
        self.client.log_dict(self.run_id, {"iteration": step, "bbox": dict(results.get("bbox", {})),
                                           "per_class_AP": dict(rows)}, f"{folder}/ap.json")
        for path in pictures:
            self.client.log_artifact(self.run_id, path, folder)

    def _finish(self, ok: bool) -> None:
        if self.run_id is None:
            return
        atexit.unregister(self._finish)
        run_id, self.run_id = self.run_id, None
        self.client.set_terminated(run_id, status="FINISHED" if ok else "KILLED")


# ---- Weights & Biases ---------------------------------------------------------------------------

@HOOKS.register()
class WandbTracker(TrackerHook):
    """Logs the training to Weights & Biases (``wandb.init``; ``mode="offline"`` writes the run to
    ``dir`` only, for ``wandb sync`` later).

    Args:
        project: the W&B project. None: ``$WANDB_PROJECT``, else W&B's default.
        entity: the team or user. None: W&B's default.
        name: the run's display name. None: the name of the output folder.
        mode: "online", "offline" or "disabled"; None: ``$WANDB_MODE``, else online.
        dir: where W&B writes its ``wandb/`` folder. None: the run's output folder.
        group, tags: W&B's run grouping and tags.
    """

    run_file = "wandb_run.json"

    def __init__(self, *, project: Optional[str] = None, entity: Optional[str] = None, name: Optional[str] = None,
                 mode: Optional[str] = None, dir: Optional[str] = None, group: Optional[str] = None,
                 tags: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        if mode is not None and mode not in WANDB_MODES:
            raise ValueError(f"WandbTracker: mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        self.wandb = require("wandb", "wandb", "wandb")
        self.project, self.entity, self.name, self.mode, self.dir = project, entity, name, mode, dir
        self.group, self.tags = group, list(tags) if tags else None
        self.run: Any = None
        self.env_mode: Optional[str] = None

    def _start(self, previous: Optional[Mapping[str, Any]]) -> bool:
        output_dir = self.trainer.output_dir
        folder = self.dir or output_dir
        os.makedirs(folder, exist_ok=True)
        run_id = previous.get("run_id") if previous and previous.get("project") == self.project else None
        self.env_mode = os.environ.get("WANDB_MODE")
        if self.mode in ("offline", "disabled"):
            # wandb sends its own telemetry by the process-wide mode ($WANDB_MODE), not the run's: an
            # offline run would still contact W&B's server (wandb 0.31). Restored by _finish.
            os.environ["WANDB_MODE"] = self.mode
        self.run = self.wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, dir=folder, group=self.group, tags=self.tags,
            name=self.name or os.path.basename(os.path.abspath(output_dir)), id=run_id,
            resume="allow" if run_id else None, config=None if run_id else plain_config(self.trainer.cfg))
        return run_id is not None and self.run.id == run_id

    def _run_record(self) -> Dict[str, Any]:
        return {"run_id": self.run.id, "project": self.project, "mode": self.mode}

    def describe(self) -> str:
        return f"W&B run {self.run.id} ({self.run.settings.mode}) in {self.run.dir}"

    def _log_params(self, params: Mapping[str, str]) -> None:
        pass  # the nested config went to wandb.init, which shows it as dotted keys

    def _log_text(self, text: str, name: str) -> None:
        if self.run.disabled:  # no folder: nothing is written
            return
        # files in the run's folder are uploaded with it (at once online, by `wandb sync` offline)
        with open(os.path.join(self.run.dir, name), "w", encoding="utf-8") as f:
            f.write(text)

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        # W&B keeps only increasing steps: a record at a step below the run's last one (what a killed run
        # logged past its checkpoint, logged again after --resume) is dropped with a warning by W&B
        self.run.log(dict(values), step=step)

    def _log_eval(self, results: Mapping[str, Any], pictures: Sequence[str], step: int) -> None:
        rows = per_class_ap(results)
        values: Dict[str, Any] = {f"per_class_AP/{name}": ap for name, ap in rows}
        values["eval/per_class_AP"] = self.wandb.Table(columns=["class", "AP"], data=[list(r) for r in rows])
        for path in pictures:
            values[f"eval/{os.path.splitext(os.path.basename(path))[0]}"] = self.wandb.Image(path)
        self.run.log(values, step=step)

    def _finish(self, ok: bool) -> None:
        # a run that ends otherwise (a preemption, an error) is finished by wandb's own exit handler
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=0 if ok else 1)
            if self.env_mode is None:
                os.environ.pop("WANDB_MODE", None)
            else:
                os.environ["WANDB_MODE"] = self.env_mode
