"""Exact log-probabilities of every candidate state after a history, under a causal LM.

For an event whose prefix ends with ``YEAR:``, the score of candidate k with tokens t0..t(n-1)
(title plus line terminator) is log P(t0 | prefix) + sum_j log P(tj | prefix, t0..t(j-1)).

Fast path (packing + a trie): the candidates' token sequences form a trie. The person's resume is
run once; the first token of every candidate is read off the output at the prefix's last position.
The internal trie nodes of each event are packed after the resume text in the same sequence, each
attending to the event's prefix and to its own trie ancestors through a 4-D attention mask, with
position ids continuing from the prefix. One forward pass thus scores all candidates of several
events of a person, sharing the history and the candidates' common prefixes. `naive_scores` is the
oracle: one forward pass per (event, candidate).
"""
from __future__ import annotations

import numpy as np
import torch


class CandidateTrie:
    """The trie of candidate token sequences (the first token of each is scored from the prefix)."""

    def __init__(self, candidates: list[list[int]]):
        nodes: dict[tuple, int] = {}
        parent, token, depth = [], [], []
        for c in candidates:
            if not c:
                raise ValueError("empty candidate")
            for d in range(1, len(c)):  # internal nodes: proper prefixes c[:d], d >= 1
                key = tuple(c[:d])
                if key not in nodes:
                    nodes[key] = len(token)
                    parent.append(nodes.get(tuple(c[: d - 1]), -1) if d > 1 else -1)
                    token.append(c[d - 1])
                    depth.append(d)
        self.n = len(token)
        self.token = torch.tensor(token, dtype=torch.long)
        self.depth = torch.tensor(depth, dtype=torch.long)
        anc = torch.eye(self.n, dtype=torch.bool)
        for i, p in enumerate(parent):  # parents come before children
            if p >= 0:
                anc[i] |= anc[p]
        self.ancestors = anc  # ancestors[i, j]: node i attends to node j
        self.first = torch.tensor([c[0] for c in candidates])
        # for each candidate: (node index whose output predicts token j, token j) for j >= 1
        steps = [(nodes[tuple(c[:d])], c[d]) for k, c in enumerate(candidates) for d in range(1, len(c))]
        owner = [k for k, c in enumerate(candidates) for _ in range(1, len(c))]
        self.step_node = torch.tensor([s[0] for s in steps], dtype=torch.long)
        self.step_token = torch.tensor([s[1] for s in steps], dtype=torch.long)
        self.step_owner = torch.tensor(owner, dtype=torch.long)
        self.k = len(candidates)


def _forward_logprobs(model, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
    kwargs = {"input_ids": ids[None], "use_cache": False}
    if mask is not None:
        neg = torch.finfo(torch.float32).min
        kwargs["attention_mask"] = torch.where(mask, 0.0, neg)[None, None].to(_dtype(model))
        kwargs["position_ids"] = pos[None]
    logits = model(**kwargs).logits[0]
    return torch.log_softmax(logits.float(), -1)


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


class ExactScorer:
    """Raw log P(candidate | prefix) for all candidates at every requested prefix of a resume."""

    def __init__(self, model, candidates: list[list[int]], max_tokens: int | None = None):
        """max_tokens bounds one packed sequence; None packs one event per pass (best on a CPU,
        where the dense attention mask of long packed sequences costs more than it saves)."""
        self.model, self.trie, self.max_tokens = model, CandidateTrie(candidates), max_tokens
        self.device = next(model.parameters()).device
        if max_tokens is not None and self.trie.n >= max_tokens:
            raise ValueError(f"max_tokens={max_tokens} is smaller than one event's candidate trie ({self.trie.n})")

    @torch.no_grad()
    def score(self, ids: list[int], prefix_ends: list[int]) -> np.ndarray:
        """(len(prefix_ends), K) raw log-probabilities; prefix_ends[i] = number of prefix tokens."""
        out = np.zeros((len(prefix_ends), self.trie.k))
        if not len(prefix_ends):
            return out
        t, dev = self.trie, self.device
        per_chunk = 1 if self.max_tokens is None else max(1, (self.max_tokens - max(prefix_ends)) // max(t.n, 1))
        order = np.argsort(prefix_ends)
        for c0 in range(0, len(order), per_chunk):
            chunk = order[c0: c0 + per_chunk]
            L = int(max(prefix_ends[i] for i in chunk))
            n_tot = L + len(chunk) * t.n
            seq = torch.empty(n_tot, dtype=torch.long)
            seq[:L] = torch.tensor(ids[:L])
            pos = torch.empty(n_tot, dtype=torch.long)
            pos[:L] = torch.arange(L)
            mask = torch.zeros(n_tot, n_tot, dtype=torch.bool)
            mask[:L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
            for b, e in enumerate(chunk):
                P, s = int(prefix_ends[e]), L + b * t.n
                seq[s: s + t.n] = t.token
                pos[s: s + t.n] = P + t.depth - 1
                mask[s: s + t.n, :P] = True
                mask[s: s + t.n, s: s + t.n] = t.ancestors
            lp = _forward_logprobs(self.model, seq.to(dev), mask.to(dev), pos.to(dev)).cpu()
            for b, e in enumerate(chunk):
                P, s = int(prefix_ends[e]), L + b * t.n
                score = lp[P - 1, t.first].double().clone()
                steps = lp[s + t.step_node, t.step_token].double()
                score.index_add_(0, t.step_owner, steps)
                out[e] = score.numpy()
        return out

    @torch.no_grad()
    def true_only(self, ids: list[int], segments: list[tuple[int, int]]) -> np.ndarray:
        """Unnormalised mode: log P(the observed tokens of each [start, end) span) from one pass."""
        lp = _forward_logprobs(self.model, torch.tensor(ids, device=self.device), None, None).cpu()
        tgt = torch.tensor(ids)
        return np.array([float(lp[torch.arange(a - 1, b - 1), tgt[a:b]].sum()) for a, b in segments])


@torch.no_grad()
def naive_scores(model, ids: list[int], prefix_ends: list[int], candidates: list[list[int]]) -> np.ndarray:
    """The oracle: one forward pass of prefix + candidate for every (prefix, candidate) pair."""
    dev = next(model.parameters()).device
    out = np.zeros((len(prefix_ends), len(candidates)))
    for i, P in enumerate(prefix_ends):
        for k, c in enumerate(candidates):
            full = torch.tensor(list(ids[:P]) + list(c), device=dev)
            lp = _forward_logprobs(model, full, None, None)
            out[i, k] = float(lp[torch.arange(P - 1, P - 1 + len(c)), full[P:]].sum())
    return out
