import json

import numpy as np
import pytest

import laborllm as ll
from laborllm import api
from laborllm.errors import UserError
from laborllm.evaluation.compare import comparison_table, contrast_table, subgroup_table, to_latex, to_markdown, write_panel_tables
from laborllm.evaluation.metrics import (attach_paired, bootstrap_perplexity_ci, evaluate, paired_comparisons, reliability,
                                        subgroup_column)
from laborllm.models.markov import Markov


def test_uniform_model_has_perplexity_k(small_events):
    test = small_events.test
    K = len(test.states)
    lp = np.full((len(test), K), -np.log(K))
    m = evaluate(lp, test, "uniform", n_boot=50)
    assert m["perplexity"] == pytest.approx(K)
    assert m["perplexity_ci95"][0] == pytest.approx(K) and m["perplexity_ci95"][1] == pytest.approx(K)
    assert m["move"]["auc"] == pytest.approx(0.5)


def test_metrics_of_markov(small_events):
    test = small_events.test
    lp = Markov().fit(small_events).log_probs(test)
    m = evaluate(lp, test, "markov1", n_boot=200)
    lo, hi = m["perplexity_ci95"]
    assert lo < m["perplexity"] < hi
    assert 0 < m["top1"] <= m["top5"] <= 1
    assert m["move"]["auc"] > 0.5 and m["working"]["auc"] > 0.7
    assert 0 <= m["ece"] < 0.2 and m["reliability"]
    assert set(m["subgroups"]) >= {"gender", "race", "education", "cohort"}
    assert "weighted" in m and m["weighted"]["perplexity"] != m["perplexity"]
    json.dumps(m)  # JSON-ready


def test_bootstrap_resamples_people():
    nll = np.array([1.0, 1.0, 3.0, 3.0])
    lo, hi = bootstrap_perplexity_ci(nll, np.array([1, 1, 2, 2]), n_boot=2000)
    assert lo == pytest.approx(np.exp(1.0)) and hi == pytest.approx(np.exp(3.0))


def test_reliability_of_a_calibrated_forecaster():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 20000)
    ece, curve = reliability(conf, (rng.uniform(0, 1, 20000) < conf).astype(float))
    assert ece < 0.02 and len(curve) == 10


def test_tables_and_refusal_of_different_events(small_events, nlsy97):
    test = small_events.test
    lp = Markov().fit(small_events).log_probs(test)
    a = evaluate(lp, test, "a", n_boot=20)
    b = evaluate(lp - 0.0, test, "b", n_boot=20)
    df = comparison_table([a, b])
    assert list(df.model) == ["a", "b"]
    assert "| a |" in to_markdown(df) and "\\toprule" in to_latex(df)
    other = evaluate(np.full((len(small_events.valid), len(test.states)), -np.log(len(test.states))),
                     small_events.valid, "c", n_boot=20)
    with pytest.raises(UserError, match="different event sets"):
        comparison_table([a, other])
    # the same split without one person's events is a different event set too
    keep = (test.frame.person_id != test.frame.person_id.iloc[0]).to_numpy()
    fewer = evaluate(lp[keep], test.where(keep), "d", n_boot=20)
    assert fewer["split"] == a["split"]
    with pytest.raises(UserError, match="different event sets"):
        comparison_table([a, fewer])


def test_contrast_table_reads_the_paired_interval(small_events):
    """The profile's question (with vs without an ingredient): both perplexities, the paired ratio,
    and a verdict that follows the interval; a pair missing a model is left out."""
    test = small_events.test
    y, persons = test.frame.target.to_numpy(), test.frame.person_id.to_numpy()
    lps = {"markov1": Markov(order=1).fit(small_events).log_probs(test),
           "uniform": np.full((len(test), len(test.states)), -np.log(len(test.states)))}
    lps["markov1-again"] = lps["markov1"].copy()
    rows = [evaluate(lp, test, name, n_boot=50) for name, lp in lps.items()]
    paired = paired_comparisons({n: -lp[np.arange(len(y)), y] for n, lp in lps.items()}, persons)
    for r in rows:
        r["paired"] = paired[r["model"]]
    t = contrast_table(rows, (("markov1", "uniform"), ("uniform", "markov1"), ("markov1-again", "markov1"),
                              ("markov1", "not-run")))
    assert t.verdict.tolist() == ["better", "worse", "no clear difference"]
    assert float(t.paired_ratio.iloc[0].split()[0]) == pytest.approx(rows[0]["perplexity"] / rows[1]["perplexity"], abs=1e-3)
    assert "| markov1 | uniform |" in to_markdown(t)
    assert t.vs_perplexity.iloc[0] == pytest.approx(rows[1]["perplexity"])


def test_results_by_subgroup_pair_the_models_within_each_level(small_events, tmp_path):
    """Results by subgroup: each level's perplexities, and each model's ratio to the reference with an
    interval that resamples only that level's people, as tables a paper can take (CSV, Markdown, LaTeX)."""
    test = small_events.test
    lps = {"markov1": Markov(order=1).fit(small_events).log_probs(test),
           "markov2": Markov(order=2).fit(small_events).log_probs(test),
           "uniform": np.full((len(test), len(test.states)), -np.log(len(test.states)))}
    nll = {n: test.target_nll(lp) for n, lp in lps.items()}
    rows = [evaluate(lp, test, name, n_boot=50) for name, lp in lps.items()]
    attach_paired(rows, nll, test, n_boot=200)
    women = (subgroup_column(test.frame, "gender") == "woman").to_numpy()
    assert 0 < women.sum() < len(test)
    level = rows[0]["subgroups"]["gender"]["woman"]["paired"]["uniform"]
    # the ratio on the women's events alone, not the overall one
    assert level["ratio"] == pytest.approx(np.exp(nll["markov1"][women].mean() - nll["uniform"][women].mean()))
    assert level["ratio"] != pytest.approx(rows[0]["paired"]["uniform"]["ratio"], rel=1e-3)
    assert level["ci95"][0] < level["ratio"] < level["ci95"][1] < 1  # markov1 beats uniform among women too
    ppl = subgroup_table(rows)
    assert list(ppl.columns) == ["group", "level", "n_events", "markov1", "markov2", "uniform"]
    row = ppl[(ppl.group == "gender") & (ppl.level == "woman")].iloc[0]
    assert row.n_events == women.sum()
    assert float(row.markov1) == pytest.approx(np.exp(nll["markov1"][women].mean()), abs=0.005)
    ratios = subgroup_table(rows, "uniform")
    assert list(ratios.columns) == ["group", "level", "n_events", "markov1", "markov2"]
    assert ratios[(ratios.group == "gender") & (ratios.level == "woman")].markov1.iloc[0].startswith(f"{level['ratio']:.3f} [")
    paths = write_panel_tables(rows, tmp_path, "uniform")
    assert {p.name for p in paths} >= {"subgroups.md", "subgroups.tex", "subgroups-paired.csv", "paired.md", "comparison.md"}
    assert "| gender | woman |" in (tmp_path / "subgroups.md").read_text()
    assert "\\caption{Perplexity ratio to uniform by subgroup" in (tmp_path / "subgroups-paired.tex").read_text()


def test_report_simulations_show_one_progress_line_for_all_models(small_events, capsys):
    """The report's simulated careers: one progress line over every model's years, not a bar per model,
    and every model's careers present."""
    from laborllm.evaluation.careers import SIM_YEARS, trajectories

    models = {"markov1": Markov().fit(small_events), "markov2": Markov(order=2).fit(small_events)}
    t = trajectories(small_events.test, models, seed=0)
    assert {"observed", "markov1", "markov2"} <= set(t.source)
    err = capsys.readouterr().err
    assert "simulating careers for the report" in err and f" 0/{2 * SIM_YEARS} " in err  # one bar, all years
    assert "simulating:" not in err  # the per-model bar


def test_simulated_careers_are_kept_for_the_same_model_and_seed_only(small_events, tmp_path, monkeypatch):
    """A rerun of the report reuses each model's simulated careers (an LLM's take minutes), and draws
    them again for another seed or another fitted model, never showing careers from something else."""
    import laborllm.forecast
    from laborllm.evaluation.careers import trajectories

    m = Markov().fit(small_events)
    first = trajectories(small_events.test, {"m": m}, seed=0, cache=tmp_path)
    real = laborllm.forecast.simulate
    calls = []
    monkeypatch.setattr(laborllm.forecast, "simulate", lambda *a, **k: (calls.append(k["seed"]), real(*a, **k))[1])
    again = trajectories(small_events.test, {"m": m}, seed=0, cache=tmp_path)
    assert calls == [] and again.equals(first)
    other_seed = trajectories(small_events.test, {"m": m}, seed=1, cache=tmp_path)
    assert calls == [1] and not other_seed[other_seed.source == "m"].occupation.reset_index(drop=True).equals(
        first[first.source == "m"].occupation.reset_index(drop=True))
    trajectories(small_events.test, {"m": Markov(order=2).fit(small_events)}, seed=1, cache=tmp_path)
    assert calls == [1, 1]  # another model under the same name


def test_moves_and_stays_are_reported_apart(small_events):
    """A model sure that everyone stays and one that spreads its mass tie only by accident overall;
    apart, the first must win on the stays and lose on the moves, each with its paired interval."""
    test = small_events.test
    K = len(test.states)
    last = test.frame.last_state.to_numpy()
    sticky = np.full((len(test), K), np.log(0.2 / (K - 1)))
    sticky[np.arange(len(test)), np.maximum(last, 0)] = np.log(0.8)
    lps = {"sticky": sticky, "uniform": np.full((len(test), K), -np.log(K))}
    nll = {n: test.target_nll(lp) for n, lp in lps.items()}
    rows = [evaluate(lp, test, name, n_boot=50) for name, lp in lps.items()]
    attach_paired(rows, nll, test, n_boot=200)
    stays = (test.frame.target == test.frame.last_state).to_numpy()
    split = rows[0]["subgroups"]["transition"]
    assert split["stays"]["n_events"] == stays.sum() and split["moves"]["n_events"] == (~stays).sum()
    assert split["stays"]["perplexity"] == pytest.approx(np.exp(nll["sticky"][stays].mean()))
    assert split["stays"]["paired"]["uniform"]["ci95"][1] < 1 < split["moves"]["paired"]["uniform"]["ci95"][0]
    from laborllm.evaluation.compare import transition_table

    table = transition_table(rows, "uniform")
    sticky_row = table[table.model == "sticky"].iloc[0]
    assert sticky_row.stays_events == stays.sum() and sticky_row.stays_ratio.startswith(
        f"{split['stays']['paired']['uniform']['ratio']:.3f} [")
    assert table[table.model == "uniform"].moves_ratio.iloc[0] == "1 (reference)"


def test_a_blank_weight_is_said_not_silently_dropped(caplog):
    from laborllm.evaluation.metrics import evaluate

    p = ll.load_panel("nlsy97")
    keep = sorted(p.frame.person_id.unique())[:300]
    f = p.frame[p.frame.person_id.isin(keep)].assign(occupation=lambda d: d.state)
    f.loc[f.index[5], "weight"] = np.nan
    ev = ll.make_events(ll.load_panel(f, scheme="titles"))
    m = api.make_model("markov").fit(ev)
    r = evaluate(m.log_probs(ev), ev, model="markov1")
    assert "weighted" not in r and "1 events without a weight" in r["weighted_skipped"]
    assert "have no survey weight" in caplog.text
