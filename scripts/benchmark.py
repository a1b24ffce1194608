"""Training speed of every model: samples/s, FLOPs per step, achieved FLOP/s and its share of the
device's measured matrix-multiply rate; for M2, ADGM and SDGM also a straightforward reference step.

    python scripts/benchmark.py                         # all models, paper-sized networks and batches
    python scripts/benchmark.py --models adgm --windows 9 --json bench.json
    python scripts/benchmark.py --tiny --json out.json  # seconds: what CI runs
    python scripts/benchmark.py --models adgm --set model.samples=1   # dgm-run overrides after the experiment's

Each model's trainer is built as `dgm-run` builds it (`dgm_run.train.build` on the composed
experiment config, `experiment=adgm_mnist`, ...), on synthetic uint8 digits of MNIST's shape
(the speed does not depend on pixel values; no data set is needed), and timed through its own
`Trainer.train_step`, batch fetch and binarization included, as training runs it.

- samples/s: samples per step (batch_size, + labelled_batch_size for semi-supervised models)
  over the median of `--windows` timed windows of `--steps-per-window` steps, after warm-up;
  s/epoch: the median step's seconds times the steps of an epoch of the synthetic set (MNIST's size).
  M1+M2's step is M2's, on the features of its (untrained) M1; `--set model.m1_features=step`
  times it with M1's pass over every batch.
- FLOPs per step: `torch.utils.flop_counter.FlopCounterMode` around one whole step (every
  phase of the schedule, forward and backward; the optimizer's element-wise work counts 0).
- evaluation: the trainer's own averaging of `model.predict` and `model.evaluate` (`Evaluator.held_out_metrics`:
  test error, the importance-weighted log-likelihood, ...) over `--eval-digits` test digits in
  batches of trainer.eval_batch_size: digits/s (median of 3 passes after one), FLOPs per digit
  and the share of the matmul rate, to set beside the training step's.
- matmul rate: large square matmuls (fp32; bf16 with --precision bf16) on the same device in
  the same run, at the matmul precision the first trainer set; one burst after each round of
  timed windows; "share" is a model's achieved FLOP/s over the median of the bursts taken
  between its own windows. The real and the reference step's windows take turns, so a drifting
  machine slows both alike.

On a GPU the trainer captures its step as one CUDA graph (trainer.cuda_graph=auto); the script
then also times the same model's eager step (a second trainer with trainer.cuda_graph=false) and
reports the graph's speed-up; the reference is timed captured and eager alike.

The reference (M2, ADGM, SDGM) is `straightforward.py`, beside this script: the textbook exact sum over
y, every unlabelled x tiled over the labels and one-hot y concatenated to every first layer, so
that q(a|x) and every first layer are recomputed for each of the K labels. Its parameters are
copies of the real model's and it draws its noise in the same order, so with the same seed it
gives the same loss: the script records the largest difference over every loss term. The
reference trains its own copy with its own optimizer (`Trainer.step_for`: the trainer's precision,
torch.compile and CUDA graph).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from dgm_run import report as reports
from dgm_run.commands.straightforward import compare, reference_for
from dgm_run.composition import compose
from dgm_run.contract import Batch
from dgm_run.data.base import Splits
from dgm_run.train import build as build_trainer
from dgm_run.trainer_config import COMPILE_MODES

# Paper-sized networks and batches: the experiment file <model>_mnist (vae: M1's 784-500-500-50 on MNIST).
MODELS = ("vae", "m2", "m1m2", "adgm", "sdgm", "avb", "ddgm")
# What a model's timed step needs beyond its experiment: M1+M2's is M2's (an untrained M1's features, the
# same work as a trained one's), from the first step.
PHASE = {"m1m2": ["model.m1_epochs=0"]}
# --tiny: small networks and batches, so that CI runs everything in seconds.
TINY_BATCH = ["trainer.batch_size=20", "data.labelled_batch_size=20"]
TINY = {
    "vae": ["model.hidden=[32,32]", "model.z_dim=8"],
    "m2": ["model.hidden=[32]", "model.z_dim=8"],
    "m1m2": ["model.hidden=[32]", "model.z_dim=8", "model.m1_hidden=[32,32]", "model.m1_z_dim=8"],
    "adgm": ["model.hidden=[32,32]", "model.z_dim=8", "model.a_dim=8"],
    "sdgm": ["model.hidden=[32,32]", "model.z_dim=8", "model.a_dim=8"],
    "avb": [
        "model.hidden=[32,32]",
        "model.z_dim=4",
        "model.noise_dim=4",
        "model.discriminator_hidden=[32,32]",
        "model.discriminator_features=16",
        "model.ac_samples=4",
    ],
    "ddgm": [
        "model.generator_hidden=[32,32]",
        "model.energy_hidden=[32,32]",
        "model.z_dim=8",
        "model.features=16",
        "model.experts=16",
    ],
}


# ----------------------------------------------------------------------------- setup
def synthetic_digits(n_train: int, n_test: int, seed: int = 0) -> Splits:
    """uint8 images of MNIST's shape (N, 1, 28, 28) and balanced labels: stand-ins for the speed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.arange(n_train + n_test) % 10
    return Splits(x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes=10)


def overrides(name: str, args: argparse.Namespace) -> list[str]:
    """The dgm-run overrides of this model's benchmark run."""
    return (
        [
            f"experiment={name}_mnist",
            "logger=none",
            "trainer.progress_bar=false",
            f"device={args.device}",
            f"trainer.precision={args.precision}",
            f"trainer.compile={args.compile}",
            *PHASE.get(name, []),
        ]
        + (TINY[name] + TINY_BATCH if args.tiny else [])
        + args.set
    )


# ---------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(step: Callable[[Batch], None], batch: Batch) -> int:
    """The FLOPs of a step after a first one, which may do one-off work (M1+M2's feature table)."""
    step(batch)
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return int(counter.get_total_flops())


def time_interleaved(
    steps: dict[str, Callable[[Batch], None]],
    trainer: Any,
    warmup: int,
    windows: int,
    steps_per_window: int,
    matmul: Callable[[], float],
) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per step of each timed window of every step function, after `warmup` steps each, and
    the matmul rate between rounds. The windows take turns (a round: one window of each, then one
    matmul burst), so that a machine whose speed drifts (a shared host) slows every one alike.
    Each window starts with one untimed step: in training a step follows a step of its own kind,
    not the other function's or the matmul's, which leave the caches full of their own data. `trainer`:
    what dgm_run.train.build returned, whose data and device the steps run on."""
    data, device = trainer.data, trainer.device
    plan, i = data.plan_epoch(), 0

    def next_batch() -> Batch:  # batches fetched as training does
        nonlocal i
        i = (i + 1) % data.steps_per_epoch
        return data.batch(plan, i)

    for step in steps.values():
        for _ in range(warmup):
            step(next_batch())
    sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    rates = []
    for _ in range(windows):
        for name, step in steps.items():
            step(next_batch())
            sync(device)
            started = time.perf_counter()
            for _ in range(steps_per_window):
                step(next_batch())
            sync(device)
            seconds[name].append((time.perf_counter() - started) / steps_per_window)
        rates.append(matmul())
    return seconds, rates


def time_evaluation(trainer: Any, n_digits: int, repeats: int = 3) -> dict[str, Any]:
    """The trainer's test metrics (its evaluator's held_out_metrics: model.predict and evaluate in
    eval_batch_size batches, summed on the device) on the first n_digits test digits: seconds per pass
    (median of `repeats` after one untimed, which counts the FLOPs of a pass)."""
    evaluator = trainer.evaluator
    x, y = trainer.data.x_test[:n_digits], trainer.data.y_test[:n_digits]
    with FlopCounterMode(display=False) as counter:  # also the warm-up pass
        evaluator.held_out_metrics(x, y)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        evaluator.held_out_metrics(x, y)  # returns floats: the device has finished
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    flops = int(counter.get_total_flops())
    return {
        "digits": len(x),
        "batch_size": evaluator.batch_size,
        "seconds": median,
        "digits_per_s": len(x) / median,
        "flops_per_digit": flops / len(x),
        "flop_per_s": flops / median,
        "pass_seconds": seconds,
    }


def profile(trainer: Any, steps: int, top: int) -> list[dict[str, Any]]:
    """The `top` operations of the trainer's step by time spent in them (self time), over `steps` steps, with
    their share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    data, device = trainer.data, trainer.device

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    plan = data.plan_epoch()
    with torch_profile(activities=activities) as prof:
        for i in range(steps):
            trainer.train_step(data.batch(plan, i % data.steps_per_epoch))
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0 and not e.key.startswith("ProfilerStep")]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {
            "op": e.key,
            "calls": e.count,
            "ms_per_step": getattr(e, attr) / 1e3 / steps,
            "share": getattr(e, attr) / total,
        }
        for e in events[:top]
    ]


class MatmulRate:
    """FLOP/s of an n x n matmul in `dtype` on the device, at the run's matmul precision."""

    def __init__(self, device: torch.device, n: int, dtype: torch.dtype) -> None:
        self.device, self.n, self.dtype = device, n, dtype
        self.a, self.b, self.out = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(3))
        # About 2 GFLOP per burst on a CPU, 200 GFLOP on a GPU: long enough to time, short enough to repeat.
        self.inner = max(1, int((2e9 if device.type == "cpu" else 2e11) // (2 * n**3)))
        self.burst()  # warm-up

    def burst(self) -> float:
        sync(self.device)
        started = time.perf_counter()
        for _ in range(self.inner):
            torch.mm(self.a, self.b, out=self.out)
        sync(self.device)
        return 2 * self.n**3 * self.inner / (time.perf_counter() - started)

    def measure(self, repeats: int) -> dict[str, Any]:
        rates = [self.burst() for _ in range(repeats)]
        return {
            "n": self.n,
            "dtype": str(self.dtype).removeprefix("torch."),
            "repeats": repeats,
            "flop_per_s": statistics.median(rates),
            "max_flop_per_s": max(rates),
        }


def figures(flops: int, seconds: list[float], samples: int, peak: float, steps_per_epoch: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "flops_per_step": flops,
        "seconds_per_step": median,
        "seconds_per_epoch": steps_per_epoch * median,
        "steps_per_s": 1 / median,
        "samples_per_s": samples / median,
        "flop_per_s": flops / median,
        "share_of_matmul": flops / median / peak,
        "window_seconds_per_step": seconds,
    }


# The steps timed beside the trainer's own ("real"), as the report names them.
LABELS = {"eager": "eager", "reference": "reference", "reference_eager": "reference, eager"}


def bench_model(name: str, args: argparse.Namespace, trainer: Any, rate: MatmulRate, eager: Any) -> dict[str, Any]:
    """`trainer`: what dgm_run.train.build returned; `eager`: the same model's trainer without the CUDA graph
    when `trainer` captures its step, else None."""
    started = time.perf_counter()
    data, model = trainer.data, trainer.model
    samples = data.samples_per_step
    batch = data.batch(data.plan_epoch(), 0)
    steps = {"real": trainer.train_step}
    if eager is not None:
        steps["eager"] = eager.train_step
    ref = reference_for(model)
    if ref is not None:
        check = compare(model, ref, batch, autocast=trainer.autocast)  # before any step: the same parameters
        steps["reference"] = trainer.step_for(ref, "elbo")
        if eager is not None:
            steps["reference_eager"] = eager.step_for(reference_for(eager.model), "elbo")
    flops = {kind: count_flops(step, batch) for kind, step in steps.items()}
    seconds, rates = time_interleaved(steps, trainer, args.warmup, args.windows, args.steps_per_window, rate.burst)
    peak = statistics.median(rates)
    top = profile(trainer, args.steps_per_window, args.profile) if args.profile else None
    evaluation = time_evaluation(trainer, args.eval_digits)
    evaluation["share_of_matmul"] = evaluation["flop_per_s"] / rate.burst()
    result = {
        "model": name,
        "class": type(model).__name__,
        "overrides": overrides(name, args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": data.batch_size,
        "labelled_batch_size": data.labelled_batch_size,
        "samples_per_step": samples,
        "phases": [(e.phase, e.steps) for e in model.schedule],
        "matmul_flop_per_s": peak,
        "window_matmul_flop_per_s": rates,
        **figures(flops["real"], seconds["real"], samples, peak, data.steps_per_epoch),
        "eval": evaluation,
    }
    if top is not None:
        result["profile"] = top
    for kind in LABELS:
        if kind in steps:
            result[kind] = figures(flops[kind], seconds[kind], samples, peak, data.steps_per_epoch)
    if eager is not None:
        result["graph_speedup"] = result["samples_per_s"] / result["eager"]["samples_per_s"]
    if ref is not None:
        result["reference"].update(
            check,
            description="x tiled over the labels; q(a|x) and every first layer "
            "that sees y on [inputs, onehot(y)] for each label; q(y|.) once per x",
        )
        result["flop_ratio"] = flops["real"] / flops["reference"]  # real step's FLOPs over the reference's
        result["speed_ratio"] = result["samples_per_s"] / result["reference"]["samples_per_s"]  # real over reference
        if eager is not None:
            result["eager_speed_ratio"] = result["eager"]["samples_per_s"] / result["reference_eager"]["samples_per_s"]
    result["bench_seconds"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------- report
def si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def markdown(report: dict[str, Any]) -> str:
    mm = report["matmul"]
    lines = [
        f"Device: {reports.describe(report)}; matmul rate {si(mm['flop_per_s'], 'FLOP/s')} "
        f"({mm['n']}x{mm['n']} {mm['dtype']}, median of {mm['repeats']}); precision {report['precision']}"
        f"{'' if report['compile'] == 'false' else ', compiled: ' + report['compile']}; "
        f"{report['windows']} windows x {report['steps_per_window']} steps{' (tiny)' if report['tiny'] else ''}",
        "",
        "| model | samples/step | samples/s | s/epoch | FLOPs/step | FLOP/s | matmul rate meanwhile "
        "| share of matmul |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(label: str, r: dict[str, Any], samples: int, peak: float) -> str:
        return (
            f"| {label} | {samples} | {r['samples_per_s']:.1f} | {r['seconds_per_epoch']:.2f} | "
            f"{si(r['flops_per_step'])} | "
            f"{si(r['flop_per_s'])} | {si(peak)} | {100 * r['share_of_matmul']:.1f} % |"
        )

    for r in report["models"].values():
        lines.append(row(r["model"], r, r["samples_per_step"], r["matmul_flop_per_s"]))
        lines += [
            row(f"{r['model']} ({label})", r[kind], r["samples_per_step"], r["matmul_flop_per_s"])
            for kind, label in LABELS.items()
            if kind in r
        ]
    graphed = [r for r in report["models"].values() if "graph_speedup" in r]
    if graphed:
        lines += ["", "| model | ms/step, CUDA graph | ms/step, eager | speed-up |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {r['model']} | {1e3 * r['seconds_per_step']:.3f} | {1e3 * r['eager']['seconds_per_step']:.3f} | "
            f"{r['graph_speedup']:.1f}x |"
            for r in graphed
        ]
    lines += [
        "",
        "Evaluation (model.predict and evaluate on test digits, as the trainer runs it):",
        "",
        "| model | digits | digits/s | FLOPs/digit | FLOP/s | share of matmul | training step's share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["models"].values():
        e = r["eval"]
        lines.append(
            f"| {r['model']} | {e['digits']} | {e['digits_per_s']:.0f} | {si(e['flops_per_digit'])} | "
            f"{si(e['flop_per_s'])} | {100 * e['share_of_matmul']:.1f} % | {100 * r['share_of_matmul']:.1f} % |"
        )
    refs = [r for r in report["models"].values() if "reference" in r]
    if refs:
        lines += [
            "",
            "| model | FLOPs real / reference | speed real / reference | the same, eager | loss |max diff| (rel) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in refs:
            ref = r["reference"]
            eager_ratio = f"{r['eager_speed_ratio']:.2f}x" if "eager_speed_ratio" in r else ""
            lines.append(
                f"| {r['model']} | {r['flop_ratio']:.3f} | {r['speed_ratio']:.2f}x | {eager_ratio} | "
                f"{ref['max_abs_diff']:.2e} ({ref['max_rel_diff']:.1e}) |"
            )
    for r in report["models"].values():
        if "profile" in r:
            lines += [
                "",
                f"Profile of {r['model']} (self time, {'device' if report['device'] != 'cpu' else 'CPU'}):",
                "",
                "| operation | calls/step | ms/step | share |",
                "| --- | ---: | ---: | ---: |",
            ]
            lines += [
                f"| {e['op']} | {e['calls'] / report['steps_per_window']:.0f} | {e['ms_per_step']:.2f} | "
                f"{100 * e['share']:.1f} % |"
                for e in r["profile"]
            ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--windows", type=int, default=None, help="timed windows (default 7; tiny 2)")
    parser.add_argument("--steps-per-window", type=int, default=None, help="steps per window (default 4; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; tiny 1)")
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="n of the n x n matmul (default 2048 on CPU, 8192 on CUDA; tiny 256)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "tf32", "bf16"),
        default="auto",
        help="trainer.precision of every model (default auto, as dgm-run)",
    )
    parser.add_argument(
        "--compile",
        choices=("false", *COMPILE_MODES),
        default="false",
        help="trainer.compile: a torch.compile mode (default false), for the reference path too",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print the N operations taking the most time in the real step",
    )
    parser.add_argument(
        "--eval-digits", type=int, default=None, help="test digits through the evaluation (default 1000; tiny 40)"
    )
    parser.add_argument("--tiny", action="store_true", help="small networks and batches: seconds, for CI")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="further dgm-run overrides of every model benchmarked, e.g. model.samples=1",
    )
    args = parser.parse_args(argv)
    for key, full, tiny in (("windows", 7, 2), ("steps_per_window", 4, 2), ("warmup", 3, 1), ("eval_digits", 1000, 40)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    if min(args.windows, args.steps_per_window, args.eval_digits) < 1 or args.warmup < 0:
        parser.error("--windows, --steps-per-window and --eval-digits must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to PyTorch")
    started = time.perf_counter()
    splits = synthetic_digits(1000, 200) if args.tiny else synthetic_digits(60_000, 10_000)
    report: dict[str, Any] = {}
    rate = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            trainer = build_trainer(compose(overrides(name, args)), Path(tmp) / name, splits=splits)
            if rate is None:
                # After the first trainer has set the run's matmul precision (auto: fp32 on CPU, TF32 on
                # CUDA), at which every model runs: the matmul rate at that setting, in bfloat16 when
                # the trainer autocasts to it.
                device = trainer.device
                n = args.matmul_size or (256 if args.tiny else 8192 if device.type == "cuda" else 2048)
                rate = MatmulRate(device, n, getattr(trainer.autocast, "fast_dtype", torch.float32))
                report = {
                    **reports.header(device),
                    "tiny": args.tiny,
                    "precision": args.precision,
                    "compile": args.compile,
                    "windows": args.windows,
                    "steps_per_window": args.steps_per_window,
                    "warmup": args.warmup,
                    "matmul": rate.measure(3 if args.tiny else 7),
                    "models": {},
                }
            eager = (
                build_trainer(
                    compose([*overrides(name, args), "trainer.cuda_graph=false"]),
                    Path(tmp) / f"{name}_eager",
                    splits=splits,
                )
                if trainer.cuda_graph
                else None
            )
            r = report["models"][name] = bench_model(name, args, trainer, rate, eager)
            print(
                f"{name}: {r['samples_per_s']:.1f} samples/s ({r['seconds_per_epoch']:.2f} s per epoch of "
                f"{len(splits.x_train)} digits), {si(r['flops_per_step'], 'FLOP')}/step, "
                f"{100 * r['share_of_matmul']:.1f} % of matmul; evaluation {r['eval']['digits_per_s']:.0f} digits/s, "
                f"{100 * r['eval']['share_of_matmul']:.1f} % ({r['bench_seconds']:.1f} s)",
                file=sys.stderr,
            )
    report["total_seconds"] = time.perf_counter() - started
    print(markdown(report))
    reports.save(report, args.json)
    return report


def command() -> None:
    """The installed command: main() without handing its report to sys.exit."""
    main()


if __name__ == "__main__":
    command()
