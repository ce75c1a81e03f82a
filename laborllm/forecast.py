"""Predict the next state and simulate futures for given histories, with any fitted model.

A history is a table of person-years (``person_id`` optional, ``year``, ``occupation`` and any
covariates). The model scores a hypothetical next year appended to each person's history; the
models only look at the history before the year they predict, so the placeholder state of that
year is never seen.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from laborllm.data.events import Events
from laborllm.data.panel import OPTIONAL, REQUIRED, YEARS, Panel, read_table
from laborllm.data.schemes import MISSING, Scheme
from laborllm.errors import DataError, UserError
from laborllm.models.base import Model


MAX_YEARS, MAX_PATHS = 100, 1_000_000  # simulate: years ahead, and sampled person-years in all


def for_forecast(model: Model) -> Model:
    """The model as forecasts read it: LLMs with the constrained normalisation (exact, a proper
    distribution over the states, and within 1 s per history on a CPU, where the renormalised scorer
    takes seconds per NLSY97 event); `model.normalization` says how, to be shown with the forecast."""
    return model.read_as(scoring="constrained") if "scoring" in model.read_keys() else model


def read_history(source: str | Path) -> pd.DataFrame:
    """JSON (a list of person-years, or {"person": {...covariates}, "history": [...]}) or a table
    file; '-' reads JSON from standard input."""
    if str(source) == "-":
        return _from_json(sys.stdin.read(), "<stdin>")
    p = Path(source)
    if p.suffix.lower() == ".json":
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        return _from_json(p.read_text(encoding="utf-8-sig"), str(p))
    return read_table(p, types=".json, .csv, .csv.gz, .tsv, .parquet or .dta")


def _from_json(text: str, source: str) -> pd.DataFrame:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{source}: not valid JSON ({e})") from None
    return history_frame(obj, source)


def history_frame(obj, source: str = "history") -> pd.DataFrame:
    """A parsed JSON history (a list of person-years, or {"person": {...}, "history": [...]}) as a table."""
    if isinstance(obj, dict):
        person, rows = obj.get("person", {}), obj.get("history", [])
        if not isinstance(person, dict):
            raise DataError(f"{source}: \"person\" must be an object of covariates, e.g. {{\"gender\": \"woman\"}}")
        stray = [k for k in obj if k not in ("person", "history", "person_id")]
        if stray:  # a covariate beside "history" would otherwise be ignored without a word
            raise DataError(f"{source}: unknown key(s) {', '.join(map(json.dumps, stray))} at the top level; "
                            "covariates go in \"person\": {\"gender\": ..., \"birth_year\": ...}")
        if "person_id" in obj:
            person = {"person_id": obj["person_id"], **person}
    elif isinstance(obj, list):
        person, rows = {}, obj
    else:
        person, rows = {}, []
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{source}: no history rows (expected a list of {{year, occupation}} objects)")
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise DataError(f"{source}: history row {bad[0] + 1} is not an object with year and occupation "
                        f"(got {json.dumps(rows[bad[0]])[:40]})")
    known = {"person_id", *REQUIRED, *OPTIONAL}
    for where, keys in [("\"person\"", person), *((f"history row {i + 1}", r) for i, r in enumerate(rows))]:
        stray = sorted(set(keys) - known)
        if stray:  # a misspelt covariate (educaton) would otherwise be ignored without a word
            raise DataError(f"{source}: unknown key(s) {', '.join(map(json.dumps, stray))} in {where}; "
                            f"known: {', '.join(sorted(known))}")
    return pd.DataFrame([{**person, **r} for r in rows])


def check_covariate_levels(model: Model, frame: pd.DataFrame, source: str) -> None:
    """A covariate value the model never saw in fitting ("womn", "Bachelors") would be read as
    nothing or as new words: refused, naming the value and the levels the model knows."""
    for col, levels in (model.meta.get("covariate_levels") or {}).items():
        if col in frame:
            unknown = sorted(set(frame[col].dropna().astype(str)) - set(levels))
            if unknown:
                raise DataError(f"{source}: {col} {unknown[0]!r} is not a level the model knows; "
                                f"known: {', '.join(levels)}")


def scheme_of(model: Model) -> str:
    """The occupation scheme of the data a model was fitted on."""
    return model.meta.get("scheme") or model.meta.get("data", {}).get("scheme") or "occ1990dd"


def history_events(model: Model, history: pd.DataFrame, source: str = "history") -> Events:
    """Events for the year after each person's last year, in the model's state set."""
    h = history.copy()
    if "person_id" not in h:
        h["person_id"] = 1
    base = Panel.from_frame(h, source=source, scheme=scheme_of(model),
                            unknown_hint=f"; use the states the model knows ({len(model.states)}, listed in its model.json)",
                            columns_hint="; a history needs the columns year and occupation (person_id optional)")
    f = base.frame
    check_covariate_levels(model, f, source)
    bad = set(f.state) - set(model.states) - {MISSING}
    if bad:
        raise DataError(f"{source}: state(s) unknown to the model: {', '.join(sorted(bad)[:5])}")
    last = f.groupby("person_id").tail(1).copy()
    # the year after the history's last year, even when that year (or several) is Missing: the panel
    # drops trailing Missing years, so they come back as Missing lines of the history
    final = pd.to_numeric(h.year, errors="coerce").groupby(h.person_id.astype(str)).max()
    end = last.person_id.astype(str).map(final).astype("int64").to_numpy()
    n = end - last.year.to_numpy()  # trailing Missing years of each person
    ext = last.loc[last.index.repeat(n + 1)].copy()
    ext["year"] = ext.year + ext.groupby(level=0).cumcount() + 1
    # Missing up to the last year given; then the target, whose placeholder state is never an input
    ext["state"] = np.where(ext.year.to_numpy() > np.repeat(end, n + 1), model.states[0], MISSING)
    frame = pd.concat([f, ext]).drop(columns="state_id").sort_values(["person_id", "year"])
    panel = Panel(frame.reset_index(drop=True), Scheme(scheme_of(model)), source, states=list(model.states))
    ev = Events.from_panel(panel)
    ev.frame = ev.frame.groupby("person_id").tail(1).reset_index(drop=True)
    ev.frame["split"] = "test"
    return ev


def next_distribution(model: Model, history: pd.DataFrame, source: str = "history") -> tuple[Events, np.ndarray]:
    """The events of the year after each person's history and the model's probabilities for them."""
    ev = history_events(model, history, source)
    return ev, np.exp(model.log_probs(ev))


def predict(model: Model, history: pd.DataFrame, top: int = 10, source: str = "history") -> pd.DataFrame:
    table = top_states(model, *next_distribution(model, history, source), top)
    if "person_id" in history:  # the ids as given: a string "7" stays a string (the panel reads it as a number)
        given = {str(v): v for v in history.person_id}
        table["person_id"] = table.person_id.map(lambda v: given.get(str(v), v)).astype(object)
    return table


def top_states(model: Model, ev: Events, p: np.ndarray, top: int = 10) -> pd.DataFrame:
    """The `top` most probable next states of each event, ranked."""
    rows = []
    for i, r in ev.frame.iterrows():
        for rank, k in enumerate(np.argsort(-p[i])[:top], 1):
            rows.append({"person_id": r.person_id, "year": int(r.year), "rank": rank, "state": model.states[k],
                         "probability": float(p[i, k])})
    return pd.DataFrame(rows)


def simulate(model: Model, history: pd.DataFrame, years: int = 5, samples: int = 10, seed: int = 0,
             source: str = "history", on_year=None) -> pd.DataFrame:
    """Sampled futures: each sample is a copy of each person's history extended year by year.
    `on_year`: called after each simulated year, for a caller's own progress line (then none here)."""
    from tqdm.auto import tqdm

    h = history.copy()
    if "person_id" not in h:
        h["person_id"] = 1
    if not 1 <= years <= MAX_YEARS:
        raise UserError(f"--years must be between 1 and {MAX_YEARS}, got {years}")
    if samples < 1 or samples * years * h.person_id.nunique() > MAX_PATHS:
        raise UserError(f"--samples must be at least 1, and samples x years x people at most {MAX_PATHS:,} "
                        f"(got {samples} x {years} x {h.person_id.nunique()})")
    last_year = pd.to_numeric(h.year, errors="coerce").max()
    if pd.notna(last_year) and last_year + years > YEARS[1]:  # refused now, not after simulating part of it
        raise UserError(f"{source}: simulating {years} years after {int(last_year)} would pass {YEARS[1]}; "
                        f"use --years {max(1, YEARS[1] - int(last_year))} or fewer")
    rng = np.random.default_rng(seed)
    # each sample's copy of a person gets a fresh id; the original ids come back from this list, so
    # an id may hold any character
    ids = list(pd.unique(h.person_id))
    index = {pid: k for k, pid in enumerate(ids)}
    copies = []
    for s in range(samples):
        c = h.copy()
        c["sample"] = s
        c["person_id"] = [f"{s}:{index[pid]}" for pid in h.person_id]
        copies.append(c)
    cur = pd.concat(copies, ignore_index=True)
    # copies whose futures so far are the same have the same history: each such history is scored once
    # (all samples share the first year; the draws are as if every copy had been scored)
    path = {cid: (cid.split(":")[1],) for cid in pd.unique(cur.person_id)}
    out = []
    big = samples * h.person_id.nunique() >= 10_000  # a long job however few the years: show where it is
    for _ in tqdm(range(years), desc="simulating", unit="year", disable=on_year is not None or (years < 3 and not big),
                  leave=False):
        ev = history_events(model, cur.drop(columns="sample"), source)
        first, same = {}, np.empty(len(ev), dtype=int)
        for i, pid in enumerate(ev.frame.person_id):
            same[i] = first.setdefault(path[pid], len(first))
        scored = np.zeros(len(ev), dtype=bool)
        scored[np.unique(same, return_index=True)[1]] = True  # the first copy of each distinct history
        p = np.exp(model.log_probs(ev.where(scored)))[same]
        p /= p.sum(1, keepdims=True)
        pick = [model.states[rng.choice(len(model.states), p=row)] for row in p]
        for pid, state in zip(ev.frame.person_id, pick):
            path[pid] += (state,)
        nxt = cur.groupby("person_id").tail(1).set_index("person_id").loc[ev.frame.person_id].reset_index()
        nxt["year"] = ev.frame.year.to_numpy()
        nxt["occupation"] = pick  # covariates carry forward from the last year
        out.append(nxt)
        cur = pd.concat([cur, nxt], ignore_index=True)
        if on_year:
            on_year()
    sims = pd.concat(out, ignore_index=True)
    sims["person_id"] = [ids[int(x.split(":")[1])] for x in sims.person_id.astype(str)]
    return sims[["person_id", "sample", "year", "occupation"]].sort_values(["person_id", "sample", "year"])
