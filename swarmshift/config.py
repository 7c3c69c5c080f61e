"""Config loading: YAML files plus SWARMSHIFT_* environment variables, validated by pydantic.

Every problem becomes one line naming where the value came from (file or variable), the key
path and the bad value; the CLI prints them and exits with code 2. Unknown keys are errors.
Secrets are read from files: any key may be set from `SWARMSHIFT_<KEY>_FILE` (Docker secrets).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

ENV_PREFIX = "SWARMSHIFT_"
M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """Invalid configuration: `problems` holds one human-readable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, and a loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ASCII digits only (`\d` and float() take "١٢" and "1_0"), and a bounded text: durations come from
# service labels too, which anyone who deploys a stack writes.
_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|s|m|h|d)", re.ASCII)
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?", re.ASCII)
_DURATION_MAX_CHARS = 64
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style duration such as `90s`, `5m` or `1h30m`; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or 5m")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            raise ValueError("a duration must be finite") from None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > _DURATION_MAX_CHARS:
            raise ValueError(f"expected a duration such as 30s or 5m, at most {_DURATION_MAX_CHARS} characters")
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        else:
            pos, seconds = 0, 0.0
            for match in _DURATION.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError("expected a duration such as 30s, 5m or 1h30m")
    else:
        raise ValueError("expected a duration such as 30s or 5m")
    if seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        raise ValueError("a duration must be zero or positive, and finite")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _comma_list(value: Any) -> Any:
    # A list from an environment variable is one string: `a, b` means ["a", "b"].
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], BeforeValidator(_comma_list)]


def _label_selector(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+(?:=[^\s]*)?$", value):
        raise ValueError("expected a label KEY or KEY=VALUE")
    return value


# A daemon's scope: only services carrying this label (KEY, or KEY=VALUE), as Docker filters them.
LabelSelector = Annotated[str, AfterValidator(_label_selector)]


def selects(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Whether a service with `labels` is within `selector` (None: everything is)."""
    if selector is None:
        return True
    key, sep, value = selector.partition("=")
    return key in labels and (not sep or labels[key] == value)
IntList = Annotated[list[int], BeforeValidator(_comma_list)]


def format_duration(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping's key (not its value): the path names the key already
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _lookup(data: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    if loc[-1:] == ("[key]",):
        found, _ = _lookup(data, loc[:-1])
        return found, loc[-2]  # a bad mapping key: the key is the value
    for part in loc:
        if isinstance(data, Mapping) and part in data or isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False, None
    return True, data


def problems_from(err: ValidationError, data: Any, origin: str, sources: Mapping[tuple, str] | None = None) -> list[str]:
    """One line per pydantic error: `origin: key.path: message (got value)`."""
    lines = []
    for item in err.errors():
        # pydantic appends the validator's name for tagged unions and function validators.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = (sources or {}).get(loc[:1], origin) if loc else origin
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        found, value = _lookup(data, loc)
        # A validator raises PydanticCustomError("secret_value", ...) for a value that may hold a secret.
        got = f" (got {value!r})" if found and item["type"] not in ("missing", "secret_value") else ""
        lines.append(f"{where}: {_key_path(loc) or '<top>'}: {msg}{got}")
    return lines


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`, or ConfigError with the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror or err}"]) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: <top>: expected a mapping of keys (got {type(data).__name__})"])
    return data


def env_overrides(model: type[BaseModel], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple, str]]:
    """Values for `model` from SWARMSHIFT_<KEY> (nested with __) and SWARMSHIFT_<KEY>_FILE.

    Only variables whose first key is a field of `model` are taken: both daemons share the
    prefix, and the CLI has variables of its own.
    """
    fields = set(model.model_fields)
    data: dict[str, Any] = {}
    sources: dict[tuple, str] = {}
    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        rest, from_file = name[len(ENV_PREFIX):].lower(), False
        if rest.endswith("_file") and rest.removesuffix("_file").split("__")[0] in fields:
            rest, from_file = rest.removesuffix("_file"), True
        keys = rest.split("__")
        if keys[0] not in fields:
            continue
        value: Any = env[name]
        if from_file:
            try:
                value = Path(value).read_text().strip()
            except OSError as err:
                problems.append(f"{name}: cannot read {value}: {err.strerror or err}")
                continue
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        sources[(keys[0],)] = name
    if problems:
        raise ConfigError(problems)
    return data, sources


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load(
    model: type[M],
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> M:
    """The validated config: the file's values, overridden by the environment's, then by flags.

    `flags` holds command-line values by key path (nested mappings); None values are ignored.
    """
    env = os.environ if env is None else env
    data = read_yaml(path) if path else {}
    overrides, sources = env_overrides(model, env)
    merged = _deep_merge(data, overrides)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    merged = _deep_merge(merged, given)
    sources = {**sources, **{(key,): "command line" for key in given}}
    try:
        return model.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(problems_from(err, merged, str(path) if path else "config", sources)) from err
