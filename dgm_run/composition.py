"""How Hydra composes configs/: the schemas of config.py stored in Hydra's ConfigStore, and compose().

`register_schemas()` stores them under `schema/`: the dataclasses for trainer, optimizer, device
and logger (their YAML options extend `/schema/GROUP` through their defaults list), and for every
option of configs/model and configs/data the `Config` of the class its `_target_` names, which
configs/config.yaml merges under the chosen option. So the YAML files hold only what differs from
a schema, and the composed config holds every value.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence
from dataclasses import field
from importlib import resources
from typing import Any, Optional

import hydra.utils
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from dgm_run.config import GROUP_SCHEMAS

# The ConfigStore group of the schemas; not a group users choose from.
SCHEMA_GROUP = "schema"


def option_nodes(group: str) -> dict[str, DictConfig]:
    """The files of configs/GROUP as they are written (no composition), by option name, in name order."""
    files = [f for f in (resources.files("dgm_run.configs") / group).iterdir() if f.name.endswith(".yaml")]
    return {
        f.name.removesuffix(".yaml"): OmegaConf.create(f.read_text(encoding="utf-8"))
        for f in sorted(files, key=lambda f: f.name)
    }


def _option_targets(group: str) -> dict[str, str]:
    """The `_target_` of every option of configs/GROUP, by option name; an option without its own
    takes the one of the last option in its defaults list (model/avb_vae: avb's)."""
    nodes = option_nodes(group)

    def target(option: str, seen: tuple[str, ...] = ()) -> Optional[str]:
        node = nodes.get(option)
        if node is None or option in seen:
            return None
        if isinstance(node.get("_target_"), str):
            return node["_target_"]
        parents = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        return target(parents[-1], (*seen, option)) if parents else None

    return {option: t for option in nodes if (t := target(option)) is not None}


def composable(schema: type) -> type:
    """`schema` as Hydra composes it: a map of dataclasses (optimizer.phases) becomes a map of anything,
    since OmegaConf cannot create an entry of a typed map from an override such as
    +optimizer.phases.adversary.lr=1e-4; validate() still checks the entries against `schema`."""
    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # an annotation that cannot be resolved here: compose with the schema as it is
        return schema
    loose = [
        (f.name, dict[str, Any], field(default_factory=f.default_factory))
        for f in dataclasses.fields(schema)
        if typing.get_origin(hints[f.name]) is dict
        and dataclasses.is_dataclass(typing.get_args(hints[f.name])[-1])
        and f.default_factory is not dataclasses.MISSING
    ]
    return dataclasses.make_dataclass(schema.__name__, loose, bases=(schema,)) if loose else schema


@functools.cache
def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore, under the group `schema` (hidden from option lists):
    schema/trainer, schema/optimizer, schema/device and schema/logger, which the options of those groups
    extend; schema/model/OPTION and schema/data/OPTION, the `Config` of the option's `_target_`, which
    configs/config.yaml merges under the chosen option. An option whose class cannot be imported gets
    none (validate() then names the problem). Must run before any composition; runs once."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=SCHEMA_GROUP, name=group, node=composable(schema))
    for group in ("model", "data"):
        for option, target in _option_targets(group).items():
            try:
                schema = hydra.utils.get_class(target).Config
            except Exception:  # hydra wraps import errors in its own types
                continue
            store.store(group=f"{SCHEMA_GROUP}/{group}", name=option, node=composable(schema))


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `dgm-run OVERRIDES` would run, composed in-process (for scripts and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module("dgm_run.configs", version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
