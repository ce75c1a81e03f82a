import json

import numpy as np
import pytest
import torch

from laborllm import api
from laborllm.models.registry import load_model
from laborllm.models.logit import Logit, design
from laborllm.models.bag import BagOfJobs
from laborllm.models.career import Career
from laborllm.models.features import history_features
from laborllm.models.markov import Markov


def _ppl(lp, ev):
    y = ev.frame.target.to_numpy()
    return float(np.exp(-lp[np.arange(len(y)), y].mean()))


def _check_distribution(lp, ev):
    assert lp.shape == (len(ev), len(ev.states))
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, atol=1e-5)


def test_markov_orders_normalise_and_reload(small_events, tmp_path):
    m1 = Markov(order=1).fit(small_events)
    m2 = Markov(order=2).fit(small_events)
    test = small_events.test
    lp1, lp2 = m1.log_probs(test), m2.log_probs(test)
    _check_distribution(lp1, test), _check_distribution(lp2, test)
    # a huge back-off weight makes the second-order chain the first-order one
    far = m2._log_probs(history_features(test), m2.alpha_, 1e9)
    np.testing.assert_allclose(far, lp1, atol=1e-6)
    # both beat the unconditional distribution by a wide margin on real careers
    assert _ppl(lp1, test) < 0.5 * len(test.states)
    m2.save(tmp_path / "m2", {"data": "x"})
    again = load_model(tmp_path / "m2")
    np.testing.assert_allclose(again.log_probs(test), lp2)


def test_markov_counts_are_transition_counts(small_events):
    m = Markov(order=1).fit(small_events)
    tr = small_events.train.frame
    a, b = tr["last_state"].iloc[0], tr.target.iloc[0]
    assert m.c1[a, b] == ((tr["last_state"] == a) & (tr.target == b)).sum()


def test_plain_logit_matches_scikit_learn(small_events):
    from sklearn.linear_model import LogisticRegression

    ev = small_events
    lam = 1e-2
    m = Logit(l2=lam, stay_term=False, markov_offset=False, max_iter=500).fit(ev)
    x, _, _, K = design(ev.train, m.vocab)
    y = ev.train.frame.target.to_numpy()
    n = len(y)
    # sklearn minimises C * sum(loss) + 0.5 ||w||^2, ours mean(loss) + 0.5 * lam ||w||^2
    sk = LogisticRegression(C=1 / (lam * n), max_iter=5000, tol=1e-10).fit(x.to_dense().numpy(), y)
    ours = torch.softmax(m._logits(x, torch.as_tensor(ev.train.frame["last_state"].to_numpy())), 1).detach().numpy()
    theirs = np.zeros_like(ours)
    theirs[:, sk.classes_] = sk.predict_proba(x.to_dense().numpy())
    # sklearn fits only classes seen in training; ours gives unseen states a small mass
    assert np.abs(ours[:, sk.classes_] - theirs[:, sk.classes_]).max() < 2e-3


def test_logit_beats_markov_and_reloads(small_events, tmp_path):
    test = small_events.test
    markov = _ppl(Markov(order=1).fit(small_events).log_probs(test), test)
    logit = Logit(max_iter=30).fit(small_events)
    lp = logit.log_probs(test)
    _check_distribution(lp, test)
    assert _ppl(lp, test) < markov
    logit.save(tmp_path / "lg", {"data": "x"})
    np.testing.assert_allclose(load_model(tmp_path / "lg").log_probs(test), lp, atol=1e-6)


def test_bag_of_jobs_learns(small_events):
    """Better than the unigram of the training targets it starts from (what it predicts with no history)."""
    m = BagOfJobs(epochs=4).fit(small_events)
    lp = m.log_probs(small_events.test)
    _check_distribution(lp, small_events.test)
    counts = np.bincount(small_events.train.frame.target, minlength=len(small_events.states)) + 1.0
    unigram = np.tile(np.log(counts / counts.sum()), (len(small_events.test), 1))
    assert _ppl(lp, small_events.test) < 0.8 * _ppl(unigram, small_events.test)


def test_model_folder_errors(tmp_path):
    from laborllm.errors import UserError

    with pytest.raises(UserError, match="not a laborllm model folder"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(UserError, match="not a laborllm model description"):
        load_model(tmp_path)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match="refusing to overwrite"):
        Markov().save(user)
    assert (user / "notes.txt").read_text() == "precious"


def test_fit_cli_with_config_file_and_bad_settings(tmp_path):
    from typer.testing import CliRunner

    from laborllm.cli import app

    cfg = tmp_path / "run.toml"
    cfg.write_text('data = "nlsy79-males"\nseed = 3\n[model]\norder = 2\n')
    r = CliRunner().invoke(app, ["fit", "markov", "--config", str(cfg), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["config"]["order"] == 2 and meta["data"]["seed"] == 3 and meta["data"]["data"] == "nlsy79-males"
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["n_events"] > 0
    bad = tmp_path / "bad.toml"
    bad.write_text("data = [unclosed")
    from laborllm.errors import UserError

    with pytest.raises(UserError, match="cannot parse config"):
        from laborllm.api import read_config

        read_config(bad)
    with pytest.raises(UserError, match="unknown setting"):
        from laborllm.api import make_model

        make_model("markov", "quick", orderr=2)


def test_career_two_stage_head_formula():
    """P(stay) = sigmoid(a); every other state gets (1 - sigmoid(a)) x softmax of its logit among the
    states other than the last one; with no last state, a plain softmax."""
    import torch

    from laborllm.models.career import CareerNet

    torch.manual_seed(0)
    net = CareerNet(n_tokens=7, n_states=5, cov_sizes={}, d=12, layers=1, heads=2, ff=24, dropout=0.0).eval()
    prev = torch.tensor([[5, 1, 2]])
    last = torch.tensor([[-1, 1, 2]])
    with torch.no_grad():
        lp = net(prev, {}, last)[0]
        x = net.tok(prev) * net.d ** 0.5 + net.pe[:3]
        causal = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
        out = net.head(net.norm(net.blocks(x, mask=causal, is_causal=True)))[0]
    z, a = out[:, :-1], out[:, -1]
    np.testing.assert_allclose(lp[0].exp().numpy(), torch.softmax(z[0], -1).numpy(), atol=1e-5)
    for t in (1, 2):
        k = int(last[0, t])
        stay = torch.sigmoid(a[t])
        others = torch.softmax(torch.cat([z[t, :k], z[t, k + 1:]]), -1) * (1 - stay)
        np.testing.assert_allclose(float(lp[t, k].exp()), float(stay), atol=1e-5)
        np.testing.assert_allclose(torch.cat([lp[t, :k], lp[t, k + 1:]]).exp().numpy(), others.numpy(), atol=1e-5)


def test_career_pretraining_crosswalk_sends_states_onto_the_target(tmp_path):
    """The pooling profile's CAREER pretrains on nlswork with its groups sent onto the men panel's
    states (shared embeddings); a group the crosswalk leaves out keeps its own; a crosswalk naming a
    state the target lacks is refused."""
    import laborllm as ll
    from laborllm.errors import UserError
    from laborllm.profiles import ENTRIES

    settings = dict(next(s for n, _, s in ENTRIES if n == "career-pooled"))
    men = ll.load_panel("nlsy79-males")
    model = Career(**settings)
    model.states = list(men.states)
    pre = model._pretrain_panel(men)
    assert set(pre.states) == set(men.states) | {"Other occupations"}
    nlswork = ll.load_panel("nlswork").frame
    assert (pre.frame.state == "Clerical").sum() == (nlswork.state == "Clerical workers").sum()
    model._vocab([men, pre])
    assert model.states_all[: len(men.states)] == men.states and model.states_all[-1] == "Other occupations"
    bad = tmp_path / "x.csv"
    bad.write_text("state,target\nClerical workers,Office clerks\n")
    model.settings.pretrain_states = str(bad)
    with pytest.raises(UserError, match="Office clerks"):
        model._pretrain_panel(men)


def test_packaged_models_load_by_name(small_events, tmp_path, monkeypatch):
    """`laborllm predict nlsy97-titles`: a packaged model loads by name; a name not shipped yet says
    where it comes from; a user's folder of the same name wins."""
    import shutil

    from laborllm.errors import UserError
    from laborllm.models import packaged

    monkeypatch.setattr(packaged, "PACKAGED_DIR", tmp_path / "assets")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="not in this release yet.*gpu-benchmark"):
        load_model("nlsy97-titles")
    Markov(order=2).fit(small_events).save(tmp_path / "assets" / "nlsy97-titles")
    m = load_model("nlsy97-titles")
    assert m.kind == "markov" and m.config["order"] == 2
    shutil.copytree(tmp_path / "assets" / "nlsy97-titles", tmp_path / "nlsy97-titles")
    (tmp_path / "nlsy97-titles" / "model.json").write_text(
        (tmp_path / "nlsy97-titles" / "model.json").read_text().replace('"order": 2', '"order": 1'))
    assert load_model("nlsy97-titles").config["order"] == 1  # the user's folder in the working directory


@pytest.mark.parametrize("name", ["nlsy97-titles", "nlsy97-codes", "nlsy97-mix"])
def test_shipped_nlsy97_models_answer_with_what_they_learned(name):
    """The adapters committed in the package load by name on SmolLM2 and give a distribution over
    NLSY97's 334 states that has learned careers (a cashier two years running most likely stays one),
    and their cards carry the test results."""
    from laborllm.forecast import history_frame, next_distribution
    from laborllm.models.packaged import PACKAGED, PACKAGED_DIR

    assert name in PACKAGED
    m = load_model(name)
    if name == "nlsy97-mix":  # the two LLMs inside it, mixed by weights chosen on validation
        assert m.kind == "mixture" and [x.kind for x in m.members()] == ["llm", "llm"] and m.weights.sum() == pytest.approx(1)
    else:
        assert m.kind == "llm" and m.config["variant"] == name.split("-")[1]
    assert len(m.states) == 334
    person = {"gender": "woman", "race": "Hispanic", "birth_year": 1981}
    cashier = history_frame({"person": person, "history": [
        {"year": 2001, "occupation": "Student"}, {"year": 2002, "occupation": "Cashiers"},
        {"year": 2003, "occupation": "Cashiers"}]})
    _, p = next_distribution(m, cashier)
    assert p.shape == (1, 334) and p.sum() == pytest.approx(1, abs=1e-4)
    assert m.states[int(p[0].argmax())] == "Cashiers" and p[0].max() > 0.3
    card = (PACKAGED_DIR / name / "README.md").read_text()
    assert "test perplexity" in card and "25,301 events" in card


def test_evaluate_two_folders_of_one_name_keeps_both_paired(tmp_path):
    """Two folders whose models share a name (a refit with other settings) are both compared, paired."""
    from laborllm import api

    for order in (1, 2):
        api.fit("markov", "nlsy79-males", tmp_path / f"m{order}", order=order, name="markov")
    a, b = api.evaluate([tmp_path / "m1", tmp_path / "m2"], "test", n_boot=50)
    assert a["model"] == "markov" and b["model"] == f"markov ({tmp_path / 'm2'})"
    assert b["paired"]["markov"]["ratio"] == pytest.approx(b["perplexity"] / a["perplexity"], rel=1e-6)


@pytest.mark.parametrize("order", [1, 2])
def test_markov_tuning_loss_at_the_targets_equals_the_full_matrix(small_events, order):
    """Smoothing is tuned on the targets' probabilities alone (a million-person validation split has
    no room for the full matrix); they equal the full matrix's, for every candidate value."""
    from laborllm.models.features import history_features
    from laborllm.models.markov import ALPHAS, BETAS

    m = Markov(order=order).fit(small_events)
    va, y = history_features(small_events.valid), small_events.valid.frame.target.to_numpy()
    for alpha in ALPHAS[:3]:
        for beta in ([None] if order == 1 else BETAS[:3]):
            dense = -m._log_probs(va, alpha, beta)[np.arange(len(y)), y].mean()
            assert m._nll(va, y, alpha, beta) == pytest.approx(dense, rel=1e-10)


def test_simulated_futures_score_each_distinct_history_once_and_follow_the_model(tmp_path):
    """Sampled futures that agree so far share one scoring (all samples in the first year, one per
    state in the second, for a first-order chain), and the draws still follow the model: the first
    year's as predicted for the history, the second's after the commonest first-year state as
    predicted for the history extended by it."""
    import pandas as pd
    from laborllm import api
    from laborllm.forecast import history_frame, next_distribution, simulate

    m = api.fit("markov", "nlsy79-males", tmp_path / "m", "quick", order=1)
    scored, log_probs = [], m.log_probs
    m.log_probs = lambda ev: (scored.append(len(ev)), log_probs(ev))[1]
    hist = history_frame({"history": [{"year": 1980, "occupation": "Clerical"}, {"year": 1981, "occupation": "Operatives"}]})
    sims = simulate(m, hist, years=2, samples=3000, seed=0)
    assert scored[0] == 1 and 1 < scored[1] <= len(m.states)
    m.log_probs = log_probs
    y1, y2 = sims[sims.year == 1982], sims[sims.year == 1983]

    def freq(draws):
        return draws.occupation.value_counts(normalize=True).reindex(m.states, fill_value=0).to_numpy()

    assert np.abs(freq(y1) - next_distribution(m, hist)[1][0]).max() < 0.04
    a = y1.occupation.mode()[0]
    then = y2[y2["sample"].isin(y1[y1.occupation == a]["sample"])]
    extended = pd.concat([hist, hist.tail(1).assign(year=1982, occupation=a)], ignore_index=True)
    assert np.abs(freq(then) - next_distribution(m, extended)[1][0]).max() < 0.05


def test_list_settings_given_as_text_are_split_and_a_bad_one_is_refused():
    """`--set members=a,b` and `--set pool=a` arrive as text: the settings' check makes them lists (no
    model rewrites its caller's values); a number where a list is wanted is refused, naming the setting."""
    from laborllm.errors import UserError
    from laborllm.models.llm import LLMSettings
    from laborllm.models.mixture import MixtureSettings
    from laborllm.settings import check_settings

    assert check_settings("mixture", MixtureSettings, {"members": "a, b"})["members"] == ["a", "b"]
    given = {"pool": "nlswork"}
    assert check_settings("llm", LLMSettings, given)["pool"] == ["nlswork"] and given == {"pool": "nlswork"}
    with pytest.raises(UserError, match="setting pool=3 must be a list"):
        check_settings("llm", LLMSettings, {"pool": 3})


def test_a_model_json_with_its_states_reordered_is_refused(tmp_path):
    """Weights index the states by position: a model.json whose states were reordered would give
    permuted labels with exit 0. The weights say which order they were saved with."""
    import json

    from laborllm.errors import UserError
    from laborllm.models.registry import load_model

    api.fit("logit", "nlsy79-males", tmp_path / "m", max_iter=3)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["states"] = meta["states"][1:] + meta["states"][:1]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not those the weights were saved with"):
        load_model(tmp_path / "m")
