"""Train and evaluate a detector from a config.

    python tools/train_net.py --config configs/retinanet_R50_FPN_1x.py --num-gpus 8
    python tools/train_net.py --config configs/quickstart.py --num-gpus 2          # 2 CPU processes (gloo)
    python tools/train_net.py --config FILE --resume                               # continue output_dir's run
    python tools/train_net.py --config FILE --eval-only [--weights CKPT]
    python tools/train_net.py --config FILE train.max_iter=1000 optimizer.lr=0.005   # overrides
    retdet-train --config retdet.configs.quickstart                                # installed; a shipped config

Preemption: SIGTERM or SIGUSR1 (train.preempt_signals) makes every worker finish its step, save a
checkpoint and exit with status 75; --resume continues exactly from it. A corrupt newest checkpoint
is skipped (with a warning) for the newest intact one on --resume and --eval-only.

Multi-machine: the same command on every machine with --num-machines M --machine-rank R
--dist-url tcp://MACHINE0:PORT. Under torchrun, the process group comes from torchrun's environment.

Slurm (submitit, `pip install 'retdet[slurm]'`): --slurm PARTITION [--nodes N --gpus-per-node G
--timeout MIN] submits the same command as a job of N x G tasks; a preempted or timed-out job
saves a checkpoint and is requeued with --resume (retdet/engine/slurm.py).
"""
import argparse
import logging
import os
import sys

from retdet.config import import_user_modules, load_config, save_config
from retdet.checkpoint import CorruptCheckpointError
from retdet.data import check_num_classes, register_from_config, resolve_num_classes
from retdet.engine import Trainer, launch
from retdet.engine.defaults import build_model_from_config, tool_argument_parser
from retdet.engine.preemption import DEFAULT_SIGNALS, PREEMPTED_EXIT_CODE, signal_numbers
from retdet.engine.slurm import add_slurm_arguments, option_flags
from retdet.evaluation.evaluate import evaluate
from retdet.utils import comm
from retdet.utils.collect_env import collect_env
from retdet.utils.logger import format_table, setup_logger

REQUIRED = ("model", "dataloader", "optimizer", "lr_scheduler", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, weights="optional",
                                  weights_help="checkpoint to evaluate with --eval-only")
    launcher = [parser.add_argument("--num-gpus", type=int, default=1,
                                    help="worker processes per machine (CPU: processes)")]
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (auto: a free local port)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/last_checkpoint")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--output-dir", default=None, help="default: the config's train.output_dir")
    # What a Slurm job's tasks do not repeat: the submission itself, and the local launcher (each task
    # is one worker of the job's process group).
    parser.set_defaults(submission_flags={**add_slurm_arguments(parser), **option_flags(launcher)})
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def worker(cfg, args) -> None:
    output_dir = args.output_dir or cfg.train.output_dir
    logger = setup_logger(output_dir, rank=comm.get_rank())
    # spawned workers start with empty registries: import the user's modules here too
    import_user_modules(list(cfg.get("imports", [])) + list(args.imports),
                        relative_to=os.path.dirname(os.path.abspath(args.config)))
    resolve_num_classes(cfg)  # model.head.num_classes="from_dataset": the saved config gets the number
    if comm.is_main_process():
        logger.info("Environment:\n%s", format_table(collect_env(), ["component", "value"]))
        logger.info("Config %s resolved and saved to %s", args.config, save_config(cfg, output_dir))
    if args.eval_only:
        from retdet.checkpoint import load_weights
        from retdet.checkpoint import Checkpointer

        model = build_model_from_config(cfg)  # its weights below (the run's own may fall back to an older one)
        register_from_config(cfg.dataloader.get("register", []))
        check_num_classes(model, cfg.dataloader.test.dataset.names, where="dataloader.test")
        # The run's own checkpoint falls back to the newest intact one, as --resume does; weights
        # given explicitly are used as given (evaluating another file would report another model).
        weights = (args.weights or cfg.train.get("init_checkpoint")
                   or Checkpointer(model, output_dir).find_resume_checkpoint())
        if not weights:
            raise FileNotFoundError(f"--eval-only: no --weights given, no train.init_checkpoint and no checkpoint in "
                                    f"{output_dir}")
        try:
            load_weights(model, weights, logger=logger)
        except CorruptCheckpointError as e:
            intact = Checkpointer(model, os.path.dirname(weights) or ".").find_resume_checkpoint()
            if not intact:
                raise
            raise CorruptCheckpointError(weights, f"{e.problem}; the newest intact checkpoint in its folder is "
                                                  f"{intact}: pass --weights {intact}") from None
        evaluate(cfg, model, output_dir=os.path.join(output_dir, "eval"))
        return
    trainer = Trainer(cfg, output_dir=output_dir, resume=args.resume)
    trainer.train()
    if trainer.preempted:
        raise SystemExit(PREEMPTED_EXIT_CODE)


def main(argv=None) -> None:
    run(argv)


def run(argv=None):
    """Run the command ``argv``; with --slurm, submit it and return the submitit job."""
    args = parse_args(argv)
    # Everything that can be wrong with the config fails here, before any worker or data starts.
    cfg = load_config(args.config, args.opts, extra_imports=args.imports)
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise KeyError(f"{args.config}: missing top-level config sections {missing}")
    logging.getLogger("retdet").setLevel(logging.INFO)
    # an unknown signal name fails here, before any submission or worker
    signals = signal_numbers(cfg.train.get("preempt_signals", DEFAULT_SIGNALS))
    if args.slurm:
        from retdet.engine.slurm import submit

        job = submit(sys.argv[1:] if argv is None else argv, args, args.output_dir or cfg.train.output_dir,
                     entry_point=main, flags=args.submission_flags)
        if args.slurm_wait:
            print(f"job {job.job_id}: {job.results()}")  # one result per task
        return job
    from retdet.engine.slurm import in_submitit_job, requeue_signal

    if in_submitit_job() and signals and requeue_signal() not in signals:
        # submitit's "requeue me" signal (before the time limit) saves a checkpoint like a preemption
        signals.append(requeue_signal())
        cfg.train.preempt_signals = signals
    launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(cfg, args), forward_signals=signals)


if __name__ == "__main__":
    main()
