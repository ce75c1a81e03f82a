"""The Python API behind the CLI: fit a model, evaluate model folders, compare them."""
from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from laborllm.data import Events
from laborllm.data.events import sample_ids
from laborllm.data.spec import data_spec, events_for  # noqa: F401 (the API's data entry points)
from laborllm.errors import UserError
from laborllm.evaluation.metrics import attach_paired, evaluate as evaluate_log_probs
from laborllm.files import OutputLock, write_json_atomic
from laborllm.machine import machine
from laborllm.distributed import is_main_process
from laborllm.models.base import Model
from laborllm.models.folder import check_output_folder
from laborllm.models.registry import KINDS, load_model
from laborllm.models.score_cache import kept_log_probs, model_log_probs
from laborllm.settings import fit_differences, layered
from laborllm.profiles import check_preset

log = logging.getLogger(__name__)


def read_config(path: str | Path | None) -> dict:
    """A TOML or JSON file: top-level data keys (data, columns, scheme, unknown, seed, codebook, century) and a
    [model] table of model settings."""
    if path is None:
        return {}
    p = Path(path)
    try:
        text = p.read_text()
        if p.suffix == ".toml":
            import tomllib  # Python 3.11+; use a JSON config on 3.10

            cfg = tomllib.loads(text)
        else:
            cfg = json.loads(text.lstrip("\ufeff"))
    except FileNotFoundError:
        raise UserError(f"{p}: no such config file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a folder, not a config file") from None
    except ValueError as e:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        raise UserError(f"{p}: cannot parse config as {kind} ({e}); a config file is .toml or .json"
                        + ("; YAML is not read" if p.suffix in (".yaml", ".yml") else "")) from None
    if not isinstance(cfg, dict):
        raise UserError(f"{p}: the config must be a table of keys (data, columns, scheme, unknown, seed, [model])")
    if not isinstance(cfg.get("model", {}), dict):
        raise UserError(f"{p}: [model] must be a table of model settings")
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:  # a misspelt key (sead) would otherwise be ignored without a word
        raise UserError(f"{p}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}")
    return cfg


CONFIG_KEYS = {"data", "columns", "scheme", "unknown", "seed", "codebook", "century", "preset", "profile", "model"}


def make_model(kind: str, preset: str = "quick", **overrides) -> Model:
    if kind not in KINDS:
        raise UserError(f"unknown model {kind!r}; choose one of {', '.join(KINDS)}")
    cls = KINDS[kind]
    return cls(**layered(cls.presets.get(check_preset(preset), {}), overrides))


def fit_identity(model: Model, events: Events) -> dict:
    """Everything that defines a fit, by content: the model's kind and fit settings, the panel's
    content and split (its events), the pretrained LM's weights, the panels it pools or pretrains on.
    A model folder is reused only when its identity equals the one asked for."""
    ident = {"kind": model.kind, "name": model.name, "settings": model.fit_settings(),
             "panel": events.panel.fingerprint(), "events": events.fingerprint()}
    if model.language_model:
        from laborllm.lm.loading import base_fingerprint

        ident["base"] = base_fingerprint(model.settings.base)
    for key in model.data_settings:
        names = getattr(model.settings, key) or []
        ident[key] = [_panel_print(key, n) for n in ([names] if isinstance(names, str) else names)]
    return ident | model.identity_inputs()


def covariate_levels(panel) -> dict:
    """The levels of each categorical covariate the model was fitted with: a forecast given another
    value ("womn") is refused instead of read as nothing."""
    from laborllm.data.panel import CATEGORICAL

    f = panel.frame
    return {c: sorted(f[c].dropna().astype(str).unique()) for c in CATEGORICAL if c in f}


def _panel_print(setting: str, name: str) -> str:
    from laborllm.data.loaders import load_panel

    try:
        return load_panel(name).fingerprint()
    except UserError as e:
        raise UserError(f"{setting} {name!r}: {e}") from None


def identity_differences(stored: dict | None, wanted: dict, settings_cls) -> list[str]:
    """What differs between a fitted model's identity and the one asked for ([] when it is the same
    fit); its settings compared as every fit is (laborllm.settings.fit_differences)."""
    if not stored:
        return ["no record of what it was fitted on"]
    diff = [k for k in wanted if k != "settings" and stored.get(k) != wanted[k]]
    return diff + fit_differences(stored.get("settings", {}), wanted["settings"], settings_cls)


def fit(kind: str, data="nlsy97", out: str | Path | None = None, preset: str = "quick", *, columns=None,
        scheme=None, unknown="error", seed: int = 0, codebook=None, century=None, settings: dict | None = None,
        **model_config) -> Model:
    """Fit a model on the train split (valid for tuning) and save it to `out` if given. `seed` is the
    split's; model settings (a model's own `seed` among them) come as `settings` or keywords."""
    spec = data_spec(data, columns, scheme, unknown, seed, codebook, century)
    model = make_model(kind, preset, **{**(settings or {}), **model_config})  # bad settings: refused now
    return fit_model(model, spec, out, preset)


def fit_model(model: Model, spec: dict, out: str | Path | None = None, preset: str = "quick") -> Model:
    """Fit this model (built by `make_model`) on the data `spec` names, and save it to `out` if given."""
    if out is not None:
        check_output_folder(Path(out))  # refused before the work, not after
    events = events_for(spec)
    for split in ("train", "valid"):
        if not (events.frame.split == split).any():
            n = events.panel.n_persons
            why = (f"only {n} people: the 70/15/15 split leaves none of them in {split}" if n < 10 else
                   "no person in it has two or more observed years")
            raise UserError(f"{spec['data']}: no {split} events ({why}); the panel is too small to fit a model")
    model.meta.update(profile=preset, scheme=events.panel.scheme.name, fit_identity=fit_identity(model, events),
                      covariate_levels=covariate_levels(events.panel))
    if out is not None:
        model.work_dir = Path(out)  # models that checkpoint during training resume from here
    with OutputLock(Path(out)) if out is not None and is_main_process() else nullcontext():
        t0 = time.time()
        model.fit(events)
        # timed here, for every kind; a fit resumed from checkpoints adds its earlier pieces' time
        model.meta["fit_seconds"] = round(time.time() - t0 + model.resumed_seconds(), 1)
        model.meta["fit_machine"] = machine()  # a fit's seconds mean little without the machine
        model.meta["events_fingerprint"] = events.fingerprint()
        if out is not None and is_main_process():
            model.save(out, spec)
    return model


UNNORMALISED = "unnormalised: log P(observed state text) only, not renormalised over the states"


def evaluate_unnormalised(model: Model, events: Events, n_boot: int = 500) -> dict:
    """The cheap LLM figure: perplexity of the observed state's text alone, one pass per person."""
    from laborllm.evaluation.metrics import bootstrap_perplexity_ci

    if not model.language_model:
        raise UserError(f"{model.name}: the unnormalised mode applies to LLM models only")
    nll = -model.true_log_probs(events)
    return {"model": model.name, "split": events.frame.split.iloc[0], "n_events": len(events),
            "perplexity": float(np.exp(nll.mean())),
            "perplexity_ci95": list(bootstrap_perplexity_ci(nll, events.frame.person_id.to_numpy(), None, n_boot)),
            "top1": None, "top5": None, "normalization": UNNORMALISED, "events_fingerprint": events.fingerprint()}


def sample_of(events: Events, persons: int | None, seed: int = 0) -> tuple[np.ndarray, Events, dict]:
    """The events of a seeded sample of `persons` of these events' people (all of them with None): the
    mask, the events, and what the sample is (people, seed, of how many people and events)."""
    ids = sample_ids(events.frame.person_id, persons, seed)
    mask = events.frame.person_id.isin(ids).to_numpy() if ids is not None else np.ones(len(events), dtype=bool)
    sample = events.where(mask) if ids is not None else events
    return mask, sample, {"persons": int(sample.frame.person_id.nunique()), "seed": seed,
                          "of_persons": int(events.frame.person_id.nunique()), "of_events": len(events)}


def evaluate(folders, split: str = "test", n_boot: int = 500, unnormalised: bool = False,
             persons: int | None = None, seed: int = 0) -> list[dict]:
    """Metrics of each model folder on the same split; refuses different event sets in compare().
    `unnormalised`: the cheap LLM mode (observed state only), labelled as such in every row.
    `persons`: only that many of the split's people, a sample drawn with `seed` (a model too slow for
    the whole split, set against the others on the same people); a model whose scores of the whole
    split are kept (a run's, an earlier evaluate's) reads its rows from them instead of scoring again."""
    results, nll = [], {}
    for folder in map(Path, folders):
        model = load_model(folder)
        if not model.meta.get("data"):
            raise UserError(f"{folder}: the model does not record the data it was fitted on")
        everything = events_for(model.meta["data"])
        fitted_on = model.meta.get("events_fingerprint")
        if fitted_on and fitted_on != everything.fingerprint():
            # people added to or removed from the data file move people between the splits: some
            # "test" people would be people the model trained on
            raise UserError(f"{folder}: the data {model.meta['data'].get('data')} is not what the model was fitted on "
                            "(its people, years or occupations changed since: the split or the targets would not be the ones "
                            "it was fitted and scored on); evaluate on the data as it was, "
                            "or fit the model again")
        whole = everything.subset(split)
        mask, events, about = sample_of(whole, persons, seed)
        if list(model.states) != list(events.states):
            raise UserError(f"{folder}: the model's state set differs from the data's ({len(model.states)} vs "
                            f"{len(events.states)} states); was the panel changed after fitting?")
        if unnormalised:
            results.append(evaluate_unnormalised(model, events, n_boot) | {"kind": model.kind, "folder": str(folder)})
            continue
        tag = split + (f"-{persons}people-seed{seed}" if persons else "")  # what the files beside it are of
        kept = kept_log_probs(model, folder, whole)  # a run's scores, or an earlier evaluate's
        if kept is not None:  # (the time to score the whole split is not this sample's)
            lp, extra = kept[0][mask], {k: v for k, v in kept[1].items() if not (persons and k.startswith("score_seconds"))}
        else:
            lp, extra = model_log_probs(model, folder / f"logprobs-{tag}.parquet", events)
        name = model.name if model.name not in nll else f"{model.name} ({folder})"  # two folders, one name
        r = evaluate_log_probs(lp, events, model=name, split=split, normalization=model.normalization, n_boot=n_boot)
        if persons:
            r["sample"] = about
        r.update(extra, kind=model.kind, folder=str(folder), label=model.describe())
        nll[name] = events.target_nll(lp)
        try:
            if is_main_process():
                write_json_atomic(folder / f"metrics-{tag}.json", r)
        except OSError as e:
            log.warning("%s: cannot write metrics-%s.json (%s)", folder, tag, e.strerror or e)
        results.append(r)
    if len(results) > 1 and len({r["events_fingerprint"] for r in results}) == 1 and len(nll) == len(results):
        attach_paired(results, nll, events, n_boot)
    return results
