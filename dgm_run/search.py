"""Hyper-parameter search with Optuna: a Hydra sweeper (`hydra/sweeper=dgm_optuna`, registered by
hydra_plugins/dgm_run_search) whose study lives in a storage, so that an interrupted search resumes with the
same command and several processes share one study, and whose trials are pruned from the trainer's
evaluations.

The sweeper asks the study for a batch of trials, launches one job per trial through Hydra's launcher
(basic, joblib, SLURM), numbered as its trial, and tells the study each job's objective, or that it
was pruned or failed. A job learns its trial from the environment (DGM_RUN_TRIAL, DGM_RUN_STORAGE, set
through hydra.job.env_set) and reports its objective at every evaluation; when the pruner says so, it stops
training there. Trials that a signal interrupted are recorded as failed and do not count towards n_trials,
so the resumed search runs as many trials as are missing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dgm_run.errors import UserError
from dgm_run.files import write_text
from dgm_run.run_dir import ERROR_FILE

if TYPE_CHECKING:
    import optuna

    from dgm_run.trainer import Trainer

log = logging.getLogger(__name__)

TRIAL_ENV, STORAGE_ENV = "DGM_RUN_TRIAL", "DGM_RUN_STORAGE"
# Written into the sweep directory at the end, and into each trial's run directory.
RESULTS_FILE, TRIAL_FILE = "optimization_results.yaml", "trial.json"


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError('hydra/sweeper=dgm_optuna needs Optuna: pip install ".[optuna]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # dgm-run says what happens, in its own lines
    return optuna


def storage(url: Optional[str], sweep_dir: Path) -> Any:
    """The study's storage: SQLite in the sweep directory (null), a journal file (journal:PATH, for
    file systems where SQLite's locks are unreliable, such as NFS) or any database URL Optuna takes."""
    optuna = import_optuna()
    if url is None:
        return f"sqlite:///{(sweep_dir / 'optuna.db').absolute()}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


def distributions(params: DictConfig) -> dict[str, Any]:
    """Optuna distributions of hydra.sweeper.params, written in Hydra's sweep syntax: choice(...),
    interval(low, high), range(start, stop, step), with tag(log, ...) for a log scale."""
    optuna = import_optuna()
    parser = OverridesParser.create()
    result = {}
    for key, value in params.items():
        override: Override = parser.parse_override(f"{key}={value}")
        sweep = override.value()
        log_scale = override.is_sweep_override() and "log" in sweep.tags
        if isinstance(sweep, ChoiceSweep):
            # Choices travel as override strings ("[300,300]"): Optuna's categories must be plain values.
            choices = list(override.sweep_string_iterator())
            result[key] = optuna.distributions.CategoricalDistribution(choices)
        elif isinstance(sweep, RangeSweep):
            result[key] = optuna.distributions.IntDistribution(
                int(sweep.start), int(sweep.stop) - 1, step=int(sweep.step), log=log_scale
            )
        elif isinstance(sweep, IntervalSweep):
            ints = isinstance(sweep.start, int) and isinstance(sweep.end, int)
            kind = optuna.distributions.IntDistribution if ints else optuna.distributions.FloatDistribution
            result[key] = kind(sweep.start, sweep.end, log=log_scale)
        else:
            raise UserError(
                f"hydra.sweeper.params.{key}: '{value}' is not a search space; use choice(...), "
                "interval(low, high), range(start, stop) or tag(log, interval(low, high))"
            )
    return result


def overrides_of(trial: optuna.trial.BaseTrial) -> list[str]:
    return [
        f"{key}={Transformer.encode(value) if not isinstance(value, str) else value}"
        for key, value in trial.params.items()
    ]


def counted(study: optuna.Study) -> int:
    """Trials that count towards n_trials: finished ones, but not those a signal interrupted."""
    states = import_optuna().trial.TrialState
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (states.COMPLETE, states.PRUNED)
        or (t.state == states.FAIL and not t.user_attrs.get("interrupted"))
    )


def run_search(
    cfg: DictConfig, sweep_dir: Path, arguments: list[str], launch: Callable[[list[list[str]], int], list[Any]]
) -> optuna.Study:
    """The search of hydra.sweeper `cfg`: batches of n_jobs trials through `launch` until the study holds
    n_trials that count; the best trial written to SWEEP_DIR/optimization_results.yaml."""
    optuna = import_optuna()
    from hydra.core.utils import JobStatus

    fixed = list(arguments)
    given = {a.split("=", 1)[0].lstrip("+~") for a in fixed}
    # A key set on the command line leaves the search space.
    space = distributions(OmegaConf.create({k: v for k, v in cfg.params.items() if k not in given}))
    url = storage(cfg.storage, sweep_dir)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=url,
        load_if_exists=True,
        direction=cfg.direction,
        sampler=instantiate(cfg.sampler) if cfg.sampler else None,
        pruner=instantiate(cfg.pruner) if cfg.pruner else None,
    )
    log.info("study %s in %s: %d of %d trials done", cfg.study_name, cfg.storage or url, counted(study), cfg.n_trials)
    failure = None
    while (missing := cfg.n_trials - counted(study)) > 0:
        trials = [study.ask(space) for _ in range(min(cfg.n_jobs, missing))]
        env = [f"+hydra.job.env_set.{STORAGE_ENV}='{cfg.storage or url}'"]
        try:
            returns = []
            # Launched so that a job's number is its trial's (another process may hold the numbers between).
            for group in consecutive(trials):
                returns += launch(
                    [[*fixed, *overrides_of(t), f"+hydra.job.env_set.{TRIAL_ENV}={t.number}", *env] for t in group],
                    group[0].number,
                )
            for t, ret in zip(trials, returns):
                run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
                t.set_user_attr("run_dir", str(run_dir))
                if ret.status != JobStatus.COMPLETED or (run_dir / ERROR_FILE).is_file():
                    study.tell(t, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                    failure = failure or (ret if ret.status != JobStatus.COMPLETED else None)
                elif "pruned_at_epoch" in _frozen(study, t.number).user_attrs:
                    study.tell(t, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
                else:
                    study.tell(t, float(ret.return_value), skip_if_finished=True)
                write_trial(run_dir, _frozen(study, t.number), cfg)
        except BaseException:
            # A signal or a crash, in a job or in telling the study how the jobs ended: the trials not told yet
            # are to be run again.
            for t in trials:
                if _frozen(study, t.number).state == optuna.trial.TrialState.RUNNING:
                    t.set_user_attr("interrupted", True)
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
            raise
    write_results(study, sweep_dir)
    if failure is not None:
        _ = failure.return_value  # raises the failed job's error, as Hydra's own sweepers do
    return study


def consecutive(trials: list[Any]) -> list[list[Any]]:
    """The trials in runs of consecutive numbers."""
    groups: list[list[Any]] = []
    for t in trials:
        if groups and groups[-1][-1].number + 1 == t.number:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def write_trial(run_dir: Path, trial: optuna.trial.FrozenTrial, cfg: DictConfig) -> None:
    if run_dir.is_dir():
        write_text(
            run_dir / TRIAL_FILE,
            json.dumps(
                {
                    "study": cfg.study_name,
                    "trial": trial.number,
                    "state": trial.state.name,
                    "value": trial.value,
                    "params": trial.params,
                    "intermediate_values": trial.intermediate_values,
                },
                indent=2,
            )
            + "\n",
        )


def write_results(study: optuna.Study, sweep_dir: Path) -> None:
    """The best trial's value, parameters and run directory, and the count of trials by state."""
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    try:
        best = study.best_trial
    except ValueError:  # no trial completed
        best = None
    results = {"name": study.study_name, "trials": states}
    if best is not None:
        results.update(
            best_value=best.value,
            best_params=best.params,
            best_trial=best.number,
            best_run_dir=best.user_attrs.get("run_dir"),
        )
    write_text(sweep_dir / RESULTS_FILE, yaml.safe_dump(results, sort_keys=False))
    if best is not None:
        log.info(
            "best trial %d: %s %g, run directory %s", best.number, study.study_name, best.value, results["best_run_dir"]
        )


class TrialReporter:
    """In a job of the search: reports the objective at every evaluation to its trial and ends training
    when the pruner says so (Trainer.on_epoch_end)."""

    def __init__(self, objective: str, sweeper: DictConfig) -> None:
        optuna = import_optuna()
        self.objective = objective
        self.study = optuna.load_study(
            study_name=sweeper.study_name,
            storage=storage(os.environ[STORAGE_ENV], Path(".")),
            pruner=instantiate(sweeper.pruner) if sweeper.pruner else None,
        )
        frozen = _frozen(self.study, int(os.environ[TRIAL_ENV]))
        # The trial object of a trial that another process asked for: Optuna keeps its id private.
        self.trial = optuna.trial.Trial(self.study, frozen._trial_id)

    def __call__(self, trainer: Trainer) -> bool:
        if trainer.evaluated_step != trainer.step or self.objective not in trainer.metrics:
            return False
        value = float(trainer.metrics[self.objective])
        self.trial.report(value, trainer.epoch)
        if not self.trial.should_prune():
            return False
        self.trial.set_user_attr("pruned_at_epoch", trainer.epoch)
        log.warning(
            "trial %d pruned at epoch %d: %s %g is behind the other trials there",
            self.trial.number,
            trainer.epoch,
            self.objective,
            value,
        )
        return True


def trial_reporter(objective: Optional[str], sweeper: DictConfig) -> Optional[TrialReporter]:
    """The reporter of a job that the search launched; None for any other run."""
    if TRIAL_ENV not in os.environ or objective is None:
        return None
    return TrialReporter(objective, sweeper)
