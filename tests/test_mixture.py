"""The mixture of fitted models: the likelihood-maximising weights, chosen on validation events
only, a normalised distribution, and a folder that carries its members."""
from pathlib import Path

import numpy as np
import pytest

from laborllm.errors import UserError
from laborllm.models.logit import Logit
from laborllm.models.markov import Markov
from laborllm.models.mixture import Mixture, mixture_weights
from laborllm.models.registry import load_model


def test_weights_maximise_the_likelihood():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1], size=400).T  # two members' probabilities of what happened
    w = mixture_weights(np.log(p))
    grid = np.linspace(0.001, 0.999, 999)
    best = grid[np.argmax([np.log(g * p[0] + (1 - g) * p[1]).sum() for g in grid])]
    assert w.sum() == pytest.approx(1) and w[0] == pytest.approx(best, abs=2e-3)
    assert mixture_weights(np.log(np.stack([p[0], p[0] / 2]))) == pytest.approx([1, 0], abs=1e-6)


@pytest.fixture(scope="module")
def members(tmp_path_factory, small_events):
    out = []
    for name, m in (("markov1", Markov(order=1)), ("logit", Logit(max_iter=10))):
        m.fit(small_events).meta["events_fingerprint"] = small_events.fingerprint()
        out.append(str(m.save(tmp_path_factory.mktemp(name) / name, {"data": "test"})))
    return out


def test_mixture_weights_come_from_validation_only(small_events, members, tmp_path, monkeypatch):
    seen = []
    for cls in (Markov, Logit):
        orig = cls.log_probs
        monkeypatch.setattr(cls, "log_probs", lambda self, ev, orig=orig: seen.append(set(ev.frame.split)) or orig(self, ev))
    mix = Mixture(members=members, max_valid_persons=None)
    mix.work_dir = tmp_path / "mix"
    mix.fit(small_events)
    assert seen and all(s == {"valid"} for s in seen), "the weights must never see a training or test event"
    valid = small_events.valid
    lps = [load_model(f).log_probs(valid) for f in members]
    np.testing.assert_allclose(mix.weights, mixture_weights(-np.stack([valid.target_nll(x) for x in lps])), atol=1e-6)
    assert 0 < mix.weights[0] < 1  # a real mixture: neither member alone is best on validation
    test = small_events.test
    lp = mix.log_probs(test)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-9)
    direct = np.log(sum(w * np.exp(load_model(f).log_probs(test)) for w, f in zip(mix.weights, members)))
    np.testing.assert_allclose(lp, direct, atol=1e-5)
    nll = test.target_nll(lp).mean()
    assert nll < max(test.target_nll(load_model(f).log_probs(test)).mean() for f in members)
    folder = mix.save(tmp_path / "mix", {"data": "test"})
    assert len(list((folder / "members").iterdir())) == 2  # it travels with its members
    np.testing.assert_allclose(load_model(folder).log_probs(test), lp, atol=1e-9)


def test_mixture_refuses_members_of_other_data_and_too_few(small_events, members):
    import laborllm as ll

    with pytest.raises(UserError, match="two or more"):
        Mixture(members=members[:1])
    with pytest.raises(UserError, match="other data or another split"):
        Mixture(members=members).fit(ll.make_events(small_events.panel, seed=1))


def test_a_mixture_in_a_run_reads_its_members_kept_scores(small_events, members, tmp_path, monkeypatch):
    """In a run, the members' test scores are kept beside their folders (an LLM's cost hours): a
    mixture fitted there, loaded again from its folder in a copy of the run elsewhere (a fresh clone
    restoring a milestone), mixes those instead of scoring its members again."""
    import shutil

    from laborllm.models.score_cache import model_log_probs

    first, clone = tmp_path / "first", tmp_path / "clone"
    first.mkdir()
    monkeypatch.chdir(first)  # a run's members are named relative to where it runs
    panel = Path("run") / "panel"
    test = small_events.test
    names = []
    for f in members:
        name = load_model(f).name
        shutil.copytree(f, panel / "models" / name)
        model_log_probs(load_model(panel / "models" / name), panel / "logprobs" / f"{name}-test.parquet", test)
        names.append(str(panel / "models" / name))
    mix = Mixture(members=names, max_valid_persons=30)
    mix.work_dir = panel / "models" / "mix"
    mix.fit(small_events).save(panel / "models" / "mix", {"data": "test"})
    expected = mix.log_probs(test)
    shutil.move(first, clone)
    monkeypatch.chdir(clone)
    for cls in (Markov, Logit):
        monkeypatch.setattr(cls, "log_probs", lambda self, ev: (_ for _ in ()).throw(AssertionError("scored again")))
    np.testing.assert_allclose(load_model(panel / "models" / "mix").log_probs(test), expected, atol=1e-9)


def test_a_mixture_is_the_same_fit_wherever_its_members_are_reached(small_events, members, tmp_path):
    """A run folder moved or named by an absolute path reaches the same members by other paths: the
    fit is identified by the members' saved ids, so it is reused; other members are a new fit."""
    import shutil

    from laborllm import api

    moved = [str(shutil.copytree(f, tmp_path / "moved" / Path(f).name)) for f in members]
    stored = api.fit_identity(Mixture(members=members), small_events)
    same = api.fit_identity(Mixture(members=moved), small_events)
    assert api.identity_differences(stored, same, Mixture.Settings) == []
    other = api.fit_identity(Mixture(members=moved[::-1]), small_events)
    assert api.identity_differences(stored, other, Mixture.Settings) == ["members"]
