"""Every model setting checked for type and range when a model is built, before any work starts.

A rule is (type, low, high, may_be_none): type one of int, float, bool, str, list; low/high inclusive
bounds (None: unbounded). Settings without a rule take their type from the default value. Choices
(variant, precision, scoring, pool_mode) are checked by the models themselves.
"""
from __future__ import annotations

import math

from laborllm.errors import UserError

_BIG = 10**6
RULES = {
    "seed": ("int", 0, 2**32 - 1, False),
    "epochs": ("int", 0, 1000, False),
    "pretrain_epochs": ("int", 0, 1000, False),
    "lr": ("float", 1e-9, 10, False),
    "batch_size": ("int", 1, 65536, False),
    "weight_decay": ("float", 0, 10, False),
    "order": ("int", 1, 2, False),
    "alpha": ("float", 1e-12, 1e6, True),
    "beta": ("float", 1e-12, 1e6, True),
    "l2": ("float", 0, 1e6, True),
    "max_iter": ("int", 1, 100_000, False),
    "layers": ("int", 1, 128, False),
    "d": ("int", 1, 65536, False),
    "heads": ("int", 1, 1024, False),
    "ff": ("int", 1, 1 << 20, False),
    "dropout": ("float", 0, 0.99, False),
    "warmup_steps": ("int", 1, _BIG, True),
    "patience": ("int", 1, 1000, False),
    "clip": ("float", 1e-9, 1e6, False),
    "min_steps": ("int", 0, _BIG, False),
    "lora_r": ("int", 1, 4096, False),
    "lora_layers": ("int", 1, 1024, True),
    "lora_alpha": ("float", 1e-9, 1e6, False),
    "warmup_ratio": ("float", 0, 1, False),
    "max_steps": ("int", -1, 10 * _BIG, False),
    "max_train_persons": ("int", 1, 10**9, True),
    "max_valid_persons": ("int", 1, 10**9, True),
    "pool_persons": ("int", 1, 10**9, True),
    "score_max_tokens": ("int", 64, 1 << 20, True),
    "pack_tokens": ("int", 0, 1 << 20, False),
    "checkpoint_minutes": ("float", 0, 10_000, False),
    "shots": ("int", 0, 100, False),
    "max_shot_years": ("int", 1, 200, False),
}


def check_settings(kind: str, config: dict, defaults: dict) -> dict:
    """The settings as given, or a UserError naming the first bad one and what it must be. Whole
    numbers written as floats (1.0, 1e3) are accepted where an integer is wanted and made integers."""
    out = dict(config)
    for key, value in config.items():
        if key == "name" or key not in defaults:
            continue
        default = defaults[key]
        kind_, lo, hi, none_ok = RULES.get(key, (_type_of(default), None, None, default is None))
        if value is None:
            if none_ok or default is None:
                continue
            raise UserError(f"{kind}: setting {key} cannot be empty (default {default!r})")
        out[key] = value = _coerce(kind, key, value, kind_)
        if kind_ in ("int", "float") and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise UserError(f"{kind}: setting {key}={value!r} is out of range; expected {_range(kind_, lo, hi)}")
    return out


def _type_of(default) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, (list, tuple)):
        return "list"
    return "str" if isinstance(default, str) else "any"


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
    return value


def _article(t: str) -> str:
    return {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text",
            "list": "a list"}.get(t, t)


def _range(t: str, lo, hi) -> str:
    what = "a whole number" if t == "int" else "a number"
    if lo is not None and hi is not None:
        return f"{what} from {lo:g} to {hi:g}"
    return f"{what} of at least {lo:g}" if lo is not None else f"{what} of at most {hi:g}"
