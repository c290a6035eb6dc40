import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
import traceback
from typing import Optional

import pytest

# Nothing in the tests may contact the network: the trackers' own usage statistics are off for this
# process and every tool it starts (tests/test_docs.py runs the guides' tracker commands).
for _name, _value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "true"), ("WANDB_ERROR_REPORTING", "false"),
                      ("WANDB_DISABLE_GIT", "true"), ("WANDB_DISABLE_CODE", "true")):
    os.environ.setdefault(_name, _value)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# Tests must not see a user's own registrations: each test that registers uses a fresh registry or
# removes what it added (see the `scratch_registry` fixture).


@pytest.fixture
def scratch_registry():
    """A throw-away registry, removed from the global list afterwards."""
    from retdet.registry import ALL_REGISTRIES, Registry

    made = []

    def make(name):
        reg = Registry(name)
        made.append(name)
        return reg

    yield make
    for name in made:
        ALL_REGISTRIES.pop(name, None)


@pytest.fixture(scope="session")
def uninterrupted_runs(tmp_path_factory):
    """``uninterrupted_runs(workers)``: the losses of tests/helpers/training.py's preemption runs,
    uninterrupted, trained once per session (see UninterruptedRuns)."""
    from .helpers.training import UninterruptedRuns

    return UninterruptedRuns(str(tmp_path_factory.mktemp("uninterrupted")))


@pytest.fixture
def retdet_log():
    """The messages logged to the "retdet" logger during the test (it may not propagate to root)."""
    import logging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler, log = Collect(level=logging.DEBUG), logging.getLogger("retdet")
    log.addHandler(handler)
    yield messages
    log.removeHandler(handler)


# ---- running the command-line tools ---------------------------------------------------------------

class ToolResult(str):
    """A tool's whole output (stdout then stderr) as a str, with ``stdout``, ``stderr`` and ``returncode``
    as a subprocess.CompletedProcess has them. In-process, the "retdet" log goes to stdout, as the
    tools' console handler sends it."""

    def __new__(cls, stdout: str, stderr: str, returncode: Optional[int]):
        self = super().__new__(cls, stdout + stderr)
        self.stdout, self.stderr, self.returncode = stdout, stderr, returncode
        return self


def run_tool(tool, *args, ok=True, subprocess_=False, timeout=600, env=None):
    """Run ``tools/NAME.py`` (``tool`` is that path or NAME) with ``args``; returns its ToolResult.

    In-process by default: the tool's ``main(argv)`` is called here, which spares a Python start and
    torch import per call. ``subprocess_=True`` runs ``python tools/NAME.py`` in a fresh interpreter,
    for the tests where a separate process is the point (signals, kills, spawned workers, a clean
    import state). ``ok``: the exit status must be 0 (True), non-zero (False), or is not checked (None).
    """
    name = os.path.splitext(os.path.basename(tool))[0]
    argv = [str(a) for a in args]
    if subprocess_:
        out = subprocess.run([sys.executable, os.path.join("tools", name + ".py"), *argv], cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
        result = ToolResult(out.stdout, out.stderr, out.returncode)
    else:
        assert env is None, "env applies to a subprocess"
        result = _run_in_process(name, argv)
    if ok is not None:
        assert (result.returncode == 0) == ok, f"tools/{name}.py {' '.join(argv)} exited {result.returncode}:\n" \
                                               f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
    return result


def _run_in_process(name, argv):
    module = importlib.import_module(f"retdet.tools.{name}")
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stdout)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    log = logging.getLogger("retdet")
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    cwd = os.getcwd()
    os.chdir(ROOT)  # as `python tools/NAME.py` from the repository root
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = module.main(argv)
            except SystemExit as e:  # argparse errors, and the tools' own exits with a message
                code = e.code
                if isinstance(code, str):
                    print(code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001  (the traceback is the output, as from a subprocess)
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(cwd)
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
    return ToolResult(stdout.getvalue(), stderr.getvalue(), code or 0)
