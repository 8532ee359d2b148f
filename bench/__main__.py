"""``python -m bench COMMAND``: the command line of the benchmark harness (see bench/__init__.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bench import baselines, corpus, curvature, data, report, step
from bench.workload import SHAPES, VARIANTS, Workload
from tapweight.errors import TapweightError, run_main

#: what `bench step` times unless --variants says otherwise (neumann and cg take minutes on a CPU)
DEFAULT_VARIANTS = ("plain", "default", "fd", "fd-forward", "fd-1/8", "jvp", "jvp-1/8", "jvp-1/16", "betty")


def _workload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", choices=sorted(SHAPES), default="cpu",
                        help="paper: ImageMol 224 px, batch 1024/64/64; cpu: 64 px, 32/16/16; "
                             "ratio: 64 px, 256/16/16 (the paper's batch ratio)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda if present)")
    parser.add_argument("--amp", choices=("no", "bf16", "fp16"), default="no", help="autocast (CUDA only)")
    parser.add_argument("--accumulate", type=int, default=1,
                        help="level I micro-batches per step (the level I batch is split, not grown)")
    parser.add_argument("--models", choices=("auto", "mol", "stand-in", "toy"), default="auto",
                        help="mol: tapweight_mol's ResNet18 and objectives; stand-in: torchvision "
                             "ResNet18 + linear heads; toy: a small conv net (tests); auto: mol when it loads")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def _task_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A command on one tapweight task, read as ``tapweight run`` reads it."""
    parser.add_argument("domain", help="e.g. mol")
    parser.add_argument("task", help="e.g. freesolv")
    parser.add_argument("--data", default="", help="the task's data file or folder (as tapweight run --data)")
    parser.add_argument("--json", type=Path)
    return parser


def _child_args(args) -> list[str]:
    return ["--shape", args.shape, "--device", args.device, "--amp", args.amp,
            "--accumulate", str(args.accumulate), "--models", args.models, "--threads", str(args.threads)]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    s = sub.add_parser("step", help="time one global step per variant; peak memory")
    _workload_args(s)
    s.add_argument("--repeats", type=int, default=5, help="timed rounds (each times every variant once)")
    s.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    s.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)}")
    s.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak memory")
    s.add_argument("--profile", type=Path, help="time each level, and write a torch.profiler table per "
                                                 "variant into this folder")
    s.add_argument("--profile-steps", type=int, default=3, help="steps over which each level is timed")
    s.add_argument("--json", type=Path, help="write the numbers here")
    v = sub.add_parser("avenues", help="the hypergradient's extra forward: batched, inference mode, bf16, "
                                       "compiled, as multiples of a level I step")
    _workload_args(v)
    v.add_argument("--repeats", type=int, default=5)
    v.add_argument("--compile", action="store_true", help="also torch.compile the backbone (minutes)")
    v.add_argument("--json", type=Path)
    d = sub.add_parser("data", help="rendering and image loading throughput")
    d.add_argument("--smiles", type=Path, default=data.DEFAULT_SMILES, help="CSV with a smiles column")
    d.add_argument("--n", type=int, default=256, help="molecules")
    d.add_argument("--size", type=int, default=224, help="image side in pixels")
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--workers", type=int, default=2, help="render processes and DataLoader workers")
    d.add_argument("--json", type=Path)
    o = sub.add_parser("corpus", help="corpus scale: prepare, fingerprints, k-means (time, memory), "
                                      "time to the first pretraining step, streaming images/s")
    o.add_argument("corpus", type=Path, help="a SMILES file (python -m tapweight_mol.moses writes one)")
    o.add_argument("--workers", type=int, default=2, help="render processes; DataLoader workers 0..N")
    o.add_argument("--size", type=int, default=64, help="image side of the streaming stage (cpu preset: 64)")
    o.add_argument("--batch", type=int, default=32, help="batch of the streaming stage (cpu preset: 32)")
    o.add_argument("--batches", type=int, default=20, help="batches per streaming measurement")
    o.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    o.add_argument("--reuse", type=Path, help="an earlier --json of this corpus run with --keep (the same "
                                              "folder): its stages 1-3, stages 4-5 measured again")
    o.add_argument("--json", type=Path)
    a = _task_args(sub.add_parser("estimators", help="each hypergradient estimator's deviation from the exact one "
                                                     "over the validation-batch variance, on real batches of a task"))
    a.add_argument("--steps", type=int, default=100)
    a.add_argument("--val-batches", type=int, default=4, help="other validation batches per step (variance)")
    a.add_argument("--estimators", default="", help="comma-separated variants, NAME@R for radius R "
                                                    "(default: bench/estimators.py STUDY)")
    a.add_argument("--set", dest="sets", action="append", default=[], help="config key=value (repeatable)")
    a.add_argument("--device", default="cpu")
    a.add_argument("--threads", type=int, default=0)
    a.add_argument("--plot", type=Path, help="cost against deviation, PNG")
    a.add_argument("--also", type=Path, action="append", default=[], help="earlier --json results to plot too")
    a.add_argument("--reuse", type=Path, help="a --json result of an earlier run: table and plot it, run nothing")
    a.add_argument("--costs", type=Path, help="step costs from a `bench step --json` (or `bench gpu`) file "
                                              "on a machine to itself, instead of this run's own timings")
    g = sub.add_parser("gpu", help="the prepared GPU check (bench/gpu.py): NCCL collectives, the NLP "
                                   "hypergradient, an end-to-end run, the data pipeline, step times and "
                                   "memory at the paper shape, hypergradient precision, the estimator study")
    g.add_argument("--device", default="cuda")
    g.add_argument("--out", type=Path, default=Path("bench-gpu"), help="folder for gpu.json")
    g.add_argument("--repeats", type=int, default=5)
    g.add_argument("--warmup", type=int, default=2)
    g.add_argument("--workers", type=int, default=0, help="render/loader processes (0: cores - 2, at most 16)")
    g.add_argument("--bbbp", type=Path, help="BBBP CSV for the estimator study and the end-to-end run "
                                             "(default ../shared/data/moleculenet/bbbp.csv)")
    g.add_argument("--study-steps", type=int, default=12, help="global steps of the estimator study")
    g.add_argument("--run-steps", type=int, default=30, help="global steps of the end-to-end run")
    g.add_argument("--budget-s", type=float, default=480, help="seconds for all parts: a part that would "
                                                                 "not finish is stopped or not started")
    g.add_argument("--sst2", type=Path, help="SST-2 folder for the NLP hypergradient "
                                             "(default ../shared/data/text/sst2)")
    ev = _task_args(sub.add_parser("every", help="a hypergradient every k steps (reweight.every) against every "
                                                 "step: λ's trajectory over seeds, and the step's cost"))
    ev.add_argument("--steps", type=int, default=40)
    ev.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds")
    ev.add_argument("--every", default="1,4", help="comma-separated k (1 is always run: the reference)")
    ev.add_argument("--set", dest="sets", action="append", default=[], help="config key=value (repeatable)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--threads", type=int, default=0)
    e = sub.add_parser("exactness", help="the hypergradient against autograd through the unrolled steps, "
                                         "per optimizer / precision / schedule / unroll")
    e.add_argument("--seeds", type=int, default=5)
    e.add_argument("--json", type=Path)
    al = _task_args(sub.add_parser("alignment", help="per step: each objective's gradient against the "
                                                     "validation gradient (norms, cosine), on a task"))
    al.add_argument("--steps", type=int, default=30)
    al.add_argument("--set", dest="sets", action="append", default=[], help="config key=value (repeatable)")
    al.add_argument("--device", default="cpu")
    al.add_argument("--threads", type=int, default=0)
    b = _task_args(sub.add_parser("baselines", help="train-mean and random-forest baselines of a regression task"))
    b.add_argument("--seeds", default="0,1,2", help="comma-separated forest seeds")
    b.add_argument("--trees", type=int, default=500, help="trees per forest")
    c = _task_args(sub.add_parser("curvature", help="the largest stable SGD step of a squared loss on "
                                                    "the backbone's features"))
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override, as tapweight run --set (e.g. init=ImageMol.pth.tar)")
    c.add_argument("--batches", type=int, default=6, help="training batches whose features are used")
    u = sub.add_parser("startup", help="wall time of the commands that only read: --help, --version, list, "
                                       "plugins, show, argument and unknown-domain errors (fresh processes)")
    u.add_argument("--repeats", type=int, default=5)
    u.add_argument("--run", type=Path, help="a run folder for `show` (default: a synthetic one)")
    u.add_argument("--json", type=Path)
    i = sub.add_parser("imports", help="the core's import graph: rooms, floors, circles (bench/imports.py)")
    i.add_argument("--png", type=Path, help="draw the rooms into this PNG")
    gp = sub.add_parser("graphprobe", help="Hu et al.'s released GCNs against random init on BBBP: a frozen "
                                           "linear probe and fine-tuning (bench/graphprobe.py)")
    gp.add_argument("--finetune-out", type=Path, help="folder of the fine-tuning runs (run or reused); "
                                                      "without it only the probe runs")
    gp.add_argument("--dropout", type=float, default=0.5,
                    help="the fine-tune's GNN dropout (Hu et al.'s: 0.5; the backbone's default: 0)")
    gp.add_argument("--json", type=Path)
    m = sub.add_parser("_memory", help=argparse.SUPPRESS)  # one variant's peak RSS, in a subprocess
    _workload_args(m)
    m.add_argument("--variant", choices=VARIANTS, required=True)
    return top


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TapweightError("--device cuda: no CUDA device is visible")
    return device


def _workload(args) -> Workload:
    if args.threads:
        torch.set_num_threads(args.threads)
    return Workload(SHAPES[args.shape], _device(args.device), args.amp, args.accumulate, args.models)


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    if args.command == "imports":
        from bench import imports

        imports.main(["--png", str(args.png)] if args.png else [])
        return {}
    if args.command == "_memory":
        result = step.memory_child(_workload(args), args.variant)
        print(json.dumps(result))
        return result
    if args.command == "gpu":
        from bench import gpu

        return gpu.run(_device(args.device), args.out, args.repeats, args.warmup, args.workers,
                       args.bbbp or gpu.BBBP, args.study_steps, args.run_steps, args.budget_s,
                       args.sst2 or gpu.SST2)
    if args.command == "graphprobe":
        from bench import graphprobe

        result = {"command": "graphprobe", **graphprobe.run(args.finetune_out, args.dropout)}
        print(graphprobe.table(result))
    elif args.command == "estimators":
        from bench import estimators

        if args.steps < 2 or args.val_batches < 2:
            raise TapweightError("--steps and --val-batches: give at least 2")
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.reuse:
            result = json.loads(args.reuse.read_text())
        else:
            names = tuple(n.strip() for n in args.estimators.split(",") if n.strip()) or estimators.STUDY
            result = {"command": "estimators", **estimators.run(args.domain, args.task, args.data, args.steps,
                                                                 args.val_batches, args.sets, _device(args.device),
                                                                 names)}
        results = [*(json.loads(p.read_text()) for p in args.also), result]
        if args.costs:
            costs = estimators.step_costs(json.loads(args.costs.read_text()))
            results = [estimators.with_costs(r, costs, str(args.costs)) for r in results]
        print(estimators.table(results[-1]))
        if args.plot:
            estimators.plot(results, args.plot)
    elif args.command == "alignment":
        from bench import alignment

        if args.steps < 1:
            raise TapweightError(f"--steps {args.steps}: give at least 1")
        if args.threads:
            torch.set_num_threads(args.threads)
        result = alignment.run(args.domain, args.task, args.data, args.steps, args.sets, _device(args.device))
        print(alignment.table(result))
    elif args.command == "every":
        from bench import every

        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
            ks = sorted({1, *(int(k) for k in args.every.split(",") if k.strip())})
        except ValueError:
            raise TapweightError("--seeds and --every take integers like 0,1,2") from None
        if len(seeds) < 2 or args.steps < 1 or min(ks) < 1:
            raise TapweightError("give at least two seeds, --steps 1 or more and k >= 1")
        if args.threads:
            torch.set_num_threads(args.threads)
        result = every.run(args.domain, args.task, args.data, args.steps, seeds, ks, args.sets, _device(args.device))
        print(every.table(result))
    elif args.command == "exactness":
        from bench import exactness

        if args.seeds < 1:
            raise TapweightError(f"--seeds {args.seeds}: give at least 1")
        result = {"command": "exactness", "rows": exactness.run(args.seeds)}
        print(exactness.table(result["rows"]))
    elif args.command == "baselines":
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise TapweightError(f"--seeds takes integers like 0,1,2, got '{args.seeds}'") from None
        if not seeds or args.trees < 1:
            raise TapweightError("give at least one seed and --trees 1 or more")
        result = baselines.run(args.domain, args.task, args.data, seeds, args.trees)
        print(report.baselines_table(result))
    elif args.command == "curvature":
        if args.batches < 1:
            raise TapweightError(f"--batches {args.batches}: give at least 1")
        result = curvature.run(args.domain, args.task, args.data, args.sets, args.batches)
        print(report.curvature_table(result))
    elif args.command == "corpus":
        if args.workers < 0 or args.batches < 2:
            raise TapweightError("--workers: 0 or more; --batches: at least 2")
        result = {"command": "corpus", **corpus.run(args.corpus, args.workers, args.size, args.batch,
                                                    args.batches, args.keep, args.reuse)}
        print(corpus.table(result))
    elif args.command == "startup":
        from bench import startup

        if args.repeats < 1:
            raise TapweightError(f"--repeats {args.repeats}: give at least 1")
        result = {"command": "startup", **startup.run(args.repeats, args.run)}
        print(startup.table(result))
    elif args.command == "avenues":
        from bench import avenues

        if args.repeats < 1:
            raise TapweightError(f"--repeats {args.repeats}: give at least 1")
        result = {"command": "avenues", **avenues.run(_workload(args), args.repeats, args.compile)}
        print(avenues.table(result))
    elif args.command == "data":
        result = {"command": "data", **data.run(args.smiles, args.n, args.size, args.batch, args.workers)}
        print(report.data_table(result))
    else:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise TapweightError(f"unknown variant(s) {', '.join(unknown)}; variants: {', '.join(VARIANTS)}")
        counts = {"--repeats": args.repeats, "--profile-steps": args.profile_steps}
        for flag, value in counts.items():
            if value < 1:
                raise TapweightError(f"{flag} {value}: give at least 1")
        if args.warmup < 0:
            raise TapweightError(f"--warmup {args.warmup}: give 0 or more")
        if args.profile is not None and args.profile.exists() and not args.profile.is_dir():
            raise TapweightError(f"--profile {args.profile} is a file; give a folder for the profile tables")
        workload = _workload(args)
        shape = SHAPES[args.shape]
        print(f"bench step: shape {shape.name} ({shape.image_size} px, batch {shape.pretrain_batch}/"
              f"{shape.finetune_batch}/{shape.reweight_batch}), device {workload.device}, "
              f"models {workload.source}", flush=True)
        try:
            result = step.run(workload, variants, args.warmup, args.repeats, args.memory, _child_args(args),
                              args.profile, args.profile_steps)
        except torch.OutOfMemoryError:
            raise TapweightError(f"out of device memory at level I batch {shape.pretrain_batch}: pass "
                                 "--accumulate 2 (or 4), or --amp bf16, or use a larger GPU") from None
        result = {"command": "step", "shape": vars(shape), "device": str(workload.device),
                  "models": workload.source, "amp": args.amp, "accumulate": args.accumulate,
                  "warmup": args.warmup, "repeats": args.repeats, **result}
        result["targets"] = report.targets(result["variants"], str(workload.device))
        print(report.step_table(result))
    result["machine"] = report.machine(_device(getattr(args, "device", "cpu")))
    result["argv"] = sys.argv[1:] if argv is None else list(argv)
    if args.json:
        report.write_json(result, args.json)
    return result


if __name__ == "__main__":
    run_main(main)
