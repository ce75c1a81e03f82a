"""The contract every registered model kind keeps (like scikit-learn's check_estimator), with tiny
settings on real NLSY97 people: fit returns the model, leaves its settings as given, gives rows
that are distributions over the states, saves and loads to the same numbers, round-trips its
settings, gives the same numbers from the same seed, is read another way only through `read_as`
(both LLM scoring modes), and never looks ahead."""
import copy
import dataclasses
import json

import numpy as np
import pytest

import laborllm as ll
from laborllm.errors import UserError
from laborllm.models.registry import KINDS, load_model


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, small_events):
    from laborllm.lm.tiny import tiny_model_folder
    from laborllm.text.templates import ResumeTemplate, state_codes

    codes = state_codes(small_events.states, small_events.panel.scheme)
    texts = [ResumeTemplate(v).text(g, codes) for v in ("titles", "codes")
             for _, g in small_events.panel.frame.groupby("person_id")]
    return str(tiny_model_folder(tmp_path_factory.mktemp("lm") / "lm", texts, vocab_size=400, hidden=32))


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory, small_events, tiny_lm):
    """A tiny fitted LLM folder: what an occupation head reads."""
    from laborllm.models.llm import LLM

    m = LLM(**tiny("llm", tiny_lm))
    m.work_dir = tmp_path_factory.mktemp("llm") / "m"
    m.fit(small_events)
    m.meta["events_fingerprint"] = small_events.fingerprint()
    return str(m.save(m.work_dir, {"data": "test"}))


@pytest.fixture(scope="module")
def markov_folder(tmp_path_factory, small_events):
    """A fitted Markov chain's folder: a mixture member."""
    from laborllm.models.markov import Markov

    m = Markov().fit(small_events)
    m.meta["events_fingerprint"] = small_events.fingerprint()
    return str(m.save(tmp_path_factory.mktemp("markov") / "m", {"data": "test"}))


def tiny(kind: str, base: str, llm: str = "", other: str = "") -> dict:
    lm = dict(base=base, precision="fp32", scoring="constrained")
    return {"llm-head": {"lm": llm, "epochs": 3, "precision": "fp32", "max_train_persons": 30},
            "mixture": {"members": [other, llm], "max_valid_persons": 20}, "uniform": {},"markov": {}, "bag": {"epochs": 2}, "logit": {"max_iter": 5},
            "career": {"layers": 1, "d": 24, "heads": 2, "ff": 48, "epochs": 1},
            "llm": {**lm, "lora": True, "max_steps": 2, "batch_size": 4, "max_train_persons": 12,
                    "max_valid_persons": 4},
            "icl": {**lm, "shots": 1}}[kind]


def later_years_changed(events, person, cut):
    """The same panel with every year of `person` after row `cut` in another state."""
    f = events.panel.frame.copy()
    rows = f.index[f.person_id == person]
    other = next(s for s in events.states if s not in set(f.state[rows]))
    f.loc[(f.person_id == person) & (f.index > cut), "state"] = other
    return ll.make_events(ll.load_panel(f.assign(occupation=f.state), scheme="titles"), seed=0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_model_contract(kind, small_events, tiny_lm, tmp_path, request):
    fitted = kind in ("llm-head", "mixture")  # kinds built on fitted models
    settings = tiny(kind, tiny_lm, request.getfixturevalue("tiny_llm") if fitted else "",
                    request.getfixturevalue("markov_folder") if fitted else "")
    model = KINDS[kind](**settings)
    # one typed settings object, built once; its dict rebuilds the same object
    assert isinstance(model.settings, model.Settings)
    assert type(model)(**model.config).settings == model.settings
    model.work_dir = tmp_path / "m"  # where an LLM keeps its training checkpoints
    before = copy.deepcopy(model.config)
    assert model.fit(small_events) is model
    assert model.config == before, "fit changed the settings"
    test = small_events.test
    person = test.frame.person_id.value_counts().index[0]
    rows = test.frame.row[test.frame.person_id == person].to_numpy()
    cut = int(rows[len(rows) // 2])
    mine = (test.frame.person_id == person).to_numpy()
    few = test.where(mine | (np.arange(len(test)) < 10))
    lp = model.log_probs(few)
    assert lp.shape == (len(few), len(small_events.states)) and np.isfinite(lp).all()
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-5)
    model.save(tmp_path / "m", {"data": "test"})
    np.testing.assert_allclose(load_model(tmp_path / "m").log_probs(few), lp, atol=1e-5)
    # the same settings and seed fit the same model
    again = KINDS[kind](**settings)
    again.work_dir = tmp_path / "again"
    np.testing.assert_allclose(again.fit(small_events).log_probs(few), lp, atol=1e-5)
    # read another way: a copy with the read settings changed, the fitted model left as it was;
    # a setting that defines the fit cannot change after fitting
    for key in model.read_keys():
        f = next(f for f in dataclasses.fields(model.Settings) if f.name == key)
        other_value = next(c for c in f.metadata["choices"] if c != getattr(model.settings, key))
        other = model.read_as(**{key: other_value})
        assert getattr(other.settings, key) == other_value and model.config == before
        assert other.score_key() != model.score_key()
        if key == "scoring":  # the LLM's renormalised mode: rows are distributions too, and differ
            lp_other = other.log_probs(few)
            np.testing.assert_allclose(np.exp(lp_other).sum(1), 1, atol=1e-5)
            assert np.abs(lp_other - lp).max() > 1e-4
    for f in [f for f in dataclasses.fields(model.Settings) if f.metadata.get("role", "fit") == "fit"][:1]:
        with pytest.raises(UserError, match="cannot change after fitting"):
            model.read_as(**{f.name: getattr(model.settings, f.name)})
    # every setting is typed and explained, and the model card lists each with its value
    card = (tmp_path / "m" / "README.md").read_text()
    for f in dataclasses.fields(model.Settings):
        assert f.metadata["help"] and f"{f.name} = {json.dumps(model.config[f.name], default=str)}: " in card
    # no look-ahead: this person's predictions up to `cut` ignore the years after it
    changed = later_years_changed(small_events, person, cut)
    early = lambda e: e.test.where((e.test.frame.person_id == person).to_numpy()  # noqa: E731
                                   & (e.test.frame.row <= cut).to_numpy())
    np.testing.assert_allclose(model.log_probs(early(small_events)), model.log_probs(early(changed)), atol=1e-5)
