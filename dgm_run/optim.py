"""Per-phase optimizers, their learning-rate decay, and the checks of a model's schedule."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any, Optional

import torch

from dgm_run.config import OptimizerConfig
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel, ScheduleEntry


def check_schedule(model: GenerativeModel, schedule: list[ScheduleEntry], cfg: OptimizerConfig) -> None:
    """Every scheduled phase is one of the model's, every phase it needs is scheduled, and every
    per-phase optimizer override names one of its phases."""
    phases = ", ".join(model.phases)
    for i, entry in enumerate(schedule):
        if entry.phase not in model.phases:
            raise UserError(
                f"model.schedule[{i}].phase: '{entry.phase}' is not a phase of {model.label}; phases: {phases}"
            )
        if not model.phase_parameters(entry.phase):
            trainable = ", ".join(p for p in model.phases if model.phase_parameters(p))
            raise UserError(
                f"model.schedule[{i}].phase: {model.label} has nothing to train in phase "
                f"'{entry.phase}'; schedule only: {trainable}"
            )
    scheduled = {entry.phase for entry in schedule}
    missing = [p for p in model.required_phases if p not in scheduled]
    if missing:
        raise UserError(
            f"model.schedule: {model.label} needs the phases {', '.join(model.required_phases)} "
            f"(got {', '.join(sorted(scheduled))})"
        )
    for phase in cfg.phases:
        if phase not in model.phases:
            raise UserError(f"optimizer.phases.{phase}: not a phase of {model.label}; phases: {phases}")


def prepare_gradients(
    params: list[torch.nn.Parameter], prior: float, norm: Optional[float], value: Optional[float]
) -> Callable[..., None]:
    """An optimizer step pre-hook on the gradients of `params` (the optimizer's), in place: the weight
    prior's gradient, `prior` * W, added to every weight matrix's (not to biases: parameters of one
    dimension), then the total norm scaled down to `norm`, then every element clamped to +-`value` (0 or
    None: that part off), the order of the ADGM/SDGM authors' code. A hook runs between the backward and the
    update, also in a step captured as a CUDA graph, and goes with the optimizer wherever it is used. No host
    sync: clip_grad_norm_ is not asked to check the norm for NaN (the loss meter catches a non-finite loss)."""
    weights = [p for p in params if p.dim() > 1]

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if prior:
            with_grad = [p for p in weights if p.grad is not None]
            torch._foreach_add_([p.grad for p in with_grad], with_grad, alpha=prior)
        if norm is not None:
            torch.nn.utils.clip_grad_norm_(params, norm)
        if value is not None:
            torch.nn.utils.clip_grad_value_(params, value)

    return hook


def build_optimizer(
    params: list[torch.nn.Parameter], cfg: OptimizerConfig, phase: str, capturable: bool = False
) -> torch.optim.Optimizer:
    """The optimizer of `phase`, adding the weight prior's gradient and clipping when optimizer.weight_prior,
    clip_norm or clip_value is set.
    `capturable`: its learning rate a tensor that the decay updates in place and its state on the device,
    so that a step captured in a CUDA graph sees both."""
    override = cfg.phases.get(phase)

    def setting(key: str) -> Any:
        """The phase's override of `key` where it has one, else the optimizer's."""
        value = getattr(override, key) if override else None
        return getattr(cfg, key) if value is None else value

    lr, betas, weight_decay = setting("lr"), tuple(setting("betas")), setting("weight_decay")
    extra = {"capturable": True} if capturable else {}  # a flag of Adam and AdamW; SGD has none
    if capturable:
        lr = torch.tensor(lr, device=params[0].device)
    # fused: one kernel for every parameter's update, the same algorithm.
    if cfg.name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=weight_decay, fused=True
        )
    elif not setting("bias_correction"):
        optimizer = UncorrectedAdam(params, lr=lr, betas=betas, eps=cfg.eps, weight_decay=weight_decay)
    else:
        adam = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        optimizer = adam(params, lr=lr, betas=betas, eps=cfg.eps, weight_decay=weight_decay, fused=True, **extra)
    prior, clip_norm, clip_value = setting("weight_prior"), setting("clip_norm"), setting("clip_value")
    if prior or clip_norm is not None or clip_value is not None:
        optimizer.register_step_pre_hook(prepare_gradients(list(params), prior, clip_norm, clip_value))
    return optimizer


class UncorrectedAdam(torch.optim.Optimizer):
    """Adam without bias correction (optimizer.bias_correction=false): the moments, started at zero, are used as
    they are, as in Kingma's AdaM (dpkingma/nips14-ssl, adam.py), which trained M2 of M1+M2. Its step is Adam's
    times (1 - beta1^t) / sqrt(1 - beta2^t): 3.2x at the first, 6.6x near the twelfth, within 3 % from the
    3,000th. weight_decay is added to the gradient, as Adam's. It keeps no step count, so a step captured in a
    CUDA graph replays it exactly; its lr may be a tensor (capturable), which the decay updates in place."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        lr: float | torch.Tensor,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            for p in params:
                if not self.state[p]:
                    self.state[p].update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denominators, group["eps"])
            updates = torch._foreach_div(exp_avg, denominators)
            torch._foreach_mul_(updates, group["lr"])
            torch._foreach_sub_(params, updates)


def step_decay(cfg: OptimizerConfig, base_lr: float) -> Callable[[int], float]:
    """Multiplier of the learning rate after `epoch` epochs: step decay floored at min_lr."""
    floor = cfg.min_lr / base_lr
    return lambda epoch: max(cfg.lr_decay ** (epoch // cfg.lr_decay_every_epochs), floor)


class PhaseOptimizers:
    """One optimizer per scheduled phase over that phase's parameters, each with its decay per epoch."""

    def __init__(
        self, model: GenerativeModel, schedule: list[ScheduleEntry], cfg: OptimizerConfig, capturable: bool = False
    ) -> None:
        check_schedule(model, schedule, cfg)
        used = dict.fromkeys(entry.phase for entry in schedule)
        self.optimizers = {p: build_optimizer(model.phase_parameters(p), cfg, p, capturable) for p in used}
        self.schedulers = {
            p: torch.optim.lr_scheduler.LambdaLR(opt, step_decay(cfg, float(opt.param_groups[0]["lr"])))
            for p, opt in self.optimizers.items()
        }

    def end_epoch(self) -> None:
        with warnings.catch_warnings():
            # The decay follows epochs, also for a phase whose schedule entry has not started yet.
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
            for scheduler in self.schedulers.values():
                scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {p: float(s.get_last_lr()[0]) for p, s in self.schedulers.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {p: o.state_dict() for p, o in self.optimizers.items()},
            "schedulers": {p: s.state_dict() for p, s in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p, opt in self.optimizers.items():
            live = [dict(group) for group in opt.param_groups]
            opt.load_state_dict(state["optimizers"][p])
            for group, before in zip(opt.param_groups, live):
                keep_settings(group, before)
            self.schedulers[p].load_state_dict(state["schedulers"][p])


def keep_settings(group: dict[str, Any], before: dict[str, Any]) -> None:
    """A param group just loaded from a checkpoint, given its settings `before` the load: each setting
    that was a tensor (a capturable optimizer's lr and the scheduler's initial_lr) takes the loaded value
    into that same tensor, and one that was a number stays a number.

    torch's load replaces the group's dict with the saved one, whose tensors were mapped to the CPU.
    The decay writes into the live lr tensor in place and a captured step reads that very tensor, so a
    replaced one would leave the decay unseen by the graph (a CPU lr is baked in at capture)."""
    for key in ("lr", "initial_lr"):
        if key not in group or key not in before:
            continue
        value = float(group[key])
        if isinstance(before[key], torch.Tensor):
            before[key].fill_(value)
            group[key] = before[key]
        else:
            group[key] = value
