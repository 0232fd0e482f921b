"""Typed configuration: one pydantic model per stage, YAML on disk, named presets.

Each stage module defines its own settings model (``PrepareConfig`` in ``prepare.py``, ...)
deriving from :class:`Settings`; the experiment config composes them. Unknown keys are errors
that suggest the closest valid name, so a typo in a YAML file never passes silently.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .fileio import write_text

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """Base of every settings model: strict keys, validated on assignment, YAML round trip."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_dict(cls: type[S], data: dict[str, Any] | None, source: str = "config",
                  error: type[Exception] = ConfigError) -> S:
        """Validate plain data; problems raise ``error`` (one message listing them all)."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as err:
            raise error(format_validation_error(err, cls, source, data)) from None

    @classmethod
    def from_yaml(cls: type[S], path: str | os.PathLike) -> S:
        return cls.from_dict(read_yaml(path), source=str(path))

    def to_yaml(self, path: str | os.PathLike) -> Path:
        return write_text(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def merged(self: S, **changes: Any) -> S:
        """A validated copy with some fields replaced (``None`` values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self).from_dict(data, source=type(self).__name__)


def read_yaml(path: str | os.PathLike, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A YAML file's top-level mapping, read with the safe loader (plain values only: a
    ``!!python/...`` tag is refused, never run). A missing file, text that is not UTF-8, a YAML
    syntax error, a tag and a top level that is not a mapping raise ``error`` (ConfigError by
    default; InputError for manifests) naming the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; give the YAML file itself")
    if not path.is_file():
        raise error(f"{path}: file not found; check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise error(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); save the file as "
                    "UTF-8 (e.g. `iconv -f latin1 -t utf-8`, or 'Save as... UTF-8' in an editor)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(_yaml_problem(path, err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of settings (key: value lines) at the top level, "
                    f"got {type(data).__name__}")
    return data


def _yaml_problem(path: Path, err: Exception) -> str:
    """One line for a YAML error: file, line and column, the problem and how to fix it."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    if isinstance(err, yaml.constructor.ConstructorError) and "tag" in problem:
        tag = problem.split("tag", 1)[1].strip().strip("'").replace("tag:yaml.org,2002:", "!!")
        return (f"{path}: YAML tag {tag}{where} is not allowed (metsynth reads plain YAML only and never "
                "builds Python objects from it); write a plain value (number, string, list or mapping) there")
    return (f"{path}: invalid YAML{where}: {problem}; fix the syntax there (indentation, a ':' after each key, "
            "closed brackets and quotes)")


def _named_items(data: Any, loc: tuple) -> str:
    """" (case 'H001')" where ``loc`` passes through a list item of ``data`` that has an ``id``: a
    manifest's problems named by the case, not only by its position in the list."""
    names = []
    for part in loc:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
            if isinstance(data, dict) and isinstance(data.get("id"), (str, int)):
                names.append(f"'{data['id']}'")
        else:
            break
    noun = "case" if loc and loc[0] == "cases" else "id"
    return f" ({noun} {', '.join(names)})" if names else ""


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str, data: Any = None) -> str:
    """One line per problem, naming the key path (and, given the validated ``data``, the id of a list
    item such as a manifest's case), the bad value and, for typos, a suggestion."""
    lines = []
    for problem in err.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:  # a check of the whole (e.g. duplicate case ids): its message says it all
            lines.append(message)
            continue
        loc = ".".join(str(p) for p in problem["loc"])
        where = f"'{loc}'{_named_items(data, problem['loc'])}"
        if problem["type"] == "extra_forbidden":
            name = str(problem["loc"][-1])
            fields = _fields_at(model, problem["loc"][:-1])
            hint = difflib.get_close_matches(name, fields, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; valid keys: {', '.join(fields)}"
            lines.append(f"unknown setting {where}{suggestion}")
        else:
            value = problem.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{where}: {message}{shown}")
    return f"{source}: " + "; ".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _first_model(field.annotation) or next(
            (m.model for m in field.metadata if isinstance(m, OverridesOf)), None)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def look_up_option(name: str, options: dict[str, Any] | list[str], what: str = "option") -> Any:
    """``options[name]``, or a ConfigError with a "did you mean" suggestion."""
    keys = list(options)
    if name in keys:
        return options[name] if isinstance(options, dict) else name
    hint = difflib.get_close_matches(name, keys, n=1)
    extra = f"; did you mean '{hint[0]}'?" if hint else ""
    raise ConfigError(f"unknown {what} '{name}' (choose from {', '.join(keys)}){extra}")


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_preset(model: type[S], presets: dict[str, dict[str, Any]], preset: str | None,
                   overrides: dict[str, Any] | str | os.PathLike | None, changes: dict[str, Any],
                   what: str, default: str) -> S:
    """A named preset, then a mapping or YAML file of overrides, then keyword changes, validated.

    Without ``preset``, the overrides' own ``preset:`` key picks the base (so a saved config
    reloads as itself), else ``default``. Unknown keys raise :class:`ConfigError` with a suggestion.
    """
    source = f"{what} settings"
    if isinstance(overrides, (str, os.PathLike)):
        source = f"{overrides}"
        overrides = read_yaml(overrides)
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"{source}: {what} overrides must be a mapping, got {type(overrides).__name__}")
    if preset is None:
        named = (overrides or {}).get("preset")
        preset = named if isinstance(named, str) and named in presets else default
    data = preset_data(presets, preset, overrides, what)
    data = deep_merge(data, {k: v for k, v in changes.items() if v is not None})
    return model.from_dict(data, source=source)


def preset_data(presets: dict[str, dict[str, Any]], preset: str, overrides: dict[str, Any] | None,
                what: str) -> dict[str, Any]:
    """The named preset's settings with ``overrides`` deep-merged in, not yet validated (the one
    definition of "preset + overrides", for :func:`resolve_preset` and a study's sections)."""
    return deep_merge(look_up_option(preset, presets, f"{what} preset"), overrides)


class OverridesOf:
    """Marks a mapping field as overrides of a settings model (``Annotated[dict[str, Any],
    OverridesOf(Model)]``): an unknown key there is then reported with the model's valid keys."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model


def read_section(path: str | os.PathLike | None, name: str) -> dict[str, Any]:
    """A YAML file's settings: its ``name:`` section if it has one (experiment configs), else all of it."""
    if path is None:
        return {}
    data = read_yaml(path)
    if name in data and (data[name] is None or isinstance(data[name], dict)):
        return data[name] or {}  # an empty section ("realism:") is the defaults
    return data


# ------------------------------------------------------------------ reference documentation
def reference_table(columns: dict[str, Settings]) -> str:
    """A markdown table of every setting of one model: key path, one column of values per named
    instance (e.g. per preset), and the field's description. Nested models are flattened to
    ``a.b.c``; the rows follow the model's field order."""
    model = type(next(iter(columns.values())))
    rows = _reference_rows(model, "")
    values = {name: dict(_values(model, instance.model_dump(mode="json"), "")) for name, instance in columns.items()}
    lines = ["| setting | " + " | ".join(f"`{name}`" for name in columns) + " | meaning |",
             "|" + "---|" * (len(columns) + 2)]
    for key, description in rows:
        cells = [_cell(values[name][key]) if key in values[name] else "" for name in columns]
        lines.append(f"| `{key}` | " + " | ".join(cells) + f" | {description.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _reference_rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        nested = _first_model(field.annotation)
        if nested is not None:
            rows += _reference_rows(nested, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", " ".join((field.description or "").split())))
    return rows


def _values(model: type[BaseModel], data: dict[str, Any] | None, prefix: str):
    for name, field in model.model_fields.items():
        nested = _first_model(field.annotation)
        value = (data or {}).get(name)
        if nested is not None:
            yield from _values(nested, value if isinstance(value, dict) else None, f"{prefix}{name}.")
        elif data is not None:
            yield f"{prefix}{name}", value


def _cell(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`".replace("|", "/") if text else ""
