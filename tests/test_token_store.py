"""Tokenised resumes stored on disk (laborllm/text/store.py): the same ids as encoding in memory,
reused while panel, people, template and tokenizer are unchanged, rebuilt when one changes."""
import numpy as np
import pytest

import laborllm as ll
from laborllm.lm.tiny import train_tokenizer
from laborllm.text import ResumeTemplate, SegmentEncoder
from laborllm.text import store
from laborllm.text.store import ResumeTokens, resume_tokens


@pytest.fixture(scope="module")
def tok(small_events):
    from laborllm.text.templates import state_codes

    p, tpl = small_events.panel, ResumeTemplate()
    codes = state_codes(p.states, p.scheme)
    texts = [tpl.text(g, codes) for _, g in list(p.frame.groupby("person_id"))[:100]]
    return train_tokenizer(texts + [f" {s}\n" for s in p.states], vocab_size=400)


def _in_memory(panel, people, enc):
    f = panel.frame
    return [enc.person(f[f.person_id == pid])[0] for pid in people]


def test_stored_ids_equal_encoding_in_memory_in_the_given_order(small_events, tok, tmp_path):
    p = small_events.panel
    enc = SegmentEncoder(tok, ResumeTemplate(), p.states, p.scheme)
    people = sorted(p.frame.person_id.unique(), key=str)[::-1][:120]  # an order that is not the panel's
    got = resume_tokens(p, people, enc, tmp_path)
    want = _in_memory(p, people, enc)
    assert len(got) == len(want) == 120
    assert [got[i] for i in range(len(got))] == want
    assert got.lengths.tolist() == [len(w) for w in want]
    assert got.person_ids == [str(x) for x in people]
    assert got[-1] == want[-1]
    with pytest.raises(IndexError):
        got[120]


def test_store_is_reused_until_panel_template_or_people_change(small_events, tok, tmp_path, monkeypatch):
    p = small_events.panel
    people = sorted(p.frame.person_id.unique())[:50]
    enc = SegmentEncoder(tok, ResumeTemplate(), p.states, p.scheme)
    first = resume_tokens(p, people, enc, tmp_path)
    files = sorted(tmp_path.glob("*.arrow"))
    assert len(files) == 1

    def refuse(*a, **k):
        raise AssertionError("tokenised again although the store holds these resumes")

    monkeypatch.setattr(store, "_write", refuse)
    again = resume_tokens(p, people, SegmentEncoder(tok, ResumeTemplate(), p.states, p.scheme), tmp_path)
    assert list(again) == list(first)
    monkeypatch.undo()

    no_birth = SegmentEncoder(tok, ResumeTemplate(birth_year=False), p.states, p.scheme)
    other_panel = ll.load_panel(p.frame.assign(occupation=p.frame.state, year=p.frame.year + 1), scheme="titles")
    for changed in (resume_tokens(p, people, no_birth, tmp_path),
                    resume_tokens(p, people[:-1], enc, tmp_path),
                    resume_tokens(other_panel, people, SegmentEncoder(tok, ResumeTemplate(), other_panel.states,
                                                                     other_panel.scheme), tmp_path)):
        assert list(changed) != list(first)
    assert len(list(tmp_path.glob("*.arrow"))) == 4
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no half-written file left


def test_parallel_build_equals_serial(small_events, tok, tmp_path, monkeypatch):
    p = small_events.panel
    people = sorted(p.frame.person_id.unique())
    enc = SegmentEncoder(tok, ResumeTemplate(), p.states, p.scheme)
    serial = resume_tokens(p, people, enc, tmp_path / "serial", workers=1)
    monkeypatch.setattr(store, "PARALLEL_FROM", 0)
    monkeypatch.setattr(store, "CHUNK", 70)  # several worker tasks and record batches
    parallel = resume_tokens(p, people, enc, tmp_path / "parallel", workers=2)
    assert len(parallel._offsets) == -(-len(people) // 70)
    assert list(parallel) == list(serial) == _in_memory(p, people, enc)


def test_concatenation_reads_as_one_sequence(small_events, tok, tmp_path):
    p = small_events.panel
    people = sorted(p.frame.person_id.unique())
    enc = SegmentEncoder(tok, ResumeTemplate(), p.states, p.scheme)
    a, b = resume_tokens(p, people[:30], enc, tmp_path), resume_tokens(p, people[30:40], enc, tmp_path)
    both = a + b
    assert isinstance(both, ResumeTokens) and len(both) == 40
    assert list(both) == list(a) + list(b)
    assert (a + []) is a and ([] + a) is a
    assert np.array_equal(both.lengths, np.concatenate([a.lengths, b.lengths]))
