import numpy as np
import pytest

from laborllm.lm.tiny import ARCHITECTURES, tiny_llama, train_tokenizer
from laborllm.scoring import CandidateTrie, ExactScorer, naive_constrained, naive_scores
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


def test_header_reads_as_english():
    """'an' before a vowel: most men of the NLSY79 panel are 'Other race'."""
    import pandas as pd

    tpl = ResumeTemplate()
    assert tpl.header(pd.Series({"race": "Other race", "gender": "man"})).startswith("Work history of an Other race man.")
    assert tpl.header(pd.Series({"race": "Asian or Pacific Islander", "gender": "woman"})).startswith("Work history of an Asian")
    assert tpl.header(pd.Series({"race": "Black", "gender": "woman"})).startswith("Work history of a Black woman")


def test_trie_shares_prefixes():
    t = CandidateTrie([[1, 2, 3], [1, 2, 4], [5]])
    assert t.n == 2  # nodes (1,) and (1,2); [5] needs none
    assert t.ancestors[1, 0] and not t.ancestors[0, 1]
    # constrained mode: branching at the root (1 vs 5) and at (1, 2) (3 vs 4); node (1,) has one
    # child but is an ancestor of a branching node, so it keeps its place
    assert t.n_branching == 2 and t.layout("constrained").n == 2
    # a chain after the last branch needs no position
    assert CandidateTrie([[1, 2, 3, 4], [5, 6, 7]]).layout("constrained").n == 0
    with pytest.raises(ValueError, match="prefix"):
        CandidateTrie([[1, 2], [1, 2, 3]])


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


def test_constrained_scorer_matches_its_definition(enc_and_model):
    """The constrained scores equal the by-definition oracle, form a proper distribution
    over the states, and need far fewer positions than the renormalised trie."""
    enc, model, persons = enc_and_model
    ids, starts = enc.person(persons[5])
    ends = [int(s) for s in starts[1:4]]
    scorer = ExactScorer(model, enc.candidates, mode="constrained")
    fast = scorer.score(ids, ends)
    slow = naive_constrained(model, ids, ends, enc.candidates)
    assert np.abs(fast - slow).max() < 1e-4
    np.testing.assert_allclose(np.exp(fast).sum(1), 1, atol=1e-6)
    assert scorer.layout.n < scorer.trie.n / 2
    # per-event passes give the same numbers as one pass for all events
    one = ExactScorer(model, enc.candidates, mode="constrained", max_tokens=max(ends) + scorer.layout.n).score(ids, ends)
    assert np.abs(one - fast).max() < 1e-5


def test_states_told_apart_by_their_first_token_need_no_trie_pass(enc_and_model):
    """Candidates that differ in their first token (coarse codes in a large vocabulary) leave the
    trie empty: the history's pass alone scores them, exactly, in both modes."""
    enc, model, persons = enc_and_model
    ids, starts = enc.person(persons[4])
    ends = [int(s) for s in starts[1:4]]
    cands = [[t] for t in range(5, 25)]
    for mode, oracle in (("renormalised", naive_scores), ("constrained", naive_constrained)):
        scorer = ExactScorer(model, cands, mode=mode)
        assert scorer.layout.n == 0
        assert np.abs(scorer.score(ids, ends) - oracle(model, ids, ends, cands)).max() < 1e-4


def test_modes_agree_when_no_mass_leaves_the_states(enc_and_model):
    """Where every node's next-token distribution stays on its children (no mass outside the state
    texts), the constrained scores equal the renormalised ones: both read-outs fed such rows."""
    import torch

    enc, model, _ = enc_and_model
    cands = enc.candidates
    V = model.config.vocab_size

    def row(prefix: tuple) -> torch.Tensor:  # a random distribution over the prefix's children only
        kids = sorted({c[len(prefix)] for c in cands if tuple(c[: len(prefix)]) == prefix and len(c) > len(prefix)})
        g = torch.Generator().manual_seed(hash(prefix) % 2**31)
        logits = torch.full((V,), -torch.inf)
        logits[kids] = torch.randn(len(kids), generator=g) * 2
        return torch.log_softmax(logits, -1)

    scores = {}
    for mode in ("renormalised", "constrained"):
        sc = ExactScorer(model, cands, mode=mode)
        t, lay = sc.trie, sc.layout
        lp = torch.zeros(1 + len(lay.kept), V)
        lp[0] = row(())
        for i in torch.nonzero(lay.kslot >= 0).flatten().tolist():
            anc = torch.nonzero(t.ancestors[i]).flatten().tolist()
            lp[1 + int(lay.kslot[i])] = row(tuple(int(t.token[a]) for a in sorted(anc, key=lambda a: int(t.depth[a]))))
        # (the constrained scorer's output layer computes only the columns its read-out uses)
        scores[mode] = sc._readout(lp if sc.columns is None else lp[:, sc.columns]).numpy()
    np.testing.assert_allclose(np.exp(scores["renormalised"]).sum(), 1, atol=1e-6)
    np.testing.assert_allclose(scores["constrained"], scores["renormalised"], atol=1e-6)


def test_bf16_scores_stay_close_to_fp32(enc_and_model):
    """bf16 weights (the CPU fast path on AVX512-BF16/AMX machines) move normalised log-probabilities
    of likely states by little; the oracle checks above stay in fp32."""
    import copy

    import torch

    enc, model, persons = enc_and_model
    ids, starts = enc.person(persons[2])
    ends = [int(s) for s in starts[1:4]]
    lp32 = ExactScorer(model, enc.candidates, mode="constrained").score(ids, ends)
    lp16 = ExactScorer(copy.deepcopy(model).to(torch.bfloat16), enc.candidates, mode="constrained").score(ids, ends)
    likely = lp32 > np.log(1e-3)
    assert np.abs(lp16 - lp32)[likely].max() < 0.1


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "llama"])  # llama: the default
def test_exact_scoring_is_exact_on_other_architectures(enc_and_model, arch):
    """The trie run after the cached history (a 4-D attention mask, positions continuing each
    prefix) gives the naive one-candidate-at-a-time scores on each architecture users bring, in
    both modes."""
    enc, _, persons = enc_and_model
    model = tiny_llama(len(enc.tok), arch=arch)
    ids, starts = enc.person(persons[3])
    ends = [int(s) for s in starts[1:4]]
    fast = ExactScorer(model, enc.candidates, max_tokens=4096).score(ids, ends)
    assert np.abs(fast - naive_scores(model, ids, ends, enc.candidates)).max() < 1e-4
    fast = ExactScorer(model, enc.candidates, mode="constrained").score(ids, ends)
    assert np.abs(fast - naive_constrained(model, ids, ends, enc.candidates)).max() < 1e-4


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_a_prefix_shared_with_the_previous_pass_is_run_once(enc_and_model, arch):
    """Passes that share a long prefix with the one before (the in-context prompt before different
    people; one person's futures that differ in their last years; a person's second chunk) run it
    once and reuse its keys and values, with the scores of running each whole sequence, in both
    modes (gemma3: sliding-window layers)."""
    enc, _, persons = enc_and_model
    model = tiny_llama(len(enc.tok), arch=arch)
    ran = []
    forward = model.forward
    model.forward = lambda *a, **k: (ran.append(k["input_ids"].shape[1]), forward(*a, **k))[1]
    prompt = enc.person(persons[7])[0][:-1] + enc.person(persons[8])[0]
    rows = persons[3]
    other = rows.assign(state=list(rows.state[:-1]) + [rows.state.iloc[0] if rows.state.iloc[-1] != rows.state.iloc[0]
                                                       else rows.state.iloc[1]])  # another last year
    jobs = []
    for p in (persons[3], persons[4], persons[5]):  # different people behind one prompt
        ids, starts = enc.person(p)
        jobs.append((prompt + ids, [len(prompt) + int(s) for s in starts[1:4]]))
    for r in (rows, other):  # one person's two futures: all but the last year shared
        ids, starts = enc.person(r)
        jobs.append((ids, [int(starts[-1])]))
    for mode in ("renormalised", "constrained"):
        fresh = [ExactScorer(model, enc.candidates, mode=mode).score(ids, ends) for ids, ends in jobs]
        ran.clear()
        shared = ExactScorer(model, enc.candidates, mode=mode)
        for (ids, ends), want in zip(jobs, fresh):
            assert np.abs(shared.score(ids, ends) - want).max() < 1e-4
        with_reuse = sum(ran)
        ran.clear()
        for ids, ends in jobs:
            ExactScorer(model, enc.candidates, mode=mode).score(ids, ends)
        assert with_reuse < sum(ran) - len(prompt)  # the prompt ran once, not three times
        # one event a pass: each later pass reuses the person's resume before its events
        one = ExactScorer(model, enc.candidates, mode=mode, max_tokens=max(jobs[0][1]) + 1)
        assert np.abs(one.score(*jobs[0]) - fresh[0]).max() < 1e-4


def test_year_covariates_template_never_shows_a_later_year(small_events, enc_and_model):
    """Each year's line states that year's education (and a region it moved to) before the state:
    the tokens up to where year t's state begins carry year t's covariates and nothing of later years."""
    enc = enc_and_model[0]
    f = small_events.panel.frame
    # a person whose education changes along the history
    pid = next(p for p, g in f.groupby("person_id") if g.education.nunique() > 1 and len(g) > 4)
    rows = f[f.person_id == pid].reset_index(drop=True)
    tpl = ResumeTemplate("titles", year_covariates=True)
    cov = SegmentEncoder(enc.tok, tpl, small_events.states, small_events.panel.scheme)
    text = cov.text(rows)
    for i in range(len(rows)):
        assert f"{int(rows.year[i])} ({rows.education[i]}" in text  # the predicted year's education, on its line
    ids, starts = cov.person(rows)
    for t in range(1, len(rows)):
        later = rows.copy()
        later.loc[t + 1:, "education"] = "Some unseen degree"
        later.loc[t + 1:, "region"] = "Moon"
        ids2, starts2 = cov.person(later)
        assert starts2[t] == starts[t] and ids2[:starts[t]] == ids[:starts[t]], f"year {t} sees a later year"
    moved = rows.copy()
    moved.loc[2:, "region"] = "Moon"
    assert f"{int(rows.year[2])} ({rows.education[2]}, moved to the Moon region):" in cov.text(moved)
    assert "moved to" not in cov.text(moved).split(f"{int(rows.year[3])} (")[1].split("\n")[0]  # said once, where it changed
    plain = SegmentEncoder(enc.tok, ResumeTemplate("titles"), small_events.states, small_events.panel.scheme)
    assert f"{int(rows.year[1])}: " in plain.text(rows)  # the default template is unchanged
