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


_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _toml_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return _TOML_TYPES.get(type(value), type(value).__name__)


def _expected(param: click.Parameter) -> tuple[tuple[type, ...], str, str]:
    """The TOML types an option accepts, how to say so, and an example value."""
    kind = param.type
    if (isinstance(param, click.Option) and param.is_flag) or isinstance(
        kind, click.types.BoolParamType
    ):
        return (bool,), "a boolean", "true"
    if isinstance(kind, click.types.IntParamType):
        return (int,), "an integer", "1"
    if isinstance(kind, click.types.FloatParamType):
        return (int, float), "a number", "1.5"
    if isinstance(kind, click.types.StringParamType | click.Choice | click.Path | click.DateTime):
        return (str,), "a string", '"..."'
    return (str, int, float), "a string or a number", '"..."'


def _check_value(param: click.Parameter, key: str, value: Any, source: str, where: str) -> Any:
    """``value`` if its TOML type fits ``param``; repeatable options take one or an array.

    Raises:
        ConfigError: naming the key, the type expected and the file.
    """
    types, expected, example = _expected(param)
    multiple = getattr(param, "multiple", False)

    def fits(item: Any) -> bool:
        return isinstance(item, types) and (bool in types or not isinstance(item, bool))

    if multiple:
        items = value if isinstance(value, list) else [value]
        if all(fits(item) for item in items):
            return items
        expected = f"{expected} or an array of them"
        example = f"[{example}]"
    elif fits(value):
        return value
    raise ConfigError(
        f"{source}: {where}{key} must be {expected}, not {_toml_type(value)} ({value!r}); "
        f"write e.g. {key} = {example}"
    )


def build_default_map(
    group: click.Group, ctx: click.Context, config: dict[str, Any], source: str = CONFIG_NAME
) -> dict[str, Any]:
    """Spread the config over the group and each command, keeping only the options each has.

    Unknown keys are an error naming them (a typo must not be ignored silently), and so is a
    value of the wrong type (``region = 5``; an array for an option that takes one value),
    naming the key, the type expected and ``source``, the file.
    """
    defaults: dict[str, Any] = config["defaults"]
    per_command: dict[str, dict[str, Any]] = config["commands"]
    known: set[str] = {p.name for p in group.params if p.name}
    group_params = {p.name: p for p in group.params if p.name}
    default_map: dict[str, Any] = {
        k: _check_value(group_params[k], k, v, source, "")
        for k, v in defaults.items()
        if k in group_params
    }
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        params = {p.name: p for p in command.params if p.name}
        known |= set(params)
        extra = per_command.get(name, {})
        unknown = set(extra) - set(params)
        if unknown:
            raise ConfigError(
                f"[commands.{name}] in {CONFIG_NAME} has unknown option(s) "
                f"{', '.join(sorted(unknown))}; see `mlayer {name} --help`"
            )
        # `memory = 512` in the file means one value of a repeatable option.
        values = {
            k: _check_value(params[k], k, v, source, "") for k, v in defaults.items() if k in params
        }
        values.update(
            {
                k: _check_value(params[k], k, v, source, f"[commands.{name}] ")
                for k, v in extra.items()
            }
        )
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
