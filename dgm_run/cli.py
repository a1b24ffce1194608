"""The `dgm-run` command: a Hydra app whose user errors end in one line and a non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from dgm_run import run_dir as directories
from dgm_run.composition import SCHEMA_GROUP, option_nodes, register_schemas
from dgm_run.device import gpu_for_job
from dgm_run.errors import Interrupted, UserError, WriteError, fail
from dgm_run.files import write_text
from dgm_run.metrics import headline
from dgm_run.run_dir import ERROR_FILE, take_back
from dgm_run.search import trial_reporter
from dgm_run.train import CHECKPOINT, evaluate_run, evaluation_paths, run
from hydra_plugins.dgm_run_search import OptunaSearch

log = logging.getLogger(__name__)

# A resumed run reuses its own directory and keeps the .hydra/ files of its first start; an evaluation
# writes into the evaluation/ folder of the run it evaluates (evaluation-best/ for its best.pt).
OmegaConf.register_new_resolver(
    "dgm_run_dir",
    lambda resume, evaluate, default: resume or (evaluate and str(evaluation_paths(Path(evaluate))[2])) or default,
    replace=True,
)
OmegaConf.register_new_resolver("dgm_hydra_subdir", lambda resume: None if resume else ".hydra", replace=True)
# device=cuda_per_job: the job number of a sweep picks the GPU (a single run is job 0).
OmegaConf.register_new_resolver(
    "dgm_gpu_for_job", lambda: gpu_for_job(OmegaConf.select(HydraConfig.get(), "job.num", default=0) or 0), replace=True
)
# A sweep job's directory: outputs/multirun/DATE/TIME/<job_name(...)>.
OmegaConf.register_new_resolver("dgm_job_name", directories.job_name, replace=True)
# The groups `dgm-run --help` lists: those users choose from, not Hydra's own nor the schemas.
OmegaConf.register_new_resolver(
    "dgm_config_groups",
    lambda: GlobalHydra.instance().hydra.format_config_groups(
        lambda group: group.partition("/")[0] not in ("hydra", SCHEMA_GROUP)
    ),
    replace=True,
)
# Every composition, the app's and _allowed_keys', extends the schemas of dgm_run.config.
register_schemas()
# dgm-run's own sweeper (hydra/sweeper=dgm_optuna), registered by hand as well: Hydra's scan of the
# hydra_plugins package does not see the modules of an editable install.
Plugins.instance().register(OptunaSearch)

# Hydra plugins that come with an optional extra of the package.
PLUGIN_EXTRAS = {
    "hydra/launcher/joblib": "joblib",
    "hydra/launcher/submitit_slurm": "slurm",
    "hydra/launcher/submitit_local": "slurm",
}


@hydra.main(version_base="1.3", config_path="pkg://dgm_run.configs", config_name="config")
def app(cfg: DictConfig) -> dict[str, float]:
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "evaluate="))]
    try:
        if cfg.get("evaluate") is not None:
            if cfg.get("resume") is not None:
                raise UserError("evaluate= and resume= exclude each other: resume a run, then evaluate it")
            metrics = evaluate_run(Path(cfg.evaluate), Path(hydra_cfg.runtime.output_dir), overrides)
        else:
            notice = None if cfg.get("resume") is not None else experiment_notice(hydra_cfg.runtime.choices)
            if notice:
                log.warning(notice)
            metrics = run(
                cfg,
                Path(hydra_cfg.runtime.output_dir),
                overrides,
                group_choices(hydra_cfg.runtime.choices),
                on_epoch_end=trial_reporter(cfg.get("objective"), hydra_cfg.sweeper),
            )
        return objective(metrics, cfg.get("objective"))
    except UserError as err:
        message = f"{err}{after_write_error(cfg, hydra_cfg)}" if isinstance(err, WriteError) else str(err)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # Reported now, in one line, and the sweep goes on. The job's directory says why it has no
            # metrics.json (scripts/results_table.py shows it), and main() names the failed jobs from those
            # files when the sweep ends, whichever process ran them. The job returns rather than raises, so that
            # Hydra does not report it a second time.
            job = f"job {hydra_cfg.job.num} ({' '.join(overrides) or 'no overrides'})"
            print(f"dgm-run: error: {job} failed: {message}", file=sys.stderr)
            with contextlib.suppress(WriteError):  # the disk that refused a run's file may refuse this one too
                write_text(Path(hydra_cfg.runtime.output_dir) / ERROR_FILE, f"{message}\n")
            return worst_value(hydra_cfg) if cfg.get("objective") is not None else {}
        take_back(hydra_cfg)
        fail(message)
    except Interrupted as err:
        run_dir = cfg.resume or hydra_cfg.runtime.output_dir
        print(f"dgm-run: stopped by {err}; checkpoint saved. Resume with: dgm-run resume={run_dir}", file=sys.stderr)
        sys.exit(128 + err.signum)


class QuietLibraries(Callback):
    """Keeps what sweeper plugins bring along out of dgm-run's output (configs/config.yaml, hydra.callbacks):
    alembic, which Optuna imports, lists its plugins at INFO through the root logger, and Optuna writes its
    own lines, with colour codes, to stderr (study created, every trial, which Hydra's sweeper lines already
    say). Before the sweeper is made, both are set to warnings, and Optuna's go through the log's handlers."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")):
            import optuna  # the sweeper imports it next; here first, so that its logging can be set

            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()
            optuna.logging.set_verbosity(optuna.logging.WARNING)


def group_choices(choices: DictConfig) -> dict[str, str]:
    """The options chosen in the config groups users choose from (not Hydra's own nor the schemas), as typed
    (model=adgm, data=digits, ...), model and data first: what the HParams dashboard shows beside the values."""
    chosen = {group: str(option) for group, option in choices.items() if "/" not in group and option is not None}
    return dict(sorted(chosen.items(), key=lambda item: item[0] not in ("model", "data")))


def experiment_notice(choices: DictConfig) -> Optional[str]:
    """A line naming the experiment made for this model on this data, when the run goes without it and that
    experiment sets the model's or the data's values (e.g. model=avb is sized for its toy data, and
    experiment=avb_mnist for MNIST); None otherwise, and for the trials of a search (hparams_search), which
    chooses its own values."""
    if choices.get("experiment") is not None or choices.get("hparams_search") is not None:
        return None
    # Shortest name first: the model's paper experiment (adgm_mnist) before its variants (adgm_2015_code).
    for name, node in sorted(option_nodes("experiment").items(), key=lambda item: len(item[0])):
        chosen = {
            key.removeprefix("override /"): value
            for entry in node.get("defaults", [])
            if isinstance(entry, DictConfig)
            for key, value in entry.items()
        }
        sets = [f"{group}.{key}" for group in ("model", "data") for key in node.get(group, {})]
        if sets and chosen.get("model") == choices.get("model") and chosen.get("data") == choices.get("data"):
            return (
                f"model={choices.model} data={choices.data} runs the model's own defaults; "
                f"experiment={name} has the settings for this data ({', '.join(sets)})"
            )
    return None


def after_write_error(cfg: DictConfig, hydra_cfg: DictConfig) -> str:
    """What to do after a write failed (a full disk, a read-only folder): nothing intact was replaced, so make
    room and go on from there; for a run, from its last good checkpoint."""
    fix = "; free space or make the folder writable, then"
    if cfg.get("evaluate") is not None:
        return f"{fix} evaluate again (the run's own files were only read)"
    run_dir = Path(cfg.get("resume") or hydra_cfg.runtime.output_dir)
    if (run_dir / CHECKPOINT).is_file():
        return f"{fix} resume from the last good checkpoint, {run_dir / CHECKPOINT}: dgm-run resume={run_dir}"
    return f"{fix} start the run again (it had written no checkpoint)"


def worst_value(hydra_cfg: DictConfig) -> float:
    """What a failed trial of a search returns: the worst value in the search's direction, which Optuna records
    like any other (it refuses NaN, and a raised error would end the whole search)."""
    return float("-inf") if OmegaConf.select(hydra_cfg, "sweeper.direction") == "maximize" else float("inf")


def objective(metrics: dict[str, float], name: Optional[str]) -> Union[float, dict[str, float]]:
    """What the app returns to Hydra: the `objective` metric for a sweeper, or every final metric."""
    if name is None:
        return metrics
    if name not in metrics:
        raise UserError(
            f"objective={name} is not a final metric of this run (see metrics.json); "
            f"choose one of: {', '.join(headline(metrics))}"
        )
    return float(metrics[name])


def _allowed_keys(full_key: str) -> Optional[list[str]]:
    """The keys beside a misspelt one, from the config composed without the offending override
    (None when they cannot be told)."""
    parent = full_key.rpartition(".")[0]
    others = [
        a for a in sys.argv[1:] if not a.startswith("-") and not a.split("=")[0].lstrip("+~").startswith(full_key)
    ]
    try:
        with hydra.initialize_config_module("dgm_run.configs", version_base="1.3"):
            node = hydra.compose("config", overrides=others)
        node = OmegaConf.select(node, parent) if parent else node
        return [str(k) for k in node] if isinstance(node, DictConfig) else None
    except Exception:  # the listing is a courtesy; the error line stands without it
        return None


def describe(err: Exception) -> str:
    """One line for a Hydra composition error: the key or option and what is allowed."""
    if isinstance(err, MissingConfigException) and err.options:
        group, _, option = (err.missing_cfg_file or "").rpartition("/")
        message = f"{group}={option} is not a known option; choose one of: {', '.join(sorted(err.options))}"
        extra = PLUGIN_EXTRAS.get(f"{group}/{option}")
        return message + (
            f' (the plugin is not installed: pip install ".[{extra}]" in the dgm-run clone)' if extra else ""
        )
    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    if (
        isinstance(cause, OmegaConfBaseException)
        and full_key
        and not isinstance(cause, (ConfigKeyError, ConfigAttributeError))
    ):  # a value of the wrong type for its schema
        return f"{full_key}: {str(cause.msg).splitlines()[0]}"
    if isinstance(cause, OmegaConfBaseException) and full_key:
        allowed = _allowed_keys(full_key)
        if allowed == []:  # an open mapping such as optimizer.phases: new entries take a leading +
            override = next((a for a in sys.argv[1:] if a.startswith(full_key)), full_key + ".KEY=VALUE")
            return f"unknown key '{full_key}'; {full_key.rpartition('.')[0]} is empty here: add it with +{override}"
        return f"unknown key '{full_key}'" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
    return " ".join(str(err).split())


def report_sweep() -> None:
    """The last lines of a sweep: where its runs are, the table of their results and how to look at them."""
    if directories.sweep is not None:
        where = shlex.quote(str(directories.sweep))
        print(
            f"sweep: {directories.sweep} (a run directory per job)\n"
            f"table: dgm-run-table {where}\n"
            f"see them: tensorboard --logdir {where}",
            flush=True,
        )


def failed_jobs(sweep: Path, since: float) -> list[str]:
    """The jobs of the sweep started at `since` that failed, each by its number with its error (the error.txt it
    wrote in its directory, which the number starts)."""
    written = [path for path in sweep.glob(f"*/{ERROR_FILE}") if path.stat().st_mtime >= int(since)]
    return [
        f"job {path.parent.name.split('_')[0]}: {path.read_text().strip()}"
        for path in sorted(written, key=os.path.getmtime)
    ]


def main() -> None:
    # Hydra re-raises composition errors when this is set, so they get our one-line report.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    directories.sweep = None
    started = time.time()
    try:
        app()
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        fail(describe(err))
    except UserError as err:  # a sweeper's own setting (hydra.sweeper.*), found before any job ran
        fail(str(err))
    except KeyboardInterrupt:
        # Ctrl-C outside training (training's own handler checkpoints and names the resume command): while a run
        # was set up or wrote its results, or between a sweep's jobs.
        print(
            "dgm-run: stopped by SIGINT outside training; a run that saved a checkpoint resumes with "
            "dgm-run resume=RUN_DIR, a search with its own command",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGINT)
    if directories.sweep is not None:
        report_sweep()
        failed = failed_jobs(directories.sweep, started)
        if failed:
            fail(f"{len(failed)} job(s) of the sweep failed; every job ran: {'; '.join(failed)}")


if __name__ == "__main__":
    main()
