"""`laborllm run`: the whole benchmark on one panel, resumable, written to one run folder.

run/
  config.json          profile, seed, data, models, package versions
  models/NAME/         one model folder per model (skipped on rerun when already fitted)
  metrics.json         the `evaluate --json` list, one row per (model, event set)
  logprobs/            per-event log-probabilities (Parquet), one file per (model, event set)
  comparison*.csv/md/tex, plots/*.png, report.html
"""
from __future__ import annotations

import json
import logging
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from laborllm import api
from laborllm.data.events import Events
from laborllm.evaluation.compare import comparison_table, write_tables
from laborllm.evaluation.metrics import evaluate as evaluate_log_probs
from laborllm.io import write_json_atomic
from laborllm.models.base import load_model

log = logging.getLogger(__name__)

# (name, kind, settings): the models of the benchmark, in table order
MODELS = [
    ("markov1", "markov", {"order": 1}),
    ("markov2", "markov", {"order": 2}),
    ("logit", "logit", {}),
    ("career", "career", {}),
    ("llm-titles", "llm", {"variant": "titles"}),
    ("llm-codes", "llm", {"variant": "codes"}),
    ("icl", "icl", {"variant": "titles"}),
]
LLM_KINDS = ("llm", "icl")
# Exact LLM scoring costs seconds per event on a 2-core CPU, so the quick profile scores the LLMs
# on a small common subset of test people, and every model is also compared on that subset.
SUBSET_PERSONS = {"quick": 1, "full": None}


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("laborllm", "torch", "transformers", "peft", "accelerate", "pandas", "numpy", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def subset(events: Events, n_persons: int | None, seed: int) -> Events:
    if not n_persons:
        return events
    ids = sorted(events.frame.person_id.unique())
    keep = set(np.random.default_rng(seed).choice(ids, size=min(n_persons, len(ids)), replace=False).tolist())
    return Events(events.panel, events.frame[events.frame.person_id.isin(keep)].reset_index(drop=True), events.seed)


def run(profile: str = "quick", out: str | Path | None = None, seed: int = 0, data: str = "nlsy97",
        models: list[str] | None = None, report: bool = True, base: str | None = None, **data_kw) -> list[dict]:
    """Fit (or reuse) every model, evaluate all on the same test events, write the run folder.
    `base` replaces the pretrained LM of the LLM models (a folder or GGUF file; default SmolLM2)."""
    if profile not in api.PROFILES:
        from laborllm.errors import UserError

        raise UserError(f"unknown profile {profile!r}; choose quick or full")
    out = Path(out or f"runs/{profile}")
    out.mkdir(parents=True, exist_ok=True)
    chosen = [m for m in MODELS if not models or m[0] in models]
    spec = api.data_spec(data, seed=seed, **data_kw)
    config = {"profile": profile, "seed": seed, "data": spec, "models": [m[0] for m in chosen],
              "subset_persons": SUBSET_PERSONS[profile], "versions": versions()}
    write_json_atomic(out / "config.json", config)
    events = api.events_for(spec)
    test = events.test
    sets = {"test": test}
    if SUBSET_PERSONS[profile]:
        sets["test-llm-subset"] = subset(test, SUBSET_PERSONS[profile], seed)
    results, timings = [], {}
    for name, kind, settings in chosen:
        folder = out / "models" / name
        t0 = time.time()
        if (folder / "model.json").exists():
            log.warning("%s: already fitted in %s, reusing it", name, folder)
            model = load_model(folder)
        else:
            log.warning("fitting %s (%s, %s profile)", name, kind, profile)
            extra = {"base": base} if base and kind in LLM_KINDS else {}
            model = api.fit(kind, data, folder, profile, seed=seed, name=name, **data_kw, **settings, **extra)
        for set_name, ev in sets.items():
            if kind in LLM_KINDS and set_name == "test" and "test-llm-subset" in sets:
                continue  # the quick profile scores LLMs on the subset only
            # the run's per-event file doubles as the cache a rerun reuses
            lp, extra = api.model_log_probs(model, out / "logprobs" / f"{name}-{set_name}.parquet", ev)
            r = evaluate_log_probs(lp, ev, model=name, split="test", normalization=model.normalization)
            r.update(extra, kind=kind, events=set_name, profile=profile, fit_seconds=model.meta.get("fit_seconds"),
                     subset_note=_subset_note(model, set_name, ev))
            results.append(r)
        timings[name] = round(time.time() - t0, 1)
    write_json_atomic(out / "metrics.json", [{k: v for k, v in r.items() if k != "reliability"} for r in results])
    write_json_atomic(out / "calibration.json", {f"{r['model']}|{r['events']}": r["reliability"] for r in results})
    for set_name in sets:
        rows = [r for r in results if r["events"] == set_name]
        if rows:
            write_tables(comparison_table(rows), out, f"comparison-{set_name}")
    config["timings_seconds"] = timings
    write_json_atomic(out / "config.json", config)
    if report:
        from laborllm.report import write_report

        write_report(out, results, events, sets, chosen, profile, seed)
    return results


def _subset_note(model, set_name: str, ev: Events) -> str:
    notes = []
    if set_name != "test":
        n = ev.frame.person_id.nunique()
        notes.append(f"scored on {n} test {'person' if n == 1 else 'people'} ({len(ev)} events)")
    if model.meta.get("subset") == "yes":
        how = "LoRA" if model.config.get("lora") else "full fine-tune"
        steps = model.config.get("max_steps")
        notes.append(f"fine-tuned on {model.meta.get('train_persons')} training people, {how}"
                     + (f", {steps} steps" if steps and steps > 0 else ""))
    return "; ".join(notes)


def load_results(out: str | Path) -> list[dict]:
    return json.loads((Path(out) / "metrics.json").read_text())
