"""mlayer.toml: per-project defaults, read into Click's ``default_map``.

Precedence is Click's own: a flag, then its environment variable (``MLAYER_<OPTION>``), then
this file, then the option's default. The file holds option names as keys, with dashes or
underscores; top-level keys apply to every command that has that option, and a
``[commands.<name>]`` table applies to one command only::

    region = "eu-west-1"
    function = "review-scorer"
    alias = "live"
    runtime = "python3.13"
    arch = "arm64"

    [commands.run-local]
    batch_size = 500
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from mlayer.errors import ConfigError

CONFIG_NAME = "mlayer.toml"


def read_config(path: Path) -> dict[str, Any]:
    """Parse a config file into ``{"defaults": {...}, "commands": {name: {...}}}``.

    Raises:
        ConfigError: the file is not valid TOML or has a value of the wrong shape.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}; fix the file or pass --config"
        ) from exc
    commands = data.pop("commands", {})
    if not isinstance(commands, dict) or not all(isinstance(v, dict) for v in commands.values()):
        raise ConfigError(f"{path}: [commands.<name>] entries must be tables of option = value")
    norm = {_key(k): v for k, v in data.items()}
    per_command = {name: {_key(k): v for k, v in table.items()} for name, table in commands.items()}
    return {"defaults": norm, "commands": per_command}


def _key(name: str) -> str:
    return name.replace("-", "_")


def build_default_map(
    group: click.Group, ctx: click.Context, config: dict[str, Any]
) -> dict[str, Any]:
    """Spread the config over the group and each command, keeping only the options each has.

    Unknown keys are an error naming them (a typo must not be ignored silently).
    """
    defaults: dict[str, Any] = config["defaults"]
    per_command: dict[str, dict[str, Any]] = config["commands"]
    known: set[str] = {p.name for p in group.params if p.name}
    default_map: dict[str, Any] = {
        k: v for k, v in defaults.items() if k in {p.name for p in group.params}
    }
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        params = {p.name for p in command.params if p.name}
        repeatable = {p.name for p in command.params if p.name and getattr(p, "multiple", False)}
        known |= params
        values = {k: v for k, v in defaults.items() if k in params}
        extra = per_command.get(name, {})
        unknown = set(extra) - params
        if unknown:
            raise ConfigError(
                f"[commands.{name}] in {CONFIG_NAME} has unknown option(s) "
                f"{', '.join(sorted(unknown))}; see `mlayer {name} --help`"
            )
        values.update(extra)
        # `memory = 512` in the file means one value of a repeatable option.
        for key in repeatable & set(values):
            if not isinstance(values[key], list | tuple):
                values[key] = [values[key]]
        if values:
            default_map[name] = values
    unknown_cmds = set(per_command) - set(group.list_commands(ctx))
    if unknown_cmds:
        raise ConfigError(
            f"{CONFIG_NAME} names unknown command(s) {', '.join(sorted(unknown_cmds))}; "
            "see `mlayer --help`"
        )
    unknown = set(defaults) - known
    if unknown:
        raise ConfigError(
            f"{CONFIG_NAME} has unknown option(s) {', '.join(sorted(unknown))}; "
            "keys are option names such as region, function, runtime"
        )
    return default_map
