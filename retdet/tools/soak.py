"""Soak check: a long training run with faults in it, showing that nothing leaks and nothing is lost.

    retdet-soak --output output/soak                 # 3000 iterations x 2 runs: ~25 min on 2 cores
    retdet-soak --output output/soak --iters 600     # a short look
    (in a checkout: python tools/soak.py ...)

Two runs of the same schedule (the quickstart config on the synthetic set, periodic evaluation and
checkpoints), each in three phases: one process for iterations [0, a), two gloo workers for [a, b),
one process for [b, iters). The "reference" run goes through each phase uninterrupted; the
"faulted" run is killed with SIGKILL at a random moment of phases 1 and 3 and continued with
--resume each time. Every --sample iterations the trainer records its resident memory, its data
workers' and its open file descriptors (the ResourceMonitor hook). The report gives, per phase,
those figures first/last/max, and the difference of the two runs' final weights; the exit status is
1 when memory or descriptors grow within a phase or the final weights differ.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from retdet.utils.logger import format_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the two runs and report.json")
    parser.add_argument("--config", default="retdet.configs.quickstart", help="a config file or shipped name")
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--two-worker", type=float, nargs=2, default=(0.4, 0.6), metavar=("START", "END"),
                        help="the 2-worker phase, as fractions of --iters")
    parser.add_argument("--checkpoint-period", type=int, default=250)
    parser.add_argument("--eval-period", type=int, default=500)
    parser.add_argument("--sample", type=int, default=50, help="record memory and descriptors every N iterations")
    parser.add_argument("--seed", type=int, default=0, help="where in phases 1 and 3 the kills fall")
    parser.add_argument("--max-rss-growth-mb", type=float, default=40.0,
                        help="allowed growth of resident memory within a phase, after its first sample")
    parser.add_argument("opts", nargs="*", help="extra config overrides for both runs")
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
    cmd = [sys.executable, "-m", "retdet.tools.train_net", "--config", args.config, "--output-dir",
           run_dir, "--resume", "--num-gpus", str(workers), f"train.max_iter={args.iters}",
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


def phase_report(rows, lo, hi):
    samples = [r for r in rows if "rss_mb" in r and lo <= r["iteration"] <= hi]
    if not samples:
        return None
    rss, kids, fds = ([s[k] for s in samples] for k in ("rss_mb", "children_rss_mb", "open_fds"))
    steady = rss[1:] or rss  # the first sample of a process includes its warm-up
    return dict(samples=len(samples), rss_first=rss[0], rss_last=rss[-1], rss_max=max(rss),
                rss_growth=steady[-1] - min(steady), children_first=kids[0], children_last=kids[-1],
                fds_first=fds[0], fds_last=fds[-1], fds_max=max(fds))


def compare_weights(a_path, b_path):
    import torch

    a = torch.load(a_path, map_location="cpu", weights_only=True)["model"]
    b = torch.load(b_path, map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel()}
    return max(diffs.values()), sum(1 for v in diffs.values() if v != 0), len(diffs)


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    a, b = (int(f * args.iters) for f in args.two_worker)
    phases = [(0, a - 1, 1), (a, b - 1, 2), (b, args.iters - 1, 1)]
    if os.path.exists(args.output):
        shutil.rmtree(args.output)
    os.makedirs(args.output)
    report = {"iters": args.iters, "phases": phases, "runs": {}}
    for run in ("reference", "faulted"):
        run_dir = os.path.join(args.output, run)
        os.makedirs(run_dir)
        report["runs"][run] = {"phases": []}
        for i, (lo, hi, workers) in enumerate(phases):
            kill_at = rng.randint(lo + args.checkpoint_period // 2, hi - args.checkpoint_period // 2) \
                if run == "faulted" and workers == 1 and hi - lo > args.checkpoint_period else None
            print(f"{run}: phase {i + 1}, iterations {lo}..{hi} on {workers} worker(s)"
                  + (f", SIGKILL after iteration {kill_at}" if kill_at is not None else ""), flush=True)
            wall, kills = run_phase(args, run_dir, hi, workers, kill_at)
            report["runs"][run]["phases"].append(dict(first=lo, last=hi, workers=workers, wall_s=wall, kills=kills,
                                                      **(phase_report(metrics(run_dir), lo, hi) or {})))
    rows, ok = [], True
    for run, data in report["runs"].items():
        for p in data["phases"]:
            grew = p.get("rss_growth", 0) > args.max_rss_growth_mb or p.get("fds_last", 0) > p.get("fds_first", 0) + 2
            ok &= not grew
            rows.append([run, f"{p['first']}..{p['last']}", p["workers"], p["kills"], f"{p['wall_s']:.0f}",
                         p.get("samples"), f"{p.get('rss_first', 0):.0f}", f"{p.get('rss_last', 0):.0f}",
                         f"{p.get('rss_max', 0):.0f}", f"{p.get('rss_growth', 0):.1f}",
                         f"{p.get('children_first', 0):.0f}/{p.get('children_last', 0):.0f}",
                         f"{p.get('fds_first', 0):.0f}/{p.get('fds_last', 0):.0f}", "GREW" if grew else "flat"])
    print(format_table(rows, ["run", "iterations", "workers", "kills", "wall s", "samples", "RSS first MB",
                              "RSS last MB", "RSS max MB", "RSS growth MB", "data workers MB first/last",
                              "open fds first/last", "verdict"]))
    max_diff, differing, total = compare_weights(*(os.path.join(args.output, r, "model_final.pth")
                                                   for r in ("reference", "faulted")))
    report["final_weights"] = dict(max_abs_diff=max_diff, tensors_differing=differing, tensors=total)
    print(f"final weights, faulted vs reference: max |difference| {max_diff:.3g}, {differing} of {total} tensors differ")
    ok &= max_diff == 0.0
    aps = {run: [r["bbox/AP"] for r in metrics(os.path.join(args.output, run)) if "bbox/AP" in r]
           for run in report["runs"]}
    report["ap"] = aps
    print("AP at each evaluation: " + "; ".join(f"{run} {', '.join(f'{v:.2f}' for v in ap)}" for run, ap in aps.items()))
    with open(os.path.join(args.output, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("soak check " + ("passed" if ok else "FAILED") + f"; report in {os.path.join(args.output, 'report.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
