"""One source of defaults: the schemas (config.py's dataclasses, the models' and data sources' `Config`).

The YAML files in configs/ hold only what differs from a schema or from what their defaults list
composes to; the composed config, the run's config.yaml and its HParams still hold every value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from dgm_run.composition import compose
from dgm_run.config import GROUP_SCHEMAS, complete, target_class, validate
from dgm_run.errors import UserError
from dgm_run.train import CONFIG_FILE, resumed_config
from tests.conftest import REPO, config_options

CONFIGS = REPO / "configs"
GROUPS = ("model", "data", *GROUP_SCHEMAS)


def raw(cfg: DictConfig, key: str) -> Any:
    """The value at dotted `key`, interpolations unresolved; None where there is none."""
    node: Any = OmegaConf.to_container(cfg)
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def own(path: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """An option file's own values, the options its defaults list extends and the overrides in it."""
    node = OmegaConf.to_container(OmegaConf.load(path))
    parents, overrides = [], []
    for entry in node.pop("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_" and not entry.startswith("/schema/"):
                parents.append(entry)
        else:
            ((key, value),) = entry.items()
            overrides.append(f"{key.removeprefix('override ').lstrip('/')}={value}")
    return node, parents, overrides


def options(group: str) -> list[Path]:
    return sorted((CONFIGS / group).glob("*.yaml"))


def leaves(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("path", [p for g in GROUPS for p in options(g)], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_option_file_holds_only_what_differs_from_its_schema(path):
    group, option = path.parent.name, path.stem
    values, parents, _ = own(path)
    composed = compose([f"{group}={option}"])[group]
    if parents:  # what the file's defaults list composes to
        base = compose([f"{group}={parents[-1]}"])[group]
    else:
        schema = GROUP_SCHEMAS.get(group) or target_class(composed, group).Config
        base = OmegaConf.structured(schema)
        if group in GROUP_SCHEMAS:  # the file extends the schema (its types, its keys, its defaults)
            assert issubclass(composed._metadata.object_type, schema), f"{path} does not extend /schema/{group}"
        else:  # the class to build is named in the file itself
            assert "_target_" in values, f"{path} names no _target_"
            values.pop("_target_")
    repeated = [f"{key}: {values[key]}" for key in values if raw(composed, key) == raw(base, key)]
    assert not repeated, f"{path} repeats the defaults {repeated}; remove them"


@pytest.mark.parametrize("path", options("experiment"), ids=lambda p: p.stem)
def test_experiment_holds_only_what_differs_from_its_defaults_list(path):
    values, parents, overrides = own(path)
    composed = compose([f"experiment={path.stem}"])
    base = compose([*(f"experiment={p}" for p in parents[-1:]), *overrides])
    repeated = [key for key in leaves(values) if raw(composed, key) == raw(base, key)]
    assert not repeated, f"{path} repeats what its defaults list composes to: {repeated}; remove them"


def test_sdgm_is_adgm_with_the_sdgm_target():
    adgm, sdgm = (OmegaConf.to_container(compose([f"model={m}"]).model) for m in ("adgm", "sdgm"))
    assert sdgm.pop("_target_") == "dgm_run.models.semi_supervised.sdgm.SDGM"
    assert adgm.pop("_target_") == "dgm_run.models.semi_supervised.adgm.ADGM"
    assert sdgm == adgm
    assert own(CONFIGS / "model" / "sdgm.yaml")[:2] == (
        {"_target_": "dgm_run.models.semi_supervised.sdgm.SDGM"},
        ["adgm"],
    )


def test_trainer_defaults_are_what_runs_got_before():
    """The dataclass defaults took the values the YAML files gave (configs/trainer/default.yaml had
    max_epochs 20 and eval_every_epochs 5 against 50 and 1 in the dataclass)."""
    trainer = validate(compose()).trainer
    assert (trainer.max_epochs, trainer.eval_every_epochs, trainer.batch_size) == (20, 5, 100)


@pytest.mark.parametrize(
    "overrides,compile,cuda_graph",
    [
        ([], False, "auto"),
        (["trainer.compile=true", "trainer.cuda_graph=false"], "default", False),
        (["trainer.compile=max-autotune-no-cudagraphs", "trainer.cuda_graph=true"], "max-autotune-no-cudagraphs", True),
        # As a config.yaml saved when both keys were strings holds them.
        (["trainer.compile='false'", "trainer.cuda_graph='True'"], False, True),
    ],
)
def test_compile_and_cuda_graph_are_booleans_or_their_choices(overrides, compile, cuda_graph):
    trainer = validate(compose(overrides)).trainer
    assert trainer.compile == compile and type(trainer.compile) is type(compile)
    assert trainer.cuda_graph == cuda_graph and type(trainer.cuda_graph) is type(cuda_graph)


def test_a_cuda_graph_setting_outside_its_choices_is_refused():
    with pytest.raises(
        UserError, match="trainer.cuda_graph: 'sometimes' is not allowed; choose one of auto, true, false"
    ):
        validate(compose(["trainer.cuda_graph=sometimes"]))


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in options(g)])
def test_composed_config_holds_every_schema_default(group, option):
    cfg = compose([f"{group}={option}"])
    schema = GROUP_SCHEMAS.get(group) or target_class(cfg[group], group).Config
    assert list(cfg[group]) == [f.name for f in dataclasses.fields(schema)]
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(complete(cfg))


def test_complete_fills_a_sparse_config_and_keeps_interpolations():
    sparse = OmegaConf.create(
        {
            "seed": 3,
            "model": {
                "_target_": "dgm_run.models.semi_supervised.m1m2.M1M2",
                "m1_epochs": 4,
                "schedule": [{"phase": "m1", "until_epoch": "${model.m1_epochs}"}],
            },
            "data": {"_target_": "dgm_run.data.digits.Digits"},
            "trainer": {"max_epochs": 7},
            "optimizer": {},
            "device": {},
            "logger": {},
        }
    )
    full = complete(sparse)
    assert full.trainer.max_epochs == 7 and full.trainer.eval_every_epochs == 5 and full.optimizer.lr == 1e-3
    assert full.model.m1_z_dim == 50 and full.data.labelled_batch_size == 100
    assert OmegaConf.to_container(full.model.schedule)[0] == {
        "phase": "m1",
        "steps": 1,
        "from_epoch": 0,
        "until_epoch": "${model.m1_epochs}",
    }
    assert full.model.schedule[0].until_epoch == 4
    assert OmegaConf.to_container(complete(full)) == OmegaConf.to_container(full)


def test_resumed_config_fills_in_what_the_saved_config_lacks(tmp_path):
    cfg = OmegaConf.to_container(compose(["model=m2"]))
    del cfg["model"]["z_dim"], cfg["trainer"]["eval_batch_size"]  # e.g. a key added to a schema since
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / CONFIG_FILE)
    resumed = resumed_config(tmp_path, ["trainer.max_epochs=30"])
    assert resumed.model.z_dim == 50 and resumed.trainer.eval_batch_size == 500 and resumed.trainer.max_epochs == 30


def test_cfg_job_prints_every_value(cli):
    code, out, err = cli("--cfg", "job", "model=m1m2", "data=mnist_100labels")
    assert code == 0, err
    printed = OmegaConf.create(out)
    assert OmegaConf.to_container(printed) == OmegaConf.to_container(
        complete(compose(["model=m1m2", "data=mnist_100labels"]))
    )
    assert printed.trainer.eval_batch_size == 500 and printed.model.m1_z_dim == 50 and printed.data.root == "data"


def test_option_lists_show_no_schema(cli):
    code, out, _ = cli("--help")
    assert code == 0
    groups = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = [line for line in groups.splitlines() if ": " in line]
    assert listed == [
        f"{g}: {config_options(g)}"
        for g in sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    ]
    code, _, err = cli("trainer=nope")
    assert code == 2 and f"choose one of: {config_options('trainer')}\n" in err


def test_unknown_model_key_lists_every_key_of_the_model(cli, tmp_path):
    from dgm_run.models.vae.vae import VAE

    code, _, err = cli("model.hiden=[10]", f"hydra.run.dir={tmp_path}")
    keys = ", ".join(f.name for f in dataclasses.fields(VAE.Config))
    assert code == 2 and err.strip() == f"dgm-run: error: unknown key 'model.hiden'; allowed keys here: {keys}"


def test_an_entry_of_a_typed_map_can_be_added():
    """optimizer.phases maps phases to PhaseOptimizerConfig; OmegaConf cannot add an entry to such a typed
    map from an override, so Hydra composes it as an open map and validate() checks the entries."""
    run_config = validate(
        compose(["model=avb", "+optimizer.phases.adversary.lr=1e-4", "+optimizer.phases.primal={lr: 2e-4}"])
    )
    assert run_config.optimizer.phases["adversary"].lr == 1e-4 and run_config.optimizer.phases["primal"].lr == 2e-4


def test_a_target_that_cannot_be_imported_is_one_line_that_says_where_the_paths_are(tmp_path):
    """A run saved before the models moved into their family packages names an old path: resuming it says
    so in one line, naming the folder whose files hold the current paths."""
    from dgm_run.train import run

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    saved = complete(compose(["model=adgm"]))
    saved.model._target_ = "dgm_run.models.adgm.ADGM"  # where ADGM lived before
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(saved))
    with pytest.raises(
        UserError,
        match=r"config .*config.yaml: model._target_: cannot import 'dgm_run.models.adgm.ADGM' .*configs/model/",
    ):
        run(compose([f"resume={run_dir}"]), run_dir)
