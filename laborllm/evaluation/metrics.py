"""Metrics over the common log-probability matrix: every model is judged on exactly the same events.

Perplexity is exp(mean negative log-likelihood per event), with a 95% interval from a bootstrap
that resamples people (events of one person are not independent). The two derived tasks of the
paper: will the person change state (probability of not staying in the last observed state), and
will the person be working next year (mass on occupations and Military). Calibration is the
top-label expected calibration error with a reliability curve. Everything is computed unweighted,
overall and by subgroup; the overall figures also weighted by the survey weight when the panel has
one, where person-years of weight 0 (9.9% of NLSY97's) count for nothing. Subgroups are unweighted.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from laborllm.data.events import Events
from laborllm.data.schemes import NON_WORK
from laborllm.errors import UserError

# "transition": the events where the person stays in the last observed state and those where they
# move, apart (a tie overall can hide a model better at moves and worse at stays)
COVARIATE_GROUPS = ("gender", "race", "education", "cohort", "region")  # people grouped by who they are
SUBGROUPS = (*COVARIATE_GROUPS, "transition")
N_BINS = 10

log = logging.getLogger(__name__)


def check_log_probs(lp: np.ndarray, events: Events) -> None:
    if lp.shape != (len(events), len(events.states)):
        raise UserError(f"log-probabilities have shape {lp.shape}, expected {(len(events), len(events.states))}")


def bootstrap_perplexity_ci(nll: np.ndarray, persons: np.ndarray, weights: np.ndarray | None = None,
                            n_boot: int = 500, seed: int = 0) -> tuple[float | None, float | None]:
    """95% percentile interval of perplexity, resampling people with replacement (None for fewer
    than two people: no interval can be estimated)."""
    codes, inv = np.unique(persons, return_inverse=True)
    if len(codes) < 2:
        return None, None
    w = np.ones_like(nll) if weights is None else weights
    s = np.bincount(inv, weights=nll * w, minlength=len(codes))
    c = np.bincount(inv, weights=w, minlength=len(codes))
    draws = person_draws(len(codes), n_boot, seed)
    ppl = np.exp((draws @ s) / np.maximum(draws @ c, 1e-12))
    lo, hi = np.percentile(ppl, [2.5, 97.5])
    return float(lo), float(hi)


def paired_comparisons(nll: dict[str, np.ndarray], persons: np.ndarray, n_boot: int = 500, seed: int = 0) -> dict:
    """{model: {other: {"ratio", "ci95"}}}: the perplexity ratio of every ordered pair of models scored
    on the same events, with a 95% interval from one person bootstrap shared by all models (the same
    resampled people for both sides: tight where marginal intervals overlap)."""
    codes, inv = np.unique(persons, return_inverse=True)
    count = np.bincount(inv, minlength=len(codes)).astype(float)
    sums = {m: np.bincount(inv, weights=v, minlength=len(codes)) for m, v in nll.items()}
    draws = person_draws(len(codes), n_boot, seed) if len(codes) > 1 else None
    boot = {m: (draws @ v) / (draws @ count) for m, v in sums.items()} if draws is not None else None
    out: dict = {a: {} for a in nll}
    for a in nll:
        for b in nll:
            if a != b:
                ci = [None, None] if boot is None else np.percentile(np.exp(boot[a] - boot[b]), [2.5, 97.5]).tolist()
                out[a][b] = {"ratio": float(np.exp((sums[a].sum() - sums[b].sum()) / count.sum())), "ci95": ci}
    return out


def attach_paired(rows: list[dict], nll: dict[str, np.ndarray], events: Events, n_boot: int = 500) -> None:
    """Each row's paired ratios against every other model (rows named as the keys of `nll`, all scored
    on `events`): overall as row["paired"], and within each subgroup level the row reports, as
    row["subgroups"][group][level]["paired"], resampling that level's people."""
    persons = events.frame.person_id.to_numpy()
    paired = paired_comparisons(nll, persons, n_boot)
    for r in rows:
        r["paired"] = paired[r["model"]]
    for g in SUBGROUPS:
        col = subgroup_column(events.frame, g)
        levels = {lv for r in rows for lv in r.get("subgroups", {}).get(g, {})}
        for level in sorted(levels):
            mask = (col == level).to_numpy()
            within = paired_comparisons({m: v[mask] for m, v in nll.items()}, persons[mask], n_boot)
            for r in rows:
                if level in r.get("subgroups", {}).get(g, {}):
                    r["subgroups"][g][level]["paired"] = within[r["model"]]


def person_draws(n_persons: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_persons): how often each person is drawn in each bootstrap replicate."""
    return np.random.default_rng(seed).multinomial(n_persons, np.full(n_persons, 1 / n_persons), size=n_boot)


def _wmean(x, w):
    return float(np.average(x, weights=w)) if w is not None else float(np.mean(x))


def _binary(p: np.ndarray, y: np.ndarray, w) -> dict:
    from sklearn.metrics import roc_auc_score  # imported here: scipy's import costs every command a second

    p = np.clip(p, 1e-12, 1 - 1e-12)
    out = {"logloss": _wmean(-(y * np.log(p) + (1 - y) * np.log(1 - p)), w), "rate": _wmean(y, w),
           "predicted_rate": _wmean(p, w)}
    out["auc"] = float(roc_auc_score(y, p, sample_weight=w)) if 0 < y.sum() < len(y) else None
    return out


def reliability(conf: np.ndarray, correct: np.ndarray, w=None, n_bins: int = N_BINS) -> tuple[float, list[dict]]:
    """Expected calibration error and the reliability curve (equal-width confidence bins)."""
    w = np.ones_like(conf) if w is None else w
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    curve, ece = [], 0.0
    for b in range(n_bins):
        m = bins == b
        if w[m].sum() <= 0:  # empty bin, or only zero-weight person-years
            continue
        acc, cf, wt = np.average(correct[m], weights=w[m]), np.average(conf[m], weights=w[m]), w[m].sum()
        ece += wt / w.sum() * abs(acc - cf)
        curve.append({"bin": b, "confidence": float(cf), "accuracy": float(acc), "n": int(m.sum())})
    return float(ece), curve


def working_mask(states: list[str]) -> np.ndarray:
    return np.array([s not in NON_WORK for s in states])


def core_metrics(lp: np.ndarray, events: Events, weights: np.ndarray | None = None, n_boot: int = 500) -> dict:
    """The headline metrics of one log-probability matrix on one event set."""
    ev = events.frame
    y = ev.target.to_numpy()
    idx = np.arange(len(y))
    nll = -lp[idx, y]
    p = np.exp(lp)
    top = np.argsort(-lp, axis=1)[:, :5]
    last = ev["last_state"].to_numpy()
    p_stay = np.where(last >= 0, p[idx, np.maximum(last, 0)], 0.0)
    work = working_mask(events.states)
    conf = p.max(1)
    ece, curve = reliability(conf, (top[:, 0] == y).astype(float), weights)
    return {
        "n_events": int(len(y)),
        "n_persons": int(ev.person_id.nunique()),
        "perplexity": float(np.exp(_wmean(nll, weights))),
        "perplexity_ci95": list(bootstrap_perplexity_ci(nll, ev.person_id.to_numpy(), weights, n_boot)),
        "nll": _wmean(nll, weights),
        "top1": _wmean(top[:, 0] == y, weights),
        "top5": _wmean((top == y[:, None]).any(1), weights),
        "move": _binary(1 - p_stay, (y != last).astype(float), weights),
        "working": _binary(p[:, work].sum(1), work[y].astype(float), weights),
        "ece": ece,
        "reliability": curve,
    }


def subgroup_column(ev: pd.DataFrame, name: str) -> pd.Series | None:
    if name == "transition":
        return pd.Series(np.where(ev.target == ev.last_state, "stays", "moves"), index=ev.index, dtype="string")
    if name == "cohort":
        return ev.birth_year.map(lambda b: f"born {b}") if "birth_year" in ev else None
    return ev[name].astype("string").fillna("unknown") if name in ev else None


def evaluate(lp: np.ndarray, events: Events, model: str = "model", split: str | None = None,
             normalization: str = "exact, over all states", n_boot: int = 500,
             subgroups: tuple[str, ...] = SUBGROUPS) -> dict:
    """All metrics of one model on one event set, as a JSON-ready dict (the `evaluate --json` row)."""
    check_log_probs(lp, events)
    ev = events.frame
    m = {"model": model, "split": split or (ev.split.iloc[0] if len(ev) else "?"), **core_metrics(lp, events, None, n_boot),
         "n_states": len(events.states), "normalization": normalization, "events_fingerprint": events.fingerprint()}
    w = ev.weight.to_numpy(dtype=float) if "weight" in ev else None
    if w is not None and not np.isfinite(w).all():
        # a blank weight cannot be guessed; the weighted figures are left out, and say why
        log.warning("%s: %d of %d events have no survey weight; the weighted figures are left out",
                    model, int((~np.isfinite(w)).sum()), len(w))
        m["weighted_skipped"] = f"{int((~np.isfinite(w)).sum())} events without a weight"
    elif w is not None and w.sum() > 0:
        wm = core_metrics(lp, events, w, n_boot=200)
        m["weighted"] = {k: wm[k] for k in ("perplexity", "perplexity_ci95", "top1", "top5", "move", "working", "ece")}
    m["subgroups"] = {}
    for g in subgroups:
        col = subgroup_column(ev, g)
        if col is None:
            continue
        m["subgroups"][g] = {}
        for level in sorted(col.unique()):
            mask = (col == level).to_numpy()
            if mask.sum() < 20:
                continue
            r = core_metrics(lp[mask], events.where(mask), None, n_boot=100)
            m["subgroups"][g][str(level)] = {k: r[k] for k in ("n_events", "perplexity", "perplexity_ci95", "top1", "ece")} | {
                "move_auc": r["move"]["auc"], "working_auc": r["working"]["auc"]}
    return m
