"""The tiny training setup (tests/configs/tiny_train.py: seconds per run) and reading its runs back."""
import json
import os

from ..conftest import ROOT, run_tool

TINY = os.path.join(ROOT, "tests", "configs", "tiny_train.py")
HELPERS = os.path.dirname(os.path.abspath(__file__))
USER_HOOKS = os.path.join(HELPERS, "user_hooks.py")
USER_COMPRESSION = os.path.join(HELPERS, "user_compression.py")


def train_net(*args, expect_ok=True, in_process=False, timeout=600):
    """tools/train_net.py with ``args``: in a fresh process by default (these runs are killed, signalled,
    spawn workers or must start from a clean import state), in-process with ``in_process=True``."""
    return run_tool("train_net", *args, ok=True if expect_ok else None, subprocess_=not in_process, timeout=timeout)


def losses_by_iteration(output_dir):
    """{iteration: total_loss} from a run's metrics.json."""
    rows = [json.loads(line) for line in open(os.path.join(output_dir, "metrics.json"))]
    return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}


def logged_iterations(output_dir):
    """The iterations in a (possibly running) run's metrics.json; a line being written is skipped."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        return []
    rows = []
    for line in open(path):
        try:
            rows.append(json.loads(line)["iteration"])
        except (ValueError, KeyError):
            pass  # a line being written
    return rows


# Runs that a preemption signal interrupts (tests/test_preemption.py, tests/test_slurm.py). One image
# size: 2 workers then match one process closely (see test_engine's test_two_gloo_workers_match_one_process).
SAME_SIZE = "dataloader.train.transforms=[dict(type='ScaleJitterCrop', output_size=(128, 128), scale_range=(1.0, 1.0))]"
MAX_ITER = 24
ARGS = ["--config", TINY, f"train.max_iter={MAX_ITER}", "train.checkpoint_period=0", SAME_SIZE]


class UninterruptedRuns:
    """{iteration: loss} of uninterrupted runs of ARGS with 1 or 2 workers, each trained once per
    test session (the preemption and Slurm tests compare their resumed runs with the same ones)."""

    def __init__(self, folder):
        self.folder, self.losses = folder, {}

    def __call__(self, workers: int):
        if workers not in self.losses:
            run = os.path.join(self.folder, f"uninterrupted_{workers}")
            # one process runs in-process; two spawn their workers from the launcher either way
            train_net(*ARGS, "--output-dir", run, "--num-gpus", str(workers), in_process=workers == 1)
            self.losses[workers] = losses_by_iteration(run)
        return self.losses[workers]
