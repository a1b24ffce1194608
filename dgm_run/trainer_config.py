"""The schema of the `trainer` group: how long to train, how to evaluate and log, which checkpoints to keep.

One of the schemas of config.py (which imports it): its defaults are the one source of every
trainer default; configs/trainer/*.yaml hold only what differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from dgm_run.checks import check, check_choice, check_positive
from dgm_run.data.base import MAX_REFERENCE

# The modes of torch.compile that trainer.compile takes, beside false (off) and true (the mode "default").
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def as_bool(value: Union[bool, str]) -> Union[bool, str]:
    """A boolean for true or false, also when written as a word: a config.yaml saved when trainer.compile and
    trainer.cuda_graph were strings holds 'false'; other values as they are."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    # When set, training stops after this many batches even if epochs remain.
    max_steps: Optional[int] = None
    # When set, training stops at the first batch after this much training time (evaluation
    # excluded), then evaluates. Wall time is not reproducible: such a run resumes to other numbers.
    max_minutes: Optional[float] = None
    # Unlabelled examples per batch (semi-supervised data adds data.labelled_batch_size labelled ones).
    batch_size: int = 100
    eval_every_epochs: int = 5
    eval_batch_size: int = 500
    # Checkpoints are written after an epoch's evaluation, on SIGTERM/SIGINT, at the end of training, and
    # between those at the first batch or epoch end this long after the last one (null: never between) and
    # every checkpoint_every_steps batches when set. A time interval, not every epoch: an epoch of a captured
    # step on a GPU can take less time than writing and syncing the checkpoint to disk.
    checkpoint_every_minutes: Optional[float] = 1.0
    checkpoint_every_steps: Optional[int] = None
    log_every_steps: int = 50
    # auto: TF32 matmuls on CUDA, plain fp32 on CPU. bf16 autocasts the forward pass: faster on a CPU with
    # native bf16 (AVX512-BF16/AMX), but it costs ADGM test accuracy (README, "Speed"), so it is opt-in.
    precision: str = "auto"
    # torch.compile of the loss: false (off), true (torch's default mode) or a mode of COMPILE_MODES; after
    # validation, false or the mode. Off by default: on CPU it gained nothing consistent, and compiling
    # delays the first step (README, "Speed").
    compile: Union[bool, str] = False
    # Capture the whole training step as one CUDA graph and replay it (the step of these small networks
    # is bound by kernel launches): true, false, or auto (on CUDA, unless compile's mode captures graphs
    # itself; graph.use_cuda_graph).
    cuda_graph: Union[bool, str] = "auto"
    # Bars for training and for every evaluation (what it computes, examples done).
    progress_bar: bool = True
    # Importance samples of the evaluation's log-likelihood in place of the model's own `model.iw_samples`
    # (null: the model's); a trainer key, so that a quick run evaluates quickly and resume= or evaluate=
    # may change it. Models without an importance-sampled log-likelihood have nothing to override.
    eval_iw_samples: Optional[int] = None
    # Samples whose FID, precision and recall against as many test digits (grey levels) each evaluation
    # reports, for models that sample MNIST-shaped images (eval/fid, eval/precision, eval/recall; 0: off).
    eval_fid_samples: int = 2000
    # A final metric (eval/... or valid/...) whose best value at an evaluation keeps checkpoints/best.pt;
    # best_mode: min or max, or auto (min for names with "error" or "loss", max for the others).
    best_metric: Optional[str] = None
    best_mode: str = "auto"
    # Stop after this many evaluations without a better best_metric.
    early_stop_patience: Optional[int] = None
    # CPU threads of torch's intra-op pool (null: torch's default, one per core). On a machine shared with
    # other jobs, threads that wait for each other's cores slow a step many times over (README, "Runs").
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        check_positive(
            self,
            "max_epochs",
            "max_steps",
            "batch_size",
            "eval_every_epochs",
            "eval_batch_size",
            "checkpoint_every_steps",
            "log_every_steps",
            "eval_iw_samples",
            "early_stop_patience",
            "threads",
        )
        check(
            0 <= self.eval_fid_samples <= MAX_REFERENCE,
            "eval_fid_samples",
            f"must be between 0 (off) and {MAX_REFERENCE} (got {self.eval_fid_samples})",
        )
        check_choice(self, "precision", ("auto", "fp32", "tf32", "bf16"))
        check_choice(self, "best_mode", ("auto", "min", "max"))
        check(
            self.best_metric is None or self.best_metric.startswith(("eval/", "valid/")),
            "best_metric",
            f"must name a held-out metric, eval/... or valid/... (got {self.best_metric})",
        )
        check(
            self.early_stop_patience is None or self.best_metric is not None,
            "early_stop_patience",
            "needs trainer.best_metric, the metric whose improvement it waits for",
        )
        for key in ("max_minutes", "checkpoint_every_minutes"):
            value = getattr(self, key)
            check(value is None or value > 0, key, f"must be > 0 (got {value})")
        self.compile, self.cuda_graph = as_bool(self.compile), as_bool(self.cuda_graph)
        if self.compile is True:
            self.compile = "default"
        check(
            self.compile is False or self.compile in COMPILE_MODES,
            "compile",
            f"'{self.compile}' is not allowed; choose one of false, true, {', '.join(COMPILE_MODES)}",
        )
        check(
            isinstance(self.cuda_graph, bool) or self.cuda_graph == "auto",
            "cuda_graph",
            f"'{self.cuda_graph}' is not allowed; choose one of auto, true, false",
        )
        check(
            not (self.compile == "reduce-overhead" and self.cuda_graph is True),
            "compile",
            "reduce-overhead captures CUDA graphs of its own; with trainer.cuda_graph=true use default or "
            "max-autotune-no-cudagraphs",
        )
