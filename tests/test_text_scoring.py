import numpy as np
import pytest

from laborllm.models.tiny import tiny_llama, train_tokenizer
from laborllm.scoring import CandidateTrie, ExactScorer, naive_scores
from laborllm.text import ResumeTemplate, SegmentEncoder


@pytest.fixture(scope="module")
def enc_and_model(small_events):
    p = small_events.panel
    tpl = ResumeTemplate()
    persons = [g for _, g in p.frame.groupby("person_id")]
    from laborllm.text.templates import state_codes

    codes = state_codes(p.states, p.scheme)
    texts = ["".join(t for _, t in tpl.segments(g, codes)) for g in persons[:150]]
    tok = train_tokenizer(texts + [f" {s}\n" for s in p.states], vocab_size=400)
    return SegmentEncoder(tok, tpl, p.states, p.scheme), tiny_llama(len(tok)), persons


def test_segments_give_the_tokens_of_the_text_for_every_state(enc_and_model):
    enc, _, persons = enc_and_model
    rows = persons[0]
    ids, starts = enc.person(rows)
    assert enc.tok.decode(ids[:-1]) == enc.text(rows)
    # every state's candidate tokens are exactly what the training text holds after "YEAR:"
    for k, s in enumerate(enc.states):
        one = rows.iloc[:2].copy()
        one["state"] = s
        ids, starts = enc.person(one)
        assert ids[starts[1]: starts[1] + len(enc.candidates[k])] == enc.candidates[k]
        assert enc.tok.decode(enc.candidates[k]) == f" {s}\n"


def test_numeric_code_variant(small_events):
    from laborllm.text.templates import state_codes

    p = small_events.panel
    codes = state_codes(p.states, p.scheme)
    assert len(set(codes.values())) == len(p.states)
    tpl = ResumeTemplate(variant="codes", birth_year=False)
    text = "".join(t for _, t in tpl.segments(p.frame[p.frame.person_id == p.frame.person_id.iloc[0]], codes))
    assert "Born in" not in text and "Cashiers" not in text


def test_trie_shares_prefixes():
    t = CandidateTrie([[1, 2, 3], [1, 2, 4], [5]])
    assert t.n == 2  # nodes (1,) and (1,2); [5] needs none
    assert t.ancestors[1, 0] and not t.ancestors[0, 1]


def test_exact_scorer_matches_naive(enc_and_model):
    enc, model, persons = enc_and_model
    rows = persons[3]
    ids, starts = enc.person(rows)
    ends = list(starts[1:4])
    fast = ExactScorer(model, enc.candidates, max_tokens=4096).score(ids, ends)
    slow = naive_scores(model, ids, ends, enc.candidates)
    assert np.abs(fast - slow).max() < 1e-4
    # small chunks (one event per pass) give the same numbers
    n_trie = ExactScorer(model, enc.candidates).trie.n
    one = ExactScorer(model, enc.candidates, max_tokens=int(max(ends)) + n_trie + 1).score(ids, ends)
    assert np.abs(one - slow).max() < 1e-4
    # the unnormalised one-pass mode agrees with the exact score of the true state
    spans = [(int(s), int(s) + len(enc.candidates[enc.states.index(st)])) for s, st in zip(starts[1:4], rows.state.iloc[1:4])]
    true = ExactScorer(model, enc.candidates).true_only(ids, spans)
    k = [enc.states.index(st) for st in rows.state.iloc[1:4]]
    assert np.abs(true - slow[np.arange(3), k]).max() < 1e-4
