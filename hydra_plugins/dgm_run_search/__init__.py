"""dgm-run's Optuna sweeper for Hydra (hydra/sweeper=dgm_optuna): the search is dgm_run/search.py; this
module only registers it, and imports without Optuna installed (Hydra imports every plugin it finds).
No `from __future__ import annotations`: Hydra's scan executes plugin modules outside sys.modules, where a
dataclass cannot resolve string annotations."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class SearchConf:
    _target_: str = "hydra_plugins.dgm_run_search.OptunaSearch"
    _recursive_: bool = False  # the sampler and pruner are made by the search, from their configs
    study_name: str = "search"
    # null: SQLite in the sweep directory; journal:PATH for a journal file; or a database URL.
    storage: Optional[str] = None
    direction: str = "minimize"
    # Trials the study holds when the search ends (pruned ones count; interrupted ones do not).
    n_trials: int = 20
    # Trials launched together (the launcher decides whether they run side by side).
    n_jobs: int = 1
    sampler: Optional[Any] = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    # null: no pruning; e.g. {_target_: optuna.pruners.MedianPruner, n_startup_trials: 5}
    pruner: Optional[Any] = None
    # The search space: {key: choice(...) | interval(low, high) | range(a, b) | tag(log, interval(...))}.
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="dgm_optuna", node=SearchConf, provider="dgm_run")


class OptunaSearch(Sweeper):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = OmegaConf.create(cfg)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from dgm_run.search import run_search

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return run_search(
            self.cfg,
            sweep_dir,
            arguments,
            lambda jobs, first: self.launcher.launch([tuple(j) for j in jobs], initial_job_idx=first),
        )
