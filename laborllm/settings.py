"""Model settings: each model kind declares one typed `Settings` dataclass (a type, a default, a
help text and the allowed range or choices per field) and its presets (quick, full) beside it.

`layered` is the one place the layers meet: preset -> config file -> `--set` (-> a run profile's
own settings, then the user's overrides, in `laborllm run`). `check_settings` checks a built
model's settings against the dataclass before any work starts; `settings_help` lists them for
`fit --help` and the model card. A model holds an instance of its dataclass (`model.settings.lr`),
built once from the checked layers; `model.config` is the same as a plain dict, the form saved in
model.json.

Each setting declares its role: "fit" (the default) defines what fitting produces; "read" only
changes how a fitted model is read (an LLM's scoring mode or precision); "run" only changes how the
work goes (checkpoint interval, tokens per pass); "source" names where an input of the fit is found
(a mixture's members, a head's LLM): the fit is identified by that input's content
(`Model.identity_inputs`), so moving a run folder is not a new fit. What defines a fit is therefore
written once:
`fit_settings` and `fit_differences` serve run reuse, CAREER's checkpoints and the LLM's alike.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, field, fields

from laborllm.errors import UserError


ROLES = ("fit", "read", "run", "source")


def setting(default, help: str, lo=None, hi=None, choices: tuple = (), role: str = "fit"):
    """One field of a `Settings` dataclass: its default, what it does, its range or its choices, and
    its role (see the module's note)."""
    assert role in ROLES, role
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "choices": tuple(choices), "role": role})


def with_role(settings_cls, *roles: str) -> tuple[str, ...]:
    """The names of the settings that play one of `roles`."""
    return tuple(f.name for f in fields(settings_cls) if f.metadata.get("role", "fit") in roles)


def fit_settings(settings_cls, config: dict) -> dict:
    """The settings that define the fit, as JSON reads them back (what is saved and compared)."""
    return json.loads(json.dumps({k: config.get(k) for k in with_role(settings_cls, "fit")}, default=str))


def fit_differences(stored: dict, wanted: dict, settings_cls) -> list[str]:
    """The fit settings in which a stored fit (a model folder's identity, a checkpoint's stamp) differs
    from the one asked for; [] when it is the same fit. Carried over deliberately: a setting the stored
    fit predates counts as equal when asked for at its default, and a stored setting that is no longer
    a fit setting (now read- or run-only) is not compared."""
    base = fit_settings(settings_cls, defaults(settings_cls))
    return [k for k in wanted if (stored[k] if k in stored else base.get(k)) != wanted[k]]


def defaults(settings_cls) -> dict:
    return asdict(settings_cls())


def layered(*layers: dict | None) -> dict:
    """The settings asked for: each layer over the one before (None: no layer), e.g. a preset's, then
    a config file's [model] table, then `--set`."""
    out = {}
    for layer in layers:
        out.update(layer or {})
    return out


def parse_sets(items: list[str]) -> dict:
    """--set key=value (value parsed as JSON when it can be: numbers, true/false, lists)."""
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        if not _ or not k.strip():
            raise UserError(f"--set expects key=value with a setting's name before '=', got {item!r}")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def check_settings(kind: str, settings_cls, given: dict) -> dict:
    """The defaults with `given` over them, or a UserError naming the first unknown or bad setting and
    what it must be. Whole numbers written as floats (1.0, 1e3) are made integers where one is wanted."""
    known = {f.name: f for f in fields(settings_cls)}
    unknown = set(given) - set(known) - {"name"}
    if unknown:  # checked here, so every way of building a model refuses a misspelt setting
        raise UserError(f"unknown setting(s) for {kind}: {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(known))}")
    out = {**defaults(settings_cls), **given}
    for key, value in given.items():
        if key == "name":
            continue
        f = known[key]
        want, none_ok = _type(f)
        if value is None:
            if none_ok:
                continue
            raise UserError(f"{kind}: setting {key} cannot be empty (default {f.default!r})")
        out[key] = value = _coerce(kind, key, value, want)
        lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
        if want in ("int", "float") and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise UserError(f"{kind}: setting {key}={value!r} is out of range; expected {_range(want, lo, hi)}")
        if choices and value not in choices:
            raise UserError(f"{kind}: unknown {key} {value!r}; choose {' or '.join(map(str, choices))}")
    return out


def settings_help(settings_cls) -> list[str]:
    """One line per setting: name, type, default and what it does."""
    lines = []
    for f in fields(settings_cls):
        want, none_ok = _type(f)
        default = f.default if f.default is not MISSING else None
        choices = f.metadata.get("choices")
        kind = " | ".join(choices) if choices else want + (" or none" if none_ok else "")
        role = {"read": " (read: can change after fitting)", "run": " (how the work goes: can change after fitting)",
                "source": " (where it is found: the fit is identified by its content)"}
        lines.append(f"{f.name} ({kind}, default {default!r}): {f.metadata.get('help', '')}"
                     f"{role.get(f.metadata.get('role'), '')}")
    return lines


def settings_card(settings_cls, config: dict) -> list[str]:
    """One line per setting as a model was fitted: name, value and what it does (for the model card)."""
    return [f"{f.name} = {json.dumps(config.get(f.name), default=str)}: {f.metadata.get('help', '')}"
            for f in fields(settings_cls)]


def _type(f) -> tuple[str, bool]:
    """The field's type from its annotation ("int", "float | None", ...) and whether None is allowed."""
    parts = [p.strip() for p in str(f.type).split("|")]
    return parts[0], "None" in parts


def _coerce(kind: str, key: str, value, want: str):
    bad = UserError(f"{kind}: setting {key}={value!r} must be {_article(want)}")
    if want == "bool":
        if isinstance(value, bool):
            return value
        raise bad
    if want in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        if want == "int":
            if value != int(value):
                raise bad
            return int(value)
        return value
    if want == "str" and not isinstance(value, str):
        raise bad
    if want == "list" and isinstance(value, str):  # --set pool=a,b
        return [v.strip() for v in value.split(",") if v.strip()]
    if want == "list" and not isinstance(value, list):
        raise bad
    return value


def _article(t: str) -> str:
    return {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text",
            "list": "a list"}.get(t, t)


def _range(t: str, lo, hi) -> str:
    what = "a whole number" if t == "int" else "a number"
    if lo is not None and hi is not None:
        return f"{what} from {lo:g} to {hi:g}"
    return f"{what} of at least {lo:g}" if lo is not None else f"{what} of at most {hi:g}"
