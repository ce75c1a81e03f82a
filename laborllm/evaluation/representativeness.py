"""Whose predictions represent each subpopulation (the paper's second claim): per subgroup level, how
far a model's mean predicted next-state distribution is from the observed one, and how far careers
simulated from the model are from the observed careers of the same people.

The observed side is a sample: even a model that knows each person's true distribution sits at a
total variation distance of order sqrt(K / n) from the observed shares of n events over K states, so
a raw distance ranks models by chance where a level is small. The headline figure is therefore
corrected for that noise. With d_i = predicted distribution - observed outcome (one-hot) of event i,
the squared length of the mean of d, minus the estimated variance of that mean (people as clusters:
one person's events are not independent), estimates ||E[predicted] - E[observed]||^2 without bias
when people are drawn at random from the subpopulation: about 0 for a model that predicts the true
distribution, positive for one that does not. It is shown as its square root (0 where the estimate
is negative: closer than noise can tell), with a person-bootstrap interval and the paired difference
against a reference model (the same resampled people for both). The raw total variation distance,
the paper's figure, is kept beside it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from laborllm.evaluation.metrics import COVARIATE_GROUPS, person_draws, subgroup_column, working_mask

MIN_EVENTS = 30  # a level with fewer events is left out
RESOLUTIONS = ("groups", "states")  # broad occupation groups, and the panel's states


def person_sums(d: np.ndarray, persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per person (in sorted order): the sum of their rows of `d` and their number of rows."""
    codes, inv = np.unique(persons, return_inverse=True)
    sums = np.zeros((len(codes), d.shape[1]))
    np.add.at(sums, inv, d)
    return sums, np.bincount(inv, minlength=len(codes)).astype(float)


def corrected_sq_distance(sums: np.ndarray, counts: np.ndarray, draws: np.ndarray | None = None) -> np.ndarray:
    """||mean d||^2 minus the cluster-robust estimate of its sampling variance, for the sample itself
    (draws None: one value) or for each person-bootstrap replicate (draws: (n_boot, n_persons))."""
    w = np.ones((1, len(counts))) if draws is None else draws
    n = w @ counts
    mean = (w @ sums) / n[:, None]
    # sum_p w_p ||D_p - m_p mean||^2, expanded so that no (n_boot, n_persons, K) array is built
    spread = (w @ (sums ** 2).sum(1) - 2 * ((w @ (counts[:, None] * sums)) * mean).sum(1)
              + (mean ** 2).sum(1) * (w @ counts ** 2))
    people = w.sum(1)
    return (mean ** 2).sum(1) - spread * people / np.maximum(people - 1, 1) / n ** 2


def _summary(point: float, boot: np.ndarray) -> tuple[float, float, float]:
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def _distance(sums, counts, draws) -> tuple[float, np.ndarray]:
    """The corrected distance (the square root of the corrected square, 0 where that is negative),
    for the sample and for each replicate. A replicate's corrected square is centred on the sample's
    raw square, not on its corrected one (the bootstrap world's truth is the sample itself), so each
    is moved down by the sample's own correction before the interval is read off."""
    sq = corrected_sq_distance(sums, counts)[0]
    correction = ((sums.sum(0) / counts.sum()) ** 2).sum() - sq
    boot = corrected_sq_distance(sums, counts, draws) - correction
    return float(np.sqrt(max(sq, 0))), np.sqrt(np.maximum(boot, 0))


def _tv(sums, counts, draws) -> tuple[float, np.ndarray]:
    return (0.5 * float(np.abs(sums.sum(0) / counts.sum()).sum()),
            0.5 * np.abs((draws @ sums) / (draws @ counts)[:, None]).sum(1))


def _rate(sums, counts, draws) -> tuple[float, np.ndarray]:
    return float(sums.sum() / counts.sum()), (draws @ sums[:, 0]) / (draws @ counts)


def group_matrix(events) -> tuple[np.ndarray, list[str]]:
    """(n_states, n_groups) 0/1 matrix of each state's broad occupation group, and the groups."""
    scheme = events.panel.scheme
    groups = [scheme.group_of(s) for s in events.states]
    names = list(dict.fromkeys(groups))
    g = np.zeros((len(groups), len(names)))
    g[np.arange(len(groups)), [names.index(x) for x in groups]] = 1
    return g, names


def _levels(frame: pd.DataFrame, min_size: int, column=subgroup_column):
    """("all", "all") and every covariate level with at least `min_size` rows: (group, level, mask)."""
    yield "all", "all", np.ones(len(frame), bool)
    for g in COVARIATE_GROUPS:
        col = column(frame, g)
        if col is None:
            continue
        for level in sorted(col.unique()):
            mask = (col == level).to_numpy()
            if mask.sum() >= min_size:
                yield g, str(level), mask


def representativeness(events, lps: dict[str, np.ndarray], reference: str | None = None, n_boot: int = 500,
                       seed: int = 0) -> pd.DataFrame:
    """One row per (subgroup level, model): the corrected distance between the mean predicted and the
    observed next-state distribution over broad occupation groups and over states, the raw total
    variation distance over states, predicted and observed move and working rates, each with a 95%
    person-bootstrap interval; with `reference` (one of `lps`), each model's distances minus the
    reference's on the same resampled people."""
    ev = events.frame
    y = ev.target.to_numpy()
    last = ev["last_state"].to_numpy()
    persons = ev.person_id.to_numpy()
    K = len(events.states)
    groups, _ = group_matrix(events)
    working = working_mask(events.states).astype(float)
    observed = np.eye(K)[y]
    rows = []
    for g, level, mask in _levels(ev, MIN_EVENTS):
        n_people = len(np.unique(persons[mask]))
        draws = person_draws(n_people, n_boot, seed)
        observed_rates = {"move_rate_observed": float((y[mask] != last[mask]).mean()),
                          "working_rate_observed": float(working[y[mask]].mean())}
        boot_ref, out = {}, []
        for name, lp in lps.items():
            p = np.exp(lp[mask])
            d = p - observed[mask]
            stay = np.where(last[mask] >= 0, p[np.arange(len(p)), np.maximum(last[mask], 0)], 0.0)
            row = {"group": g, "level": level, "model": name, "n_events": int(mask.sum()), "n_persons": n_people}
            boots = {}
            for key, fn, x in (("distance_groups", _distance, d @ groups), ("distance_states", _distance, d),
                               ("tv_states", _tv, d), ("move_rate_predicted", _rate, 1 - stay[:, None]),
                               ("working_rate_predicted", _rate, (p @ working)[:, None])):
                sums, counts = person_sums(x, persons[mask])
                point, boots[key] = fn(sums, counts, draws)
                row[key], row[f"{key}_lo"], row[f"{key}_hi"] = _summary(point, boots[key])
            row |= observed_rates
            out.append(row)
            if name == reference:
                boot_ref = boots
            row["_boots"] = boots
        for row in out:
            boots = row.pop("_boots")
            if boot_ref and row["model"] != reference:
                ref = next(r for r in out if r["model"] == reference)
                for key in ("distance_groups", "distance_states"):
                    diff = boots[key] - boot_ref[key]
                    row[f"{key}_vs_ref"], row[f"{key}_vs_ref_lo"], row[f"{key}_vs_ref_hi"] = _summary(
                        row[key] - ref[key], diff)
        rows += out
    return pd.DataFrame(rows)


def career_distances(traj: pd.DataFrame, events, reference: str | None = None, n_boot: int = 500,
                     seed: int = 0) -> pd.DataFrame:
    """Simulated against observed careers of the same people (laborllm.evaluation.careers.trajectories):
    per model and subgroup level (people grouped by their first observed year), the corrected distance
    between the shares of broad occupation groups by year since the first observed year, over the
    person-years observed on both sides, with a person-bootstrap interval and the paired difference
    to `reference`. The correction covers both sides' noise: one sampled career per person, and one
    observed."""
    t = traj.assign(since=traj.year - traj.groupby(["source", "person_id"]).year.transform("min"))
    t = t[t.since > 0]  # the first year is given, the same on both sides
    obs = t[t.source == "observed"][["person_id", "year", "group"]].rename(columns={"group": "group_obs"})
    cells = {c: i for i, c in enumerate(pd.MultiIndex.from_product([sorted(t.since.unique()),
                                                                    sorted(t.group.dropna().unique())]))}
    f = events.panel.frame
    people = f[f.person_id.isin(set(obs.person_id))].groupby("person_id").head(1).reset_index(drop=True)
    rows = []
    for g, level, mask in _levels(people, 20):
        ids = np.sort(people.person_id[mask].to_numpy())
        draws = person_draws(len(ids), n_boot, seed)
        boots = {}
        for name in [s for s in dict.fromkeys(t.source) if s != "observed"]:
            both = t[(t.source == name) & t.person_id.isin(set(ids))].merge(obs, on=["person_id", "year"])
            d = np.zeros((len(both), len(cells)))
            d[np.arange(len(both)), [cells[c] for c in zip(both.since, both.group)]] += 1
            d[np.arange(len(both)), [cells[c] for c in zip(both.since, both.group_obs)]] -= 1
            # every person of the level in the same order for every model, so replicates pair up
            who = np.searchsorted(ids, both.person_id.to_numpy())
            sums = np.zeros((len(ids), len(cells)))
            np.add.at(sums, who, d)
            counts = np.bincount(who, minlength=len(ids)).astype(float)
            point, boots[name] = _distance(sums, counts, draws)
            rows.append({"group": g, "level": level, "model": name, "n_persons": len(ids),
                         "n_person_years": len(both), **dict(zip(("distance", "distance_lo", "distance_hi"),
                                                                 _summary(point, boots[name])))})
        if reference in boots:
            ref = next(r for r in rows[-len(boots):] if r["model"] == reference)
            for r in rows[-len(boots):]:
                if r is not ref:
                    r["distance_vs_ref"], r["distance_vs_ref_lo"], r["distance_vs_ref_hi"] = _summary(
                        r["distance"] - ref["distance"], boots[r["model"]] - boots[reference])
    return pd.DataFrame(rows)
