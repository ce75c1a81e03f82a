"""The explorer's answers as plain dicts, computed by the same functions as `laborllm predict`,
`simulate` and the run report (no second implementation): a history's next-state distribution,
sampled futures summarised by broad occupation group, a run's comparison, a real test person."""
from __future__ import annotations

import pandas as pd

from laborllm.data.schemes import Scheme
from laborllm.errors import DataError, UserError
from laborllm.forecast import history_frame, next_distribution, scheme_of, simulate, top_states
from laborllm.data.panel import PERSON
from laborllm.serve.catalog import Entry

EXAMPLE_PATHS = 5  # sampled futures shown as text


def next_states(entry: Entry, history: dict, top: int = 10) -> dict:
    """The top next states with probabilities, the probability of staying, and how the row was
    normalised: `laborllm predict`'s answer for the same history and model."""
    model = entry.model()
    frame = _one_person(history)
    with entry.lock:
        ev, p = next_distribution(model, frame, "history")
    table = top_states(model, ev, p, top)
    p = p[0]
    last = int(ev.frame.last_state.iloc[0])
    last = last if last >= 0 else None
    return {"model": entry.key, "year": int(table.year.iloc[0]), "normalization": model.normalization,
            "top": [{"rank": int(r.rank), "state": r.state, "probability": float(r.probability)}
                    for r in table.itertuples(index=False)],
            "last_state": model.states[last] if last is not None else None,
            "stay_probability": float(p[last]) if last is not None else None}


# years x samples one request may ask: the page's default (5 x 100) times ten. The explorer's load
# test measured simulate at p95 4.6-6.1 s, and a request within the former caps (10,000 samples x 100
# years) at 20 times the largest measured; this bounds a request to seconds
MAX_REQUEST_PATHS = 5_000


def futures(entry: Entry, history: dict, years: int = 5, samples: int = 100, seed: int = 0) -> dict:
    """`laborllm simulate`'s sampled paths for one history, with the share of paths in each broad
    occupation group by year (the picture) and a few paths as text."""
    if years * samples > MAX_REQUEST_PATHS:
        raise UserError(f"at most {MAX_REQUEST_PATHS:,} sampled years (years x samples) per request, so that each "
                        f"answers within seconds; asked {years} x {samples}. Ask for fewer, or use `laborllm simulate`")
    model = entry.model()
    frame = _one_person(history)
    with entry.lock:
        # on_year: no progress bar in the server's console for a request
        sims = simulate(model, frame, years, samples, seed, source="history", on_year=lambda: None)
    scheme = Scheme(scheme_of(model))
    sims = sims.assign(group=sims.occupation.map(scheme.group_of))
    share = (sims.groupby(["year", "group"]).size() / sims.groupby("year").size()).rename("share").reset_index()
    paths = [{"sample": int(s), "path": [{"year": int(r.year), "occupation": r.occupation} for r in g.itertuples()]}
             for s, g in list(sims.groupby("sample"))[:EXAMPLE_PATHS]]
    return {"model": entry.key, "years": years, "samples": samples, "seed": seed,
            "normalization": model.normalization,
            "shares": [{"year": int(r.year), "group": r.group, "share": float(r.share)} for r in share.itertuples()],
            "paths": paths,
            "occupations": [{"sample": int(r.sample), "year": int(r.year), "occupation": r.occupation}
                            for r in sims.itertuples()]}


def test_people(entry: Entry, limit: int = 200) -> list[str]:
    """Ids of test people of the model's panel, in a fixed order (the first `limit`)."""
    test = _events(entry).test
    return [str(p) for p in pd.unique(test.frame.person_id)[:limit]]


def test_person(entry: Entry, person_id: str) -> dict:
    """A real test person of the model's panel as a history: every observed year with its covariates."""
    test = _events(entry).test
    ids = {str(p) for p in pd.unique(test.frame.person_id)}
    if str(person_id) not in ids:
        raise UserError(f"no test person {person_id!r} in {entry.meta.get('data', {}).get('data')}")
    rows = test.panel.person(person_id)
    covs = [c for c in PERSON if c in rows]
    history = []
    for r in rows.itertuples(index=False):
        row = {"year": int(r.year), "occupation": r.state}
        for c in covs:
            v = getattr(r, c)
            if not pd.isna(v):
                row[c] = int(v) if c == "birth_year" else str(v)
        history.append(row)
    return {"person_id": str(person_id), "history": history}


def comparison(metrics: list[dict]) -> list[dict]:
    """A run's rows for the compare view: perplexity with its interval and the paired ratio against
    each other model on the same panel, per panel; subgroups kept for the subgroup picker."""
    keep = ("data", "model", "label", "kind", "n_events", "n_persons", "perplexity", "perplexity_ci95", "top1",
            "top5", "ece", "normalization", "paired", "subgroups")
    return [{k: r.get(k) for k in keep} for r in metrics]


def _one_person(history: dict) -> pd.DataFrame:
    frame = history_frame(history, "history")
    if "person_id" in frame and frame.person_id.nunique() > 1:
        raise DataError("history: one person at a time here (found several person_id values)")
    return frame.drop(columns="person_id", errors="ignore")


def _events(entry: Entry):
    from laborllm.data.spec import events_for

    spec = entry.meta.get("data") or {}
    if not spec.get("data"):
        raise UserError(f"{entry.key}: the model does not record the data it was fitted on")
    return events_for(spec)
