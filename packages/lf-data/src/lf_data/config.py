"""One flat configuration: a YAML file plus ``key=value`` overrides, checked against typed sections.

Each package owns a dataclass section (lf-data's ``DataArguments``, lf-models' ``ModelArguments``,
...). ``parse_sections`` is the one path every command takes: it routes every key to the sections
that declare it, coerces its type, checks its legal range (declared next to the field with
``Annotated[int, Range(ge=1)]``, so a new field cannot forget it), and refuses unknown keys with the
closest valid name, all before anything expensive runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from lf_data.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """The legal values of a number, declared on its field: ``Annotated[float, Range(gt=0)]``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    hint: str = ""

    def describe(self) -> str:
        low = f"at least {self.ge:g}" if self.ge is not None else f"above {self.gt:g}" if self.gt is not None else ""
        high = f"at most {self.le:g}" if self.le is not None else f"below {self.lt:g}" if self.lt is not None else ""
        return " and ".join(part for part in (low, high) if part)

    def check(self, key: str, value: Any) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt)):
            raise ConfigError(f"{key}={value!r} must be {self.describe()}{'; ' + self.hint if self.hint else ''}.")


def section(cls: type[T]) -> type[T]:
    """Make ``cls`` a configuration section: a dataclass whose ``Range`` fields are checked on every
    construction (from a config file or typed, by another package), before its own ``__post_init__``."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self: Any) -> None:
        for key, limit in _ranges(type(self)).items():
            limit.check(key, getattr(self, key))
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return dataclasses.dataclass(cls)


@functools.cache
def _ranges(cls: type) -> dict[str, Range]:
    found = {}
    for key, tp in typing.get_type_hints(cls, include_extras=True).items():
        for arg in (tp, *get_args(tp)):  # Annotated[...] itself, or inside `| None`
            if get_origin(arg) is Annotated:
                for extra in get_args(arg)[1:]:
                    if isinstance(extra, Range):
                        found[key] = extra
    return found


Positive = Range(gt=0)
AtLeastOne = Range(ge=1)
NonNegative = Range(ge=0)
Fraction = Range(ge=0, lt=1)


def read_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a flat YAML mapping and apply ``key=value`` overrides (values parsed as YAML scalars)."""
    config: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{str(path)!r} is a folder; a YAML config file is expected here. A run or model "
                              "folder goes into a key, e.g. adapter_name_or_path=FOLDER or model_name_or_path=FOLDER.")
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist. Pass the path of a YAML file, "
                              "for example examples/quickstart.yaml.")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            where = ""
            mark = getattr(err, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"{path} is not valid YAML{where}: {problem}. "
                              "Each line should be `key: value`.") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of `key: value` lines, "
                              f"found a {type(loaded).__name__}.")
        for key in loaded:
            if not isinstance(key, str):
                raise ConfigError(f"{path}: key {key!r} is not a name; keys are option names like lora_rank.")
        config.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"command-line override {item!r} is not of the form key=value "
                              "(for example learning_rate=1e-4).")
        try:
            config[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            config[key] = raw
    return config


def _yaml_word(value: Any, choices: Iterable[str]) -> Any:
    """The word a YAML 1.1 reader turned into a boolean (an unquoted `no`, `off`, `yes`, `on`: `save_strategy:
    no`), given back where a field's choices hold it; any other value as it is."""
    if isinstance(value, bool):
        for word in (("yes", "true", "on") if value else ("no", "false", "off")):
            if word in choices:
                return word
    return value


def coerce_value(key: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (a Literal's choices, lists from comma-separated text, YAML's strings
    for numbers), or a ConfigError that names ``key``."""
    origin = get_origin(tp)
    if origin is Annotated:  # the Range is checked when the section is built (`section`)
        return coerce_value(key, value, get_args(tp)[0])
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(key, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        choices = get_args(tp)
        value = _yaml_word(value, [str(c) for c in choices])
        if value in choices:
            return value
        from lf_data.llamafactory_keys import RETIRED_VALUES

        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if (key, value) in RETIRED_VALUES:
            hint = f" {RETIRED_VALUES[key, value]}."
        raise ConfigError(f"{key}={value!r} is not a valid choice; use one of "
                          f"{', '.join(map(str, choices))}.{hint}")
    if origin is list:
        (item_tp,) = get_args(tp) or (str,)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list (or a comma-separated string), got {value!r}.")
        return [coerce_value(key, item, item_tp) for item in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # transformers' strategies: IntervalStrategy, ...
        return _yaml_word(value, [str(member.value) for member in tp])
    return value  # types LF does not check itself (checked by the section's own constructor)


def section_keys(section: type) -> list[str]:
    return [f.name for f in dataclasses.fields(section) if f.init]


def unknown_keys_error(unknown: list[str], known: set[str], source: str = "",
                       config: dict[str, Any] | None = None) -> ConfigError:
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if config is not None and isinstance(config.get(key), dict):
            hint += " LF configs are flat: one `key: value` per line, no nested sections."
        lines.append(f"unknown config key {key!r}{source}.{hint}")
    if len(lines) == 1:
        return ConfigError(lines[0])
    return ConfigError("\n  ".join(["several config keys are unknown:"] + lines))


def coerce_section(section: type, config: dict[str, Any], ranges: dict[str, Range] | None = None) -> dict[str, Any]:
    """The keys of ``config`` that ``section`` declares, typed and range-checked (``ranges`` adds
    legal ranges to a section LF does not own, such as transformers' ``TrainingArguments``)."""
    hints = typing.get_type_hints(section, include_extras=True)
    kwargs = {}
    for key in section_keys(section):
        if key in config:
            kwargs[key] = coerce_value(key, config[key], hints.get(key, Any))
            if ranges and key in ranges:
                ranges[key].check(key, kwargs[key])
    return kwargs


def build_section(section: type[T], config: dict[str, Any]) -> T:
    """Build one section from the keys of ``config`` that it declares, typed and range-checked."""
    kwargs = coerce_section(section, config)
    try:
        return section(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid {section.__name__}: {err}") from None


def known_keys(*sections: type, passthrough: Iterable[str] = ()) -> set[str]:
    known: set[str] = set(passthrough)
    for section in sections:
        known.update(section_keys(section))
    return known


def parse_sections(config: dict[str, Any], *sections: type, source: str = "",
                   passthrough: Iterable[str] = ()) -> tuple:
    """Split a flat config among sections; every key must belong to one of them or to `passthrough`
    (keys that a later parser types, such as the Hugging Face `TrainingArguments`)."""
    known = known_keys(*sections, passthrough=passthrough)
    unknown = [key for key in config if key not in known]
    if unknown:
        error = unknown_keys_error(unknown, known, f" in {source}" if source else "", config)
        if not extra_keys_allowed():
            raise error
        import logging

        logging.getLogger(__name__).warning("ALLOW_EXTRA_ARGS is set, so these keys are ignored: %s", error)
    return tuple(build_section(section, config) for section in sections)


def extra_keys_allowed() -> bool:
    """LlamaFactory's ALLOW_EXTRA_ARGS=1: keys no command knows are ignored (with a warning) instead of
    refused, for recipes that carry keys of the user's own."""
    return os.environ.get("ALLOW_EXTRA_ARGS", "").strip().lower() in ("1", "true", "y", "yes")
