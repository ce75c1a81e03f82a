"""Benchmark: exact normalised scoring of all states, fast path (cached history + trie) against the naive
one-candidate-at-a-time computation, on real NLSY97 test histories, in the same run.

python -m laborllm.bench.scoring [--model tiny|smollm2|FOLDER|FILE.gguf] [--events N] [--variant titles|codes]
The last line printed is: scoring: events=N candidates=K max_abs_diff=X speedup=Yx
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import laborllm as ll
from laborllm.lm.loading import default_device, load_lm, resolve_base
from laborllm.scoring import ExactScorer, naive_scores
from laborllm.text import ResumeTemplate, SegmentEncoder
from laborllm.text.templates import state_codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="tiny (random 4-layer Llama, own tokenizer), smollm2, a folder or GGUF file")
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--variant", default="titles")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens a pass may take: prefix + events x trie (default: the scorer's)")
    args = ap.parse_args()
    events = ll.make_events(ll.load_panel("nlsy97"))
    panel, test = events.panel, events.test
    tpl = ResumeTemplate(args.variant)
    if args.model == "tiny":
        from laborllm.lm.tiny import tiny_llama, train_tokenizer

        codes = state_codes(panel.states, panel.scheme)
        texts = [tpl.text(g, codes) for _, g in list(panel.frame.groupby("person_id"))[:300]]
        tok = train_tokenizer(texts + [f" {s}\n" for s in panel.states], 2000)
        model = tiny_llama(len(tok), hidden=256, layers=4).to(default_device())
    else:
        model, tok = load_lm(resolve_base(args.model))
    model.eval()
    if torch.cuda.is_available():
        model = model.to(torch.bfloat16)
    enc = SegmentEncoder(tok, tpl, panel.states, panel.scheme)
    # the test person with the longest history; events spread evenly over it (short and long prefixes)
    pid = test.frame.person_id.value_counts().index[0]
    ids, starts = enc.person(panel.person(pid))
    all_pos = test.frame[test.frame.person_id == pid].pos.to_numpy()
    pos = all_pos[np.linspace(0, len(all_pos) - 1, min(args.events, len(all_pos))).round().astype(int)]
    ends = [int(starts[p]) for p in pos]
    scorer = ExactScorer(model, enc.candidates, max_tokens=args.max_tokens)
    scorer.score(ids, ends[:1])  # warm-up
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync(); t0 = time.perf_counter(); fast = scorer.score(ids, ends); sync(); t_fast = time.perf_counter() - t0
    t0 = time.perf_counter(); slow = naive_scores(model, ids, ends, enc.candidates); sync(); t_slow = time.perf_counter() - t0
    norm = lambda a: a - np.logaddexp.reduce(a, axis=1, keepdims=True)  # noqa: E731
    diff = float(max(np.abs(fast - slow).max(), np.abs(norm(fast) - norm(slow)).max()))
    n_tok = sum(len(c) for c in enc.candidates)
    print(f"model={args.model} device={next(model.parameters()).device} dtype={next(model.parameters()).dtype} "
          f"prefix_tokens={ends} candidate_tokens={n_tok} trie_nodes={scorer.trie.n}")
    print(f"fast: {t_fast:.3f}s ({t_fast / len(ends):.3f}s/event); naive: {t_slow:.3f}s ({t_slow / len(ends):.3f}s/event)")
    print(f"scoring: events={len(ends)} candidates={len(enc.candidates)} max_abs_diff={diff:.2e} speedup={t_slow / t_fast:.1f}x")


if __name__ == "__main__":
    main()
