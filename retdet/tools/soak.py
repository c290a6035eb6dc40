"""Soak check: a long training run with faults in it, showing that nothing leaks and nothing is lost.

    retdet-soak --output output/soak                  # 3000 iterations x 2 runs: ~30 min on 2 cores
    retdet-soak --output output/soak --iters 600      # a short look
    retdet-soak --output output/soak --report-only    # re-read a finished soak
    (in a checkout: python tools/soak.py ...)

Two runs of the same schedule (the quickstart config on the synthetic set, periodic evaluation and
checkpoints), each in three phases: one process for iterations [0, a), two gloo workers for [a, b),
one process for [b, iters). The "reference" run goes through each phase uninterrupted; the
"faulted" run is killed with SIGKILL at a random moment of phases 1 and 3 and continued with
--resume each time. Every --sample iterations the trainer records its resident memory, its data
workers' and its open file descriptors (the ResourceMonitor hook).

The report has one row per training process (a phase, or the part of it after a resume). A process
settles after its first evaluation (which loads pycocotools, the plotting code and its caches once):
"settled" is the first sample after that evaluation, and a leak is growth from there to the end of
the process (resident memory more than --max-rss-growth-mb, or any more open descriptors). The exit
status is 1 on such growth or when the two runs' final weights differ. --report-only re-reads a
finished soak folder.
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

from retdet.engine.defaults import tool_argument_parser
from retdet.utils.logger import format_table


def parse_args(argv=None):
    parser = tool_argument_parser(__doc__, config="optional", config_default="retdet.configs.quickstart")
    parser.add_argument("--output", required=True, help="folder for the two runs and report.json")
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--two-worker", type=float, nargs=2, default=(0.4, 0.6), metavar=("START", "END"),
                        help="the 2-worker phase, as fractions of --iters")
    parser.add_argument("--checkpoint-period", type=int, default=250)
    parser.add_argument("--eval-period", type=int, default=500)
    parser.add_argument("--sample", type=int, default=50, help="record memory and descriptors every N iterations")
    parser.add_argument("--seed", type=int, default=0, help="where in phases 1 and 3 the kills fall")
    parser.add_argument("--max-rss-growth-mb", type=float, default=40.0,
                        help="allowed growth of resident memory within a phase, after its first sample")
    parser.add_argument("--report-only", action="store_true", help="only re-read the runs in --output")
    return parser.parse_args(argv)


def metrics(run_dir):
    rows = []
    path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(path):
        for line in open(path):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by a kill
    return rows


def last_iteration(run_dir):
    return max((r["iteration"] for r in metrics(run_dir) if "total_loss" in r), default=-1)


def run_phase(args, run_dir, stop_at, workers, kill_at=None):
    """Train until iteration ``stop_at`` (inclusive) with --resume; SIGKILL once ``kill_at`` is
    logged, then continue. Returns (wall seconds, number of kills)."""
    hooks = f"dict(type='StopAtIteration', iteration={stop_at}), dict(type='ResourceMonitor', period={args.sample})"
    cmd = [sys.executable, "-m", "retdet.tools.train_net", "--config", args.config,
           *(f"--import={m}" for m in args.imports), "--output-dir", run_dir, "--resume", "--num-gpus", str(workers),
           f"train.max_iter={args.iters}",
           f"train.checkpoint_period={args.checkpoint_period}", f"train.eval_period={args.eval_period}",
           "train.log_period=10", "train.keep_last=2", f"+train.hooks=[{hooks}]", *args.opts]
    start, kills = time.time(), 0
    log = open(os.path.join(run_dir + ".log"), "a")
    while True:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if kill_at is not None and last_iteration(run_dir) >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                print(f"  {os.path.basename(run_dir)}: SIGKILL after iteration {last_iteration(run_dir)}; resuming",
                      flush=True)
                kills, kill_at = kills + 1, None
                break
            time.sleep(0.2)
        else:
            if proc.returncode != 0:
                raise SystemExit(f"{run_dir}: phase ending at {stop_at} failed ({proc.returncode}); see {log.name}")
            return time.time() - start, kills


def process_starts(run_dir, phases):
    """The first iteration of each training process: phase starts and every "Resumed ... at iteration N"."""
    starts = {lo for lo, _, _ in phases}
    with open(run_dir + ".log") as f:
        starts |= {int(m) for m in re.findall(r"Resumed from \S+ at iteration (\d+)", f.read())}
    return sorted(starts)


def process_report(rows, lo, hi):
    """Resources of the process that trained iterations lo..hi (see the module docstring)."""
    samples = [r for r in rows if "rss_mb" in r and lo <= r["iteration"] <= hi]
    if not samples:
        return None
    evals = [r["iteration"] for r in rows if "bbox/AP" in r and lo <= r["iteration"] <= hi]
    settled = next((i for i, s in enumerate(samples) if evals and s["iteration"] > evals[0]), min(1, len(samples) - 1))
    rss, kids, fds = ([s[k] for s in samples] for k in ("rss_mb", "children_rss_mb", "open_fds"))
    return dict(samples=len(samples), evaluations=len(evals), rss_first=rss[0], rss_settled=rss[settled],
                rss_last=rss[-1], rss_max=max(rss), rss_growth=max(rss[settled:]) - rss[settled],
                children_first=kids[0], children_last=kids[-1], fds_first=fds[0], fds_settled=fds[settled],
                fds_last=fds[-1], fds_growth=max(fds[settled:]) - fds[settled])


def compare_weights(a_path, b_path):
    import torch

    a = torch.load(a_path, map_location="cpu", weights_only=True)["model"]
    b = torch.load(b_path, map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel()}
    return max(diffs.values()), sum(1 for v in diffs.values() if v != 0), len(diffs)


def run_soak(args, phases):
    rng = random.Random(args.seed)
    if os.path.exists(args.output):
        shutil.rmtree(args.output)
    os.makedirs(args.output)
    for run in ("reference", "faulted"):
        run_dir = os.path.join(args.output, run)
        os.makedirs(run_dir)
        for i, (lo, hi, workers) in enumerate(phases):
            kill_at = rng.randint(lo + args.checkpoint_period // 2, hi - args.checkpoint_period // 2) \
                if run == "faulted" and workers == 1 and hi - lo > args.checkpoint_period else None
            print(f"{run}: phase {i + 1}, iterations {lo}..{hi} on {workers} worker(s)"
                  + (f", SIGKILL after iteration {kill_at}" if kill_at is not None else ""), flush=True)
            wall, kills = run_phase(args, run_dir, hi, workers, kill_at)
            print(f"  {wall:.0f} s, {kills} kill(s)", flush=True)


def report(args, phases):
    out, rows, ok = {"iters": args.iters, "phases": phases, "runs": {}}, [], True
    for run in ("reference", "faulted"):
        run_dir = os.path.join(args.output, run)
        records, starts = metrics(run_dir), process_starts(run_dir, phases)
        out["runs"][run] = []
        for lo, nxt in zip(starts, starts[1:] + [args.iters]):
            workers = next(w for a, b, w in phases if a <= lo <= b)
            p = process_report(records, lo, min(nxt - 1, args.iters - 1))
            if p is None:
                continue
            grew = p["rss_growth"] > args.max_rss_growth_mb or p["fds_growth"] > 0
            ok &= not grew
            out["runs"][run].append(dict(first=lo, last=nxt - 1, workers=workers, **p))
            rows.append([run, f"{lo}..{nxt - 1}", workers, p["samples"], p["evaluations"],
                         f"{p['rss_first']:.0f}", f"{p['rss_settled']:.0f}", f"{p['rss_last']:.0f}",
                         f"{p['rss_max']:.0f}", f"{p['rss_growth']:.1f}",
                         f"{p['children_first']:.0f}/{p['children_last']:.0f}",
                         f"{p['fds_first']:.0f}/{p['fds_settled']:.0f}/{p['fds_last']:.0f}", "GREW" if grew else "flat"])
    print(format_table(rows, ["run", "process: iterations", "workers", "samples", "evals", "RSS first MB",
                              "RSS settled MB", "RSS last MB", "RSS max MB", "growth after settled MB",
                              "data workers MB first/last", "open fds first/settled/last", "verdict"]))
    max_diff, differing, total = compare_weights(*(os.path.join(args.output, r, "model_final.pth")
                                                   for r in ("reference", "faulted")))
    out["final_weights"] = dict(max_abs_diff=max_diff, tensors_differing=differing, tensors=total)
    print(f"final weights, faulted vs reference: max |difference| {max_diff:.3g}, {differing} of {total} tensors differ")
    ok &= max_diff == 0.0
    aps = {run: [r["bbox/AP"] for r in metrics(os.path.join(args.output, run)) if "bbox/AP" in r]
           for run in ("reference", "faulted")}
    out["ap"] = aps
    print("AP at each evaluation: " + "; ".join(f"{run} {', '.join(f'{v:.2f}' for v in ap)}" for run, ap in aps.items()))
    with open(os.path.join(args.output, "report.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("soak check " + ("passed" if ok else "FAILED") + f"; report in {os.path.join(args.output, 'report.json')}")
    return 0 if ok else 1


def main(argv=None):
    args = parse_args(argv)
    a, b = (int(f * args.iters) for f in args.two_worker)
    phases = [(0, a - 1, 1), (a, b - 1, 2), (b, args.iters - 1, 1)]
    if not args.report_only:
        run_soak(args, phases)
    return report(args, phases)


if __name__ == "__main__":
    sys.exit(main())
