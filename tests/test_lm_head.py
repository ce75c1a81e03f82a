"""The occupation head on a fine-tuned LLM: an exact, normalised distribution equal to a direct
computation from the LLM's hidden states, a two-stage head that is what it says, and a frozen LLM
that must have been fitted on the same people."""
import numpy as np
import pytest
import torch

from laborllm.errors import UserError
from laborllm.models.lm_head import LMHead
from laborllm.models.registry import load_model
from tests.test_contract import tiny, tiny_llm, tiny_lm  # noqa: F401 (fixtures)


def direct_log_probs(head: LMHead, events) -> np.ndarray:
    """From scratch: each person's resume alone through the whole causal LM (no batching, no
    padding, the LM head included), the hidden state before each event's state text, the covariates
    one-hot by hand, the read-out and the two-stage rule written out."""
    llm = head.llm()
    enc = llm._encoder(events.panel)
    f, ev = events.panel.frame, events.frame
    W = head.net.out.weight.detach().double().numpy()
    b = head.net.out.bias.detach().double().numpy()
    out = np.zeros((len(ev), len(head.states)))
    for i, e in enumerate(ev.itertuples()):
        ids, starts = enc.person(f[f.person_id == e.person_id])
        with torch.no_grad():
            h = llm.lm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        cov = [float(str(getattr(e, c)) == level) for c, levels in head.cov_levels.items() for level in levels]
        z = np.r_[h[starts[e.pos] - 1].double().numpy(), cov] @ W.T + b
        if head.config["head"] == "two-stage" and e.last_state >= 0:
            stay, z = 1 / (1 + np.exp(-z[-1])), z[:-1]
            move = np.exp(z - z.max())
            move[e.last_state] = 0
            p = (1 - stay) * move / move.sum()
            p[e.last_state] = stay
        else:
            z = z[:-1] if head.config["head"] == "two-stage" else z
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        out[i] = np.log(p)
    return out


@pytest.mark.parametrize("kind", ["two-stage", "softmax"])
def test_head_is_normalised_and_equals_a_direct_computation(kind, small_events, tiny_llm, tmp_path):  # noqa: F811
    head = LMHead(**{**tiny("llm-head", "", tiny_llm), "head": kind})
    head.work_dir = tmp_path / "h"
    head.fit(small_events)
    assert head.cov_levels["education"], "the predicted year's education is an input"
    test = small_events.test
    few = test.where(test.frame.person_id.isin(test.frame.person_id.unique()[:3]).to_numpy())
    lp = head.log_probs(few)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(lp, direct_log_probs(head, few), atol=1e-4)
    # the head travels with its LLM inside its folder: loading it needs nothing else
    folder = head.save(tmp_path / "h", {"data": "test"})
    assert (folder / "lm" / "model.json").is_file()
    np.testing.assert_allclose(load_model(folder).log_probs(few), lp, atol=1e-6)


def test_head_features_resume_from_finished_people(small_events, tiny_llm, tmp_path):  # noqa: F811
    head = LMHead(**tiny("llm-head", "", tiny_llm))
    head.states = list(small_events.states)
    test = small_events.test
    whole = head.features(test)
    part = tmp_path / "features"
    first = test.where(test.frame.person_id.isin(test.frame.person_id.unique()[:5]).to_numpy())
    head.features(first, part)  # another event set: its parts are not this one's
    head.features(test, part)
    calls = []
    orig = head.llm()._encoder

    def counting(panel):
        enc = orig(panel)
        person = enc.person
        enc.person = lambda rows: calls.append(1) or person(rows)
        return enc

    head.llm()._encoder = counting
    np.testing.assert_allclose(head.features(test, part), whole, atol=1e-5)
    assert not calls, "finished people were computed again"


def test_head_refuses_an_llm_fitted_on_other_people(small_events, tiny_llm, tmp_path):  # noqa: F811
    import laborllm as ll

    other = ll.make_events(small_events.panel, seed=1)  # the same people split otherwise
    with pytest.raises(UserError, match="other data or another split"):
        LMHead(**tiny("llm-head", "", tiny_llm)).fit(other)
    with pytest.raises(UserError, match="not a laborllm model folder"):
        LMHead(lm=str(tmp_path)).fit(small_events)


def test_a_head_packaged_with_its_llm_loads_anywhere(small_events, tiny_llm, tmp_path):  # noqa: F811
    """scripts/package_model.py ships a head with its frozen LLM inside (adapter in bf16): the
    packaged folder alone gives the head's probabilities, to bf16 rounding."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    head = LMHead(**tiny("llm-head", "", tiny_llm))
    head.work_dir = tmp_path / "h"
    folder = head.fit(small_events).save(tmp_path / "h", {"data": "test"})
    script = [sys.executable, str(Path(__file__).parents[1] / "scripts" / "package_model.py"), str(folder),
              "tiny-head", "--dest", str(tmp_path / "assets")]
    r = subprocess.run(script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "assets" / "tiny-head"
    assert json.loads((out / "lm" / "model.json").read_text())["kind"] == "llm"
    test = small_events.test
    few = test.where(np.arange(len(test)) < 30)
    np.testing.assert_allclose(load_model(out).log_probs(few), head.log_probs(few), atol=0.05)
