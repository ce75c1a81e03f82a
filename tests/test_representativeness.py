"""Representativeness: distances between predicted and observed populations, corrected for the noise
of the observed side, with person-bootstrap intervals and paired differences."""
import numpy as np
import pytest

from laborllm.data.events import Events
from laborllm.evaluation.representativeness import corrected_sq_distance, person_sums, representativeness


def _synthetic(events, seed=0):
    """The real test events of a few hundred people with targets redrawn from a known distribution per
    event that depends on the history (stay with a probability set by the last state, otherwise a
    gender-specific spread): returns the events and the true log-probabilities."""
    rng = np.random.default_rng(seed)
    f = events.frame
    K = len(events.states)
    last = f.last_state.to_numpy()
    spread = {g: rng.dirichlet(np.full(K, 0.3)) for g in f.gender.astype(str).unique()}
    stay = rng.uniform(0.3, 0.9, K)
    p = np.stack([spread[g] for g in f.gender.astype(str)])
    has_last = last >= 0
    p[has_last] *= (1 - stay[last[has_last]])[:, None]
    p[has_last, last[has_last]] += stay[last[has_last]]
    y = np.array([rng.choice(K, p=row / row.sum()) for row in p])
    return Events(events.panel, f.assign(target=y), events.seed), np.log(p)


def test_noise_correction_gives_about_zero_for_the_true_distribution_and_not_for_a_wrong_one(small_events):
    events, true_lp = _synthetic(small_events.test)
    K = true_lp.shape[1]
    # wrong: the same stay probabilities, but one spread for everybody (the men's for the women too)
    p = np.exp(true_lp)
    wrong = np.log(0.5 * p + 0.5 / K)
    rep = representativeness(events, {"true": true_lp, "wrong": wrong, "uniform": np.full_like(true_lp, -np.log(K))},
                             reference="true", n_boot=300)
    for (g, level), r in rep.set_index(["group", "level"]).groupby(level=[0, 1]):
        t, w = r[r.model == "true"].iloc[0], r[r.model == "wrong"].iloc[0]
        # the raw distance of the truth is well above zero (the observed side's noise) ...
        assert t.tv_states > 0.05, (g, level)
        # ... while the corrected one cannot be told from zero in any level
        assert t.distance_states_lo == 0, (g, level)
        if t.n_persons >= 30:  # and in a level of some size the wrong model is told apart
            assert w.distance_states_lo > 0.02 and w.distance_states_vs_ref_lo > 0, (g, level)
    assert rep[rep.group == "all"].n_events.iloc[0] == len(events)
    everyone = rep[rep.group == "all"].set_index("model")
    assert everyone.distance_states_lo["uniform"] > everyone.distance_states_hi["wrong"]  # farther from the truth, farther from the data


def test_corrected_distance_is_unbiased_over_many_samples():
    """The mean of the corrected square over repeated samples is the true squared distance (about 0 for
    a model equal to the truth, ||p - q||^2 for a wrong one), while the raw square is biased upward."""
    rng = np.random.default_rng(1)
    K, persons, per = 12, 60, 5
    q = rng.dirichlet(np.ones(K))
    wrong = rng.dirichlet(np.ones(K))
    raw, fixed, fixed_wrong = [], [], []
    for _ in range(400):
        y = rng.choice(K, size=persons * per, p=q)
        who = np.repeat(np.arange(persons), per)
        d = q - np.eye(K)[y]
        sums, counts = person_sums(d, who)
        raw.append(((sums.sum(0) / counts.sum()) ** 2).sum())
        fixed.append(corrected_sq_distance(sums, counts)[0])
        fixed_wrong.append(corrected_sq_distance(*person_sums(wrong - np.eye(K)[y], who))[0])
    assert np.mean(raw) > 10 * abs(np.mean(fixed))
    assert np.mean(fixed) == pytest.approx(0, abs=3 * np.std(fixed) / np.sqrt(400))
    assert np.mean(fixed_wrong) == pytest.approx(((wrong - q) ** 2).sum(), rel=0.1)


def _careers(rng, persons, start_year, stay, groups, move_to):
    """Careers of a Markov chain over `groups` (stay with probability `stay`, else a move drawn from
    `move_to`)."""
    rows = []
    for pid in persons:
        g = rng.choice(groups)
        for year in range(start_year, start_year + 11):
            if year > start_year and rng.random() > stay:
                g = rng.choice(groups, p=move_to)
            rows.append((pid, year, g))
    return rows


def test_simulated_careers_distance_is_about_zero_for_the_true_process_and_not_for_a_wrong_one():
    """A model that draws careers from the process that made the observed ones is at about zero
    distance once both sides' noise is removed; one that moves to the wrong places is not, paired
    against it."""
    from types import SimpleNamespace

    import pandas as pd

    from laborllm.evaluation.representativeness import career_distances

    persons = np.arange(300)
    groups = ["A", "B", "C", "D"]
    frames = []
    fair, skewed = [0.25] * 4, [0.7, 0.1, 0.1, 0.1]
    for seed, (source, move_to) in enumerate((("observed", fair), ("true", fair), ("wrong", skewed))):
        # the same first year for every source: simulations start from the observed first year
        c = pd.DataFrame(_careers(np.random.default_rng(seed), persons, 2000, 0.7, groups, move_to),
                         columns=["person_id", "year", "group"])
        if source != "observed":
            c.loc[c.year == 2000, "group"] = frames[0].loc[frames[0].year == 2000, "group"].to_numpy()
        frames.append(c.assign(source=source))
    traj = pd.concat(frames, ignore_index=True)
    people = pd.DataFrame({"person_id": persons, "year": 2000,
                           "gender": np.where(persons % 2, "man", "woman")})
    events = SimpleNamespace(panel=SimpleNamespace(frame=people))
    d = career_distances(traj, events, reference="true", n_boot=300).set_index(["group", "level", "model"])
    true, wrong = d.loc[("all", "all", "true")], d.loc[("all", "all", "wrong")]
    assert true.n_persons == 300 and true.n_person_years == 3000
    assert true.distance_lo == 0 and wrong.distance_lo > 0.05
    assert wrong.distance_vs_ref_lo > 0
    assert {"man", "woman"} <= set(d.loc["gender"].index.get_level_values(0))
