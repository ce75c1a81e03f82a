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
  forward positions (about 100 instead of 1,759 for the 334 NLSY97 titles).

Fast path (packing + a trie): the person's resume is run once; the root's children are read off the
output at the prefix's last position. The trie nodes an event needs are packed after the resume
text in the same sequence, each attending to the event's prefix and to its own trie ancestors
through a 4-D attention mask, with position ids continuing from the prefix. One forward pass thus
scores all candidates of several events of a person. The keys and values of a long prefix that a pass
shares with the one before (the in-context baseline's prompt before every resume; a simulated
career's observed years, the same in every sampled future; a person's resume in a second pass) are
reused instead of run again. `naive_scores` and `naive_constrained` are the oracles: one forward pass
per (event, candidate) or per (event, branching node).
"""
from __future__ import annotations

import copy
import inspect
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
    """fp32 logits of the rows `keep` (all rows when None): only they go through the LM head. `past`:
    the keys and values of the tokens before `ids` (the pass appends to it: give a copy)."""
    kwargs = {"input_ids": ids[None], "use_cache": False}
    if past is not None:
        kwargs |= {_cache_arg(model): past, "use_cache": True}
    if mask is not None:
        neg = torch.finfo(torch.float32).min
        kwargs["attention_mask"] = torch.where(mask, 0.0, neg)[None, None].to(_dtype(model))
        kwargs["position_ids"] = pos[None]
    if keep is not None:
        kwargs["logits_to_keep"] = keep
    return model(**kwargs).logits[0].float()


def _forward_logprobs(model, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    return torch.log_softmax(_forward_logits(model, ids, mask, pos, keep), -1)


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _cache_arg(model) -> str:
    """The forward argument taking a KV cache: `cache` since transformers 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def _prefix_cache(model, tokens: np.ndarray):
    """The keys and values of these tokens, filled in place by one forward pass."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    dev = next(model.parameters()).device
    model(input_ids=torch.as_tensor(tokens, device=dev)[None], use_cache=True, **{_cache_arg(model): cache})
    return cache


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class ExactScorer:
    """Log P(candidate | prefix) for all candidates at every requested prefix of a resume: raw
    (mode "renormalised", to be renormalised by the caller) or already normalised ("constrained")."""

    MIN_REUSE = 32  # a shorter shared prefix is run again (its copy would cost about what it saves)

    def __init__(self, model, candidates: list[list[int]], max_tokens: int | None = None, mode: str = "renormalised"):
        """max_tokens bounds one packed sequence: as many events of a person as fit share a pass
        (at least one). The default, 2048 on a CPU and 8192 on a GPU, packs the small tries of
        coarse panels and the constrained mode, and one event per pass for a large renormalised
        trie, where the dense mask of long sequences costs more than it saves on a CPU."""
        if mode not in MODES:
            raise ValueError(f"unknown scoring mode {mode!r}; choose {' or '.join(MODES)}")
        self.model, self.trie, self.mode = model, CandidateTrie(candidates), mode
        self.device = next(model.parameters()).device
        self.max_tokens = max_tokens or (8192 if self.device.type == "cuda" else 2048)
        self.layout = self.trie.layout(mode)
        self._last = None  # the previous pass's tokens before its trie nodes
        self._kept = None  # (tokens, their keys and values): a prefix shared by passes, run once

    @torch.no_grad()
    def score(self, ids: list[int], prefix_ends: list[int]) -> np.ndarray:
        """(len(prefix_ends), K) log-probabilities; prefix_ends[i] = number of prefix tokens."""
        out = np.zeros((len(prefix_ends), self.trie.k))
        if not len(prefix_ends):
            return out
        lay, dev = self.layout, self.device
        per_chunk = max(1, (self.max_tokens - max(prefix_ends)) // max(lay.n, 1))
        order = np.argsort(prefix_ends)
        for c0 in range(0, len(order), per_chunk):
            chunk = order[c0: c0 + per_chunk]
            L = int(max(prefix_ends[i] for i in chunk))
            n_tot = L + len(chunk) * lay.n
            seq = torch.empty(n_tot, dtype=torch.long)
            seq[:L] = torch.tensor(ids[:L])
            pos = torch.empty(n_tot, dtype=torch.long)
            pos[:L] = torch.arange(L)
            mask = torch.zeros(n_tot, n_tot, dtype=torch.bool)
            mask[:L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
            keep = []
            for b, e in enumerate(chunk):
                P, s = int(prefix_ends[e]), L + b * lay.n
                seq[s: s + lay.n] = lay.token
                pos[s: s + lay.n] = P + lay.depth - 1
                mask[s: s + lay.n, :P] = True
                mask[s: s + lay.n, s: s + lay.n] = lay.ancestors
                keep += [P - 1] + (s + lay.kept).tolist()  # event b's block: root row, then read nodes
            # the earliest event's prefix end must be run: its last position gives the first token's scores
            S, past = self._reuse(seq[:L].numpy(), min(int(prefix_ends[e]) for e in chunk) - 1)
            keep = torch.tensor(keep, device=dev) - S
            logits = _forward_logits(self.model, seq[S:].to(dev), mask[S:].to(dev), pos[S:].to(dev), keep, past)
            block = 1 + len(lay.kept)
            for b, e in enumerate(chunk):
                out[e] = self._readout(logits[b * block: (b + 1) * block].cpu()).numpy()
        return out

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
        rows = torch.where(t.edge_source == ROOT, 0, 1 + lay.kslot[t.edge_source.clamp(min=0)])
        v = logits[rows, t.edge_token].double()
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
