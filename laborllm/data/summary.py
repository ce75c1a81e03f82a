"""Descriptive statistics of a panel and its events (``laborllm data describe``)."""
from __future__ import annotations

from laborllm.data.events import SPLITS, Events


def describe(events: Events, top: int = 10) -> dict:
    panel, ev = events.panel, events.frame
    f = panel.frame
    counts = f.state[f.state_id >= 0].value_counts()
    return {
        "source": panel.source,
        "scheme": panel.scheme.name,
        "persons": panel.n_persons,
        "person_years": int(len(f)),
        "missing_person_years": int((f.state_id < 0).sum()),
        "unknown_codes_as_missing": panel.n_unknown,
        "years": [int(f.year.min()), int(f.year.max())],
        "states": len(panel.states),
        "move_rate": float((ev["last_state"] != ev.target).mean()),
        "events": {s: int((ev.split == s).sum()) for s in SPLITS},
        "persons_by_split": {s: int(ev[ev.split == s].person_id.nunique()) for s in SPLITS},
        "covariates": panel.covariates,
        "split_seed": events.seed,
        "top_states": [{"state": s, "person_years": int(n), "share": float(n / counts.sum())}
                       for s, n in counts.head(top).items()],
    }
