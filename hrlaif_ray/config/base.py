"""The config machinery: pydantic sections loaded from YAML with dotted command-line overrides.

Config is data. Each section is a pydantic model whose fields carry their defaults and documentation in one
place; unknown keys are errors (no silent typos), and a failed validation names every offending key, e.g.
`model.hidden_size: Input should be a valid integer (got 'wide')`. Nothing is rewritten behind the user's back:
what validates is what runs, and `dump_config` writes exactly that next to the outputs.

A section that some job wants with other defaults (the evaluation's prompt mix, the DPO policy's two threads) is
a `variant` of its class: a subclass with those defaults, so a YAML file or an override that sets one of its
keys keeps the variant's other defaults (a section validated from a partial mapping takes its class's defaults,
never the defaults of some instance a job once wrote down).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from hrlaif_ray.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated. `moved` maps a key the
    section does not take but a user may write to the key(s) that hold it now (an earlier layout's key), or to
    the reason it is not the config's to set; an unknown key there fails saying so."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    moved: ClassVar[dict[str, tuple[str, ...] | str]] = {}
    # The dotted keys whose values are model folders, checked by `check_model_folders` before a command works.
    model_keys: ClassVar[tuple[str, ...]] = ()


HUB_HINT = "a hub model is downloaded to a folder first (`hf download ORG/NAME --local-dir DIR`)"


IMPLICIT_RM = "implicit_reward.json"  # the meta file that makes a folder an implicit reward model's


def implicit_rm_meta(folder: str | Path) -> dict | None:
    """An implicit RM folder's meta (hrlaif_ray/reward/implicit.py), its `policy` and `reference` resolved to
    paths; None for any other folder. Raises ValueError where the meta file is unreadable."""
    import json

    path = Path(folder).expanduser()
    if not (path / IMPLICIT_RM).is_file():
        return None
    try:
        meta = json.loads((path / IMPLICIT_RM).read_text())
        return {**meta, "policy": path / meta.get("policy", "policy"), "reference": Path(meta["reference"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"its {IMPLICIT_RM} is unreadable ({exc})") from None


def model_folder_problem(folder: str) -> str | None:
    """Why `folder` is not an HF model folder or an adapter folder on one (None: it is). A model is always a local folder: an id that
    is no folder would make transformers try the hub, which on an offline machine retries for a minute before it
    fails with a message that names neither the key nor the path."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        return "no such folder" if not path.exists() else "not a folder"
    if (path / "adapter_config.json").is_file():  # an adapter folder: its base must be a model folder
        from hrlaif_ray.lora import adapter_base

        try:
            base = adapter_base(path)
        except ValueError as exc:
            return str(exc)
        problem = model_folder_problem(base) if Path(base).expanduser().resolve() != path.resolve() else "itself"
        return f"an adapter folder whose base {base!r} is not a model folder ({problem})" if problem else None
    try:
        meta = implicit_rm_meta(path)
    except ValueError as exc:
        return f"an implicit reward model whose {exc}"
    if meta is not None:  # an implicit RM: its policy and reference are model folders
        for name in ("policy", "reference"):
            part = meta[name]
            problem = model_folder_problem(str(part))
            if problem:
                return f"an implicit reward model whose {name} {str(part)!r} is not a model folder ({problem})"
        return None
    if not (path / "config.json").is_file():
        return "no config.json there"
    return None


def check_model_folders(job: BaseModel) -> None:
    """Every model key of the job (`model_keys`) that is set names a model folder, else one line naming the key
    and the path."""
    for key in getattr(job, "model_keys", ()):
        value: Any = job
        for part in key.split("."):
            value = getattr(value, part, None)
        if value is not None and (problem := model_folder_problem(str(value))):
            raise ConfigError(f"{key}: {str(value)!r} is not a model folder ({problem}); {HUB_HINT}")


S = TypeVar("S", bound=BaseModel)


def variant(base: type[S], name: str, doc: str, **defaults: Any) -> type[S]:
    """`base` with other defaults: each keyword is a field of `base` and its new default, or a section class
    (a variant itself, typically), which then becomes the field's type and its defaults the field's default. The
    fields keep their constraints and descriptions."""
    fields: dict[str, Any] = {}
    for key, value in defaults.items():
        field = base.model_fields[key]
        if isinstance(value, type) and issubclass(value, BaseModel):
            fields[key] = (value, FieldInfo.merge_field_infos(field, default_factory=value))
        else:
            fields[key] = (field.annotation, FieldInfo.merge_field_infos(field, default=value))

    def from_base(cls, data: Any) -> Any:
        """An instance of `base` stands for the fields it was given: the variant's defaults fill the rest."""
        if isinstance(data, base) and not isinstance(data, cls):
            return {key: getattr(data, key) for key in data.model_fields_set}
        return data

    # __module__: the module that names it, so that it pickles by reference
    return create_model(
        name,
        __base__=base,
        __module__=base.__module__,
        __doc__=doc,
        __validators__={"_from_base": model_validator(mode="before")(classmethod(from_base))},
        **fields,
    )


def set_by(owner: str, sections: dict[str, tuple[type[BaseModel], type[BaseModel]]]) -> dict[str, str]:
    """`moved` entries for the keys a job has and the settings section that stands for it does not (its files,
    its seed): `owner` sets them. `sections`: section name -> (the job, its settings)."""
    return {
        f"{name}.{key}": f"set by {owner}"
        for name, (job, settings) in sections.items()
        for key in job.model_fields.keys() - settings.model_fields.keys()
    }


def apply_override(data: dict, override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (`3`, `true`, `[1, 2]`). A section
    the data does not set starts empty, so it takes its class's defaults."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected KEY=VALUE with a dotted key, e.g. model.hidden_size=256")
    parts = key.strip().split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {override!r}: config key {prefix!r} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({yaml_problem(exc)})") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what, and where (1-based line and column)."""
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())
    mark = getattr(exc, "problem_mark", None)
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else what


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section class a field holds (itself, or inside `X | None`, `list[X]`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def moved_to(cls: type[BaseModel] | None, loc: tuple) -> str | None:
    """What to say of an unknown key at `loc` that a section on its path knows (its `moved` table): where it lives
    now, or why it is not the config's."""
    node, prefix = cls, []
    for i, part in enumerate(loc):
        if node is None:
            return None
        rest = ".".join(str(p) for p in loc[i:])
        if rest in getattr(node, "moved", {}):
            new = node.moved[rest]
            return new if isinstance(new, str) else "moved to " + " and ".join(".".join([*prefix, k]) for k in new)
        prefix.append(str(part))
        if isinstance(part, int):  # an item of a list: the same section type
            continue
        field = node.model_fields.get(part) or next((f for f in node.model_fields.values() if f.alias == part), None)
        node = _section_type(field.annotation) if field is not None else None
    return None


def near_key(cls: type[BaseModel] | None, loc: tuple) -> str | None:
    """The key a misspelt one (at `loc`) most likely meant: a key of the same section close in spelling, or an
    earlier layout's key close in spelling (then where that lives now)."""
    import difflib

    candidates: dict[str, str] = {}  # a dotted key -> what to suggest
    node, prefix = cls, []
    for i, part in enumerate(loc):
        if node is None:
            return None
        for old, new in getattr(node, "moved", {}).items():
            if not isinstance(new, str):
                candidates[".".join([*prefix, old])] = " or ".join(".".join([*prefix, k]) for k in new)
        if i == len(loc) - 1:
            for name, field in node.model_fields.items():
                key = ".".join([*prefix, field.alias or name])
                candidates[key] = key
            break
        prefix.append(str(part))
        if isinstance(part, int):  # an item of a list: the same section type
            continue
        field = node.model_fields.get(part) or next((f for f in node.model_fields.values() if f.alias == part), None)
        node = _section_type(field.annotation) if field is not None else None
    close = difflib.get_close_matches(".".join(str(p) for p in loc), list(candidates), n=1, cutoff=0.8)
    return candidates[close[0]] if close else None


def format_validation_error(exc: ValidationError, source: str, cls: type[BaseModel] | None = None) -> str:
    """One line: the source, then every offending key with what is wrong with it (a key that has moved: where it
    lives now)."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        said = moved_to(cls, err["loc"]) if err["type"] == "extra_forbidden" else None
        if said is not None:
            problems.append(f"{key}: {said}")
            continue
        if err["type"] == "extra_forbidden":
            near = near_key(cls, err["loc"])
            problems.append(f"{key}: not a key of this config" + (f"; did you mean {near}?" if near else ""))
            continue
        got = f" (got {err['input']!r})" if err["type"] not in ("missing", "value_error") else ""
        message = err["msg"].removeprefix("Value error, ").replace("\n", " ")
        problems.append(f"{key}: {message}{got}" if err["loc"] else message)  # a whole-job check names its keys
    return f"invalid config ({source}): " + "; ".join(problems)


C = TypeVar("C", bound=BaseModel)


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Load `cls` from a YAML file (or the defaults when `path` is None), then apply dotted overrides."""
    data: Any = {}
    source = "defaults" if path is None else str(path)
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    for override in overrides:
        apply_override(data, override)
    if overrides:
        source += " + overrides " + " ".join(o if o.isprintable() and " " not in o else repr(o) for o in overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, cls)) from None


def field_order(model: type[BaseModel]) -> list[str]:
    """The model's fields as a reader wants them: those the class declares itself first (a job's paths), then
    those it inherits (the settings a pipeline's stage section shares with it)."""
    inherited = {
        n
        for base in model.__mro__[1:]
        if isinstance(base, type) and issubclass(base, BaseModel)
        for n in base.model_fields
    }
    own = [n for n in model.model_fields if n not in inherited]  # a variant declares none of its own
    return own + [n for n in model.model_fields if n in inherited]


def _fields(model: type[BaseModel], prefix: str = ""):
    """(dotted key, field info, default) of every field, sections expanded."""
    for name in field_order(model):
        field = model.model_fields[name]
        key = f"{prefix}{field.alias or name}"  # the key a config writes (`async`, the field `async_`)
        default = field.get_default(call_default_factory=True) if not field.is_required() else None
        if isinstance(default, BaseModel):
            yield from _fields(type(default), key + ".")
            continue
        ann = field.annotation
        if field.is_required() and isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, key + ".")
            continue
        yield key, field, default


def config_help(model: type[BaseModel]) -> str:
    """Every field of a job as `key = default  # description`: the commands' --help and `hrlaif config show`."""
    lines = []
    for key, field, default in _fields(model):
        # sections inside a value (a list of judges) as the mappings a YAML file writes, never their repr
        value = "(required)" if field.is_required() else json.dumps(to_jsonable_python(default), default=str)
        lines.append(f"  {key} = {value}" + (f"  # {field.description}" if field.description else ""))
    return "\n".join(lines)


def dump_config(config: BaseModel) -> str:
    """The config as YAML, in `field_order` (a job's paths first), loadable back to the same config."""
    data = config.model_dump(mode="json", by_alias=True)
    keys = [config.model_fields[n].alias or n for n in field_order(type(config))]
    return yaml.safe_dump({k: data[k] for k in keys}, sort_keys=False)
