"""Exact log-probabilities of every candidate state after a history, under a causal LM.

For an event whose prefix ends with ``YEAR:``, candidate k has tokens t0..t(n-1) (title plus line
terminator). Two exact normalisations are offered:

- "renormalised": log P(t0 | prefix) + sum_j log P(tj | prefix, t0..t(j-1)), the raw probability of
  the candidate's text, later renormalised over the states (mass outside the state texts is
  reported). Needs one forward position per trie node.
- "constrained": the product, over the trie nodes on the candidate's path that have two or more
  children (the line terminator counts as a child), of the next-token probability renormalised
  among that node's children. It is a proper distribution over the states -- the one constrained
  decoding samples from -- and equals the renormalised one when the model puts no mass outside the
  state texts. Nodes with one child contribute 1, so only branching nodes and their ancestors need
  forward positions (75 of the 1,740 nodes for the 334 NLSY97 titles in SmolLM2's tokens), and only
  the next tokens of branching nodes are read, so the output layer computes those columns only.

Fast path (a key-value cache + a trie): the person's resume is run once, into a key-value cache; the
root's children are read off the output at each event's prefix's last position. The trie nodes an
event needs then run as one row of a batch per event, each attending to its own prefix in the cache
and to its own trie ancestors through a 4-D attention mask, with position ids continuing from that
prefix. Two forward passes thus score all candidates of several events of a person, and attention
costs events x trie x prefix rather than the square of one sequence holding every event's trie (the
former packing: 1.28x slower on NLSY97 on a 2-core CPU, docs/benchmarks.md). The keys and values of
a long prefix that a pass shares with the one before (the in-context baseline's prompt before every
resume; a simulated career's observed years, the same in every sampled future; a person's resume in
a second pass) are reused instead of run again. `naive_scores` and `naive_constrained` are the oracles: one forward pass
per (event, candidate) or per (event, branching node).
"""
from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

MODES = ("renormalised", "constrained")
ROOT = -1  # the "node" of the prefix's last position


@dataclass(frozen=True)
class _Layout:
    """Trie nodes placed in the packed sequence (token, depth, ancestor mask), and those whose
    logits are read: `kept` (layout slots) and, per trie node, its index among them (`kslot`, -1
    when not read). Only the kept rows go through the LM head."""

    token: torch.Tensor
    depth: torch.Tensor
    ancestors: torch.Tensor
    kept: torch.Tensor
    kslot: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.token)


class CandidateTrie:
    """The trie of candidate token sequences (the first token of each is scored from the prefix)."""

    def __init__(self, candidates: list[list[int]]):
        if len({tuple(c) for c in candidates}) != len(candidates):
            raise ValueError("two candidates have the same tokens")
        nodes: dict[tuple, int] = {}
        parent, token, depth = [], [], []
        for c in candidates:
            if not c:
                raise ValueError("empty candidate")
            for d in range(1, len(c)):  # internal nodes: proper prefixes c[:d], d >= 1
                key = tuple(c[:d])
                if key not in nodes:
                    nodes[key] = len(token)
                    parent.append(nodes.get(tuple(c[: d - 1]), ROOT) if d > 1 else ROOT)
                    token.append(c[d - 1])
                    depth.append(d)
        if any(tuple(c) in nodes for c in candidates):
            raise ValueError("a candidate's tokens are a prefix of another's (missing line terminator?)")
        self.n, self.k = len(token), len(candidates)
        self.parent = parent
        self.token = torch.tensor(token, dtype=torch.long)
        self.depth = torch.tensor(depth, dtype=torch.long)
        anc = torch.eye(self.n, dtype=torch.bool)
        for i, p in enumerate(parent):  # parents come before children
            if p >= 0:
                anc[i] |= anc[p]
        self.ancestors = anc  # ancestors[i, j]: node i attends to node j
        self.first = torch.tensor([c[0] for c in candidates])
        # every step of every candidate: (source node, token, owner); source ROOT for the first token
        src = [ROOT if d == 0 else nodes[tuple(c[:d])] for c in candidates for d in range(len(c))]
        tok = [c[d] for c in candidates for d in range(len(c))]
        own = [k for k, c in enumerate(candidates) for _ in c]
        inner = [i for i, s in enumerate(src) if s != ROOT]
        self.step_node = torch.tensor([src[i] for i in inner], dtype=torch.long)
        self.step_token = torch.tensor([tok[i] for i in inner], dtype=torch.long)
        self.step_owner = torch.tensor([own[i] for i in inner], dtype=torch.long)
        # constrained mode: the distinct edges (source, token) out of branching sources
        children: dict[int, set] = {}
        for s, t in zip(src, tok):
            children.setdefault(s, set()).add(t)
        branching = sorted(s for s, ch in children.items() if len(ch) > 1)
        edges = sorted({(s, t) for s, t in zip(src, tok) if s in set(branching)})
        edge_id = {e: i for i, e in enumerate(edges)}
        group_id = {s: i for i, s in enumerate(branching)}
        self.edge_source = torch.tensor([s for s, _ in edges], dtype=torch.long)
        self.edge_token = torch.tensor([t for _, t in edges], dtype=torch.long)
        self.edge_group = torch.tensor([group_id[s] for s, _ in edges], dtype=torch.long)
        path = [(edge_id[(s, t)], k) for s, t, k in zip(src, tok, own) if (s, t) in edge_id]
        self.path_edge = torch.tensor([e for e, _ in path], dtype=torch.long)
        self.path_owner = torch.tensor([k for _, k in path], dtype=torch.long)
        self.n_branching = len(branching)

    def layout(self, mode: str) -> _Layout:
        """All nodes (renormalised), or only branching nodes and their ancestors (constrained)."""
        read = torch.zeros(self.n, dtype=torch.bool)
        if mode == "renormalised":
            read[:] = True
            place = read
        else:
            read[self.edge_source[self.edge_source >= 0]] = True  # branching nodes
            place = self.ancestors[read].any(0) if read.any() else read
        idx = place.nonzero().flatten()
        slot = torch.full((self.n,), -1, dtype=torch.long)
        slot[idx] = torch.arange(len(idx))
        kslot = torch.full((self.n,), -1, dtype=torch.long)
        kslot[read] = torch.arange(int(read.sum()))
        return _Layout(self.token[idx], self.depth[idx], self.ancestors[idx][:, idx], slot[read], kslot)


def _forward_logits(model, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None,
                    keep: torch.Tensor | None = None, past=None) -> torch.Tensor:
    """fp32 logits of the rows `keep` (all rows when None): only they go through the LM head. `ids`:
    one sequence, or a batch of them (2-D, with `mask` and `pos` batched alike). `past`: the keys and
    values of the tokens before `ids`, which the pass extends in place."""
    one = ids.dim() == 1
    kwargs = {"input_ids": ids[None] if one else ids, "use_cache": False}
    if past is not None:
        kwargs |= {_cache_arg(model): past, "use_cache": True}
    if mask is not None:
        neg = torch.finfo(torch.float32).min
        mask = torch.where(mask, 0.0, neg).to(_dtype(model))
        kwargs["attention_mask"] = mask[None, None] if one else mask[:, None]
        kwargs["position_ids"] = pos[None] if one else pos
    if keep is not None:
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits.float()
    return logits[0] if one else logits


def _forward_logprobs(model, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    return torch.log_softmax(_forward_logits(model, ids, mask, pos, keep), -1)


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _cache_arg(model) -> str:
    """The forward argument taking a KV cache: `cache` since transformers 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@torch.no_grad()
def _prefix_cache(model, tokens: np.ndarray):
    """The keys and values of these tokens, filled in place by one forward pass."""
    cache = _new_cache(model)
    dev = next(model.parameters()).device
    model(input_ids=torch.as_tensor(tokens, device=dev)[None], use_cache=True, logits_to_keep=1,
          **{_cache_arg(model): cache})
    return cache


@contextmanager
def _head_over(model, tokens: torch.Tensor | None):
    """The model's output layer cut to the columns of `tokens` (all when None) while scoring: the
    constrained mode reads only the state texts' next tokens, so the other 49k-odd columns of a
    vocabulary are never computed. The model's own forward still runs whatever follows the layer
    (e.g. Gemma's logit soft-capping), column by column."""
    if tokens is None:
        yield
        return
    head = model.get_output_embeddings()
    cut = torch.nn.Linear(head.in_features, len(tokens), bias=head.bias is not None, device=head.weight.device,
                          dtype=head.weight.dtype)
    cut.weight = torch.nn.Parameter(head.weight[tokens.to(head.weight.device)], requires_grad=False)
    if head.bias is not None:
        cut.bias = torch.nn.Parameter(head.bias[tokens.to(head.bias.device)], requires_grad=False)
    model.set_output_embeddings(cut)
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class ExactScorer:
    """Log P(candidate | prefix) for all candidates at every requested prefix of a resume: raw
    (mode "renormalised", to be renormalised by the caller) or already normalised ("constrained")."""

    MIN_REUSE = 32  # a shorter shared prefix is run again (its copy would cost about what it saves)

    def __init__(self, model, candidates: list[list[int]], max_tokens: int | None = None, mode: str = "renormalised"):
        """max_tokens bounds a pass: the prefix plus as many events' tries as fit (at least one
        event). The default, 2048 on a CPU and 8192 on a GPU, takes all of a person's events at once
        for the small tries of coarse panels and the constrained mode, and one event a pass for a
        large renormalised trie."""
        if mode not in MODES:
            raise ValueError(f"unknown scoring mode {mode!r}; choose {' or '.join(MODES)}")
        self.model, self.trie, self.mode = model, CandidateTrie(candidates), mode
        self.device = next(model.parameters()).device
        self.max_tokens = max_tokens or (8192 if self.device.type == "cuda" else 2048)
        self.layout = self.trie.layout(mode)
        # constrained: the output layer computes only the columns of the tokens the readout uses
        cut = mode == "constrained" and isinstance(model.get_output_embeddings(), torch.nn.Linear)
        self.columns = torch.unique(self.trie.edge_token) if cut else None
        self._edge_col = torch.searchsorted(self.columns, self.trie.edge_token) if cut else self.trie.edge_token
        self._last = None  # the previous pass's tokens before its trie nodes
        self._kept = None  # (tokens, their keys and values): a prefix shared by passes, run once

    @torch.no_grad()
    def score(self, ids: list[int], prefix_ends: list[int]) -> np.ndarray:
        """(len(prefix_ends), K) log-probabilities; prefix_ends[i] = number of prefix tokens.

        Per chunk of events: the resume up to the latest event's year runs once into a key-value
        cache (its rows before each event's state text give the first token's scores); then the trie
        runs once per event, as a batch, each row attending to its own prefix in the cache and to its
        own ancestors. Attention thus costs events x trie x prefix, not the square of one sequence
        holding every event's trie."""
        out = np.zeros((len(prefix_ends), self.trie.k))
        if not len(prefix_ends):
            return out
        with _head_over(self.model, self.columns):
            self._score(ids, prefix_ends, out)
        return out

    def _score(self, ids: list[int], prefix_ends: list[int], out: np.ndarray) -> None:
        lay, dev = self.layout, self.device
        per_chunk = max(1, (self.max_tokens - max(prefix_ends)) // max(lay.n, 1))
        order = np.argsort(prefix_ends)
        for c0 in range(0, len(order), per_chunk):
            chunk = order[c0: c0 + per_chunk]
            ends = torch.tensor([int(prefix_ends[e]) for e in chunk])
            L = int(ends.max())
            tokens = np.asarray(ids[:L])
            # the earliest event's prefix end must be run: its last position gives the first token's scores
            S, cache = self._reuse(tokens, int(ends.min()) - 1)
            cache = _new_cache(self.model) if cache is None else cache
            root = _forward_logits(self.model, torch.as_tensor(tokens[S:], device=dev), None, None,
                                   (ends - 1 - S).to(dev), cache)
            nb = len(chunk)
            if not lay.n:  # every branching at the root: the first token decides, no trie pass
                for b, e in enumerate(chunk):
                    out[e] = self._readout(root[b: b + 1].cpu()).numpy()
                continue
            cache.batch_repeat_interleave(nb)
            mask = torch.cat([(torch.arange(L)[None] < ends[:, None])[:, None].expand(nb, lay.n, L),
                              lay.ancestors.expand(nb, lay.n, lay.n)], dim=2)
            logits = _forward_logits(self.model, lay.token.expand(nb, lay.n).to(dev), mask.to(dev),
                                     (ends[:, None] + lay.depth[None] - 1).to(dev), lay.kept.to(dev), cache)
            for b, e in enumerate(chunk):
                out[e] = self._readout(torch.cat([root[b: b + 1], logits[b]]).cpu()).numpy()

    def _reuse(self, tokens: np.ndarray, limit: int):
        """How many leading `tokens` need not be run (at most `limit`), with a copy of their keys and
        values: the kept prefix when it begins `tokens`, else the prefix shared with the previous
        pass when it is long enough (run once here and kept), else none."""
        last, self._last = self._last, tokens
        if self._kept is not None and len(self._kept[0]) <= limit and np.array_equal(tokens[:len(self._kept[0])], self._kept[0]):
            return len(self._kept[0]), copy.deepcopy(self._kept[1])
        S = min(_common_prefix(tokens, last), limit) if last is not None else 0
        if S < self.MIN_REUSE:
            return 0, None
        self._kept = (tokens[:S], _prefix_cache(self.model, tokens[:S]))
        return S, copy.deepcopy(self._kept[1])

    def _readout(self, logits: torch.Tensor) -> torch.Tensor:
        """Candidate scores of one event from its block of logits: the root row, then the read nodes."""
        t, lay = self.trie, self.layout
        if self.mode == "renormalised":
            lp = torch.log_softmax(logits, -1)
            score = lp[0, t.first].double().clone()
            score.index_add_(0, t.step_owner, lp[1 + lay.kslot[t.step_node], t.step_token].double())
            return score
        # constrained: only the children's logits matter (the full-vocabulary normaliser cancels)
        rows, inner = torch.zeros_like(t.edge_source), t.edge_source != ROOT  # the root row, else the node's
        rows[inner] = 1 + lay.kslot[t.edge_source[inner]]
        v = logits[rows, self._edge_col].double()
        g = t.edge_group
        top = torch.full((t.n_branching,), -torch.inf, dtype=torch.float64).scatter_reduce(0, g, v, "amax")
        lse = top + torch.log(torch.zeros(t.n_branching, dtype=torch.float64).index_add(0, g, torch.exp(v - top[g])))
        return torch.zeros(t.k, dtype=torch.float64).index_add(0, t.path_owner, (v - lse[g])[t.path_edge])

    @torch.no_grad()
    def true_only(self, ids: list[int], segments: list[tuple[int, int]]) -> np.ndarray:
        """Unnormalised mode: log P(the observed tokens of each [start, end) span) from one pass."""
        rows = [torch.arange(a - 1, b - 1) for a, b in segments]
        keep = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
        lp = _forward_logprobs(self.model, torch.tensor(ids, device=self.device), None, None, keep.to(self.device)).cpu()
        tgt = torch.tensor(ids)
        out, i = [], 0
        for (a, b), r in zip(segments, rows):
            out.append(float(lp[i: i + len(r)].gather(1, tgt[a:b][:, None]).sum()))
            i += len(r)
        return np.array(out)


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


@torch.no_grad()
def naive_constrained(model, ids: list[int], prefix_ends: list[int], candidates: list[list[int]]) -> np.ndarray:
    """The constrained oracle, by definition: for each candidate, walk its tokens; wherever the
    candidates sharing the path so far continue with two or more distinct tokens, run prefix + path
    alone and renormalise the next-token probability among those tokens."""
    dev = next(model.parameters()).device
    out = np.zeros((len(prefix_ends), len(candidates)))
    for i, P in enumerate(prefix_ends):
        for k, c in enumerate(candidates):
            for d in range(len(c)):
                nxt = sorted({o[d] for o in candidates if len(o) > d and o[:d] == c[:d]})
                if len(nxt) < 2:
                    continue
                lp = _forward_logprobs(model, torch.tensor(list(ids[:P]) + list(c[:d]), device=dev), None, None)[-1]
                sub = lp[torch.tensor(nxt, device=dev)].double()
                out[i, k] += float(sub[nxt.index(c[d])] - torch.logsumexp(sub, 0))
    return out
