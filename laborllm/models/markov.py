"""Markov chains over states: first and second order, with additive smoothing and back-off.

P1(y | b)    = (C(b, y) + a * K * U(y)) / (C(b) + a * K)          backs off to the unigram U
P2(y | a, b) = (C(a, b, y) + beta * T(a, b) * P1(y | b)) / (C(a, b) + beta * T(a, b))
               interpolates with P1 (Witten-Bell: T is the number of distinct next states seen after a, b)
``a`` and ``beta`` are chosen on the validation split. The states are the last observed states
before the event (a Missing year in between is skipped over).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from laborllm.data.events import Events
from laborllm.errors import UserError
from laborllm.models.base import Model
from laborllm.settings import setting
from laborllm.models.features import history_features

ALPHAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
BETAS = (1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass
class MarkovSettings:
    order: int = setting(1, "1: the last state; 2: the last two states, backed off to the first order", 1, 2)
    alpha: float | None = setting(None, "first-order smoothing toward the unigram (none: chosen on validation)",
                                  1e-12, 1e6)
    beta: float | None = setting(None, "second-order weight of the first-order chain (none: chosen on validation)",
                                 1e-12, 1e6)


class Markov(Model):
    kind = "markov"
    Settings = MarkovSettings

    @property
    def name(self) -> str:
        return self.label or f"markov{self.settings.order}"

    def describe(self) -> str:
        how = "add-alpha smoothing" + (", Witten-Bell back-off" if self.settings.order == 2 else "")
        return f"{self.name} (order {self.settings.order}, {how} tuned on valid)"

    def fit(self, events: Events) -> "Markov":
        self.states = list(events.states)
        K = len(self.states)
        tr = history_features(events.train)
        y = events.train.frame.target.to_numpy()
        self.unigram = np.bincount(y, minlength=K) + 0.1
        self.c1 = np.zeros((K, K))
        np.add.at(self.c1, (tr["last_state"].to_numpy(), y), 1)
        ctx2 = tr.last2.to_numpy() * K + tr["last_state"].to_numpy()
        keep = tr.last2.to_numpy() >= 0
        self.c2_keys, self.c2_vals = np.unique(ctx2[keep] * K + y[keep], return_counts=True)
        va, yv = history_features(events.valid), events.valid.frame.target.to_numpy()
        # tuned values are learned state (alpha_, beta_): the settings stay as given, so a refit retunes
        self.alpha_ = self.settings.alpha
        if self.alpha_ is None:
            self.alpha_ = min(ALPHAS, key=lambda a: self._nll(va, yv, a, None))
        self.beta_ = self.settings.beta if self.settings.order == 2 else None
        if self.settings.order == 2 and self.beta_ is None:
            self.beta_ = min(BETAS, key=lambda b: self._nll(va, yv, self.alpha_, b))
        self.meta["valid_perplexity"] = round(float(np.exp(self._nll(va, yv, self.alpha_, self.beta_))), 4)
        return self

    def _nll(self, feats, y, alpha, beta) -> float:
        """Mean negative log-probability of the targets, computed at the targets only (the full
        (events x states) matrix of a million-person panel's validation split would not fit in memory)."""
        K = len(self.states)
        last = feats["last_state"].to_numpy()
        p = self._p1(alpha)[np.where(last >= 0, last, K), y]
        if beta is not None:
            ctx, lo, hi = self._contexts(feats)
            key = np.maximum(ctx, 0) * K + y
            count = np.zeros(len(y))
            if len(self.c2_keys):
                at = np.minimum(np.searchsorted(self.c2_keys, key), len(self.c2_keys) - 1)
                count = np.where((ctx >= 0) & (self.c2_keys[at] == key), self.c2_vals[at], 0)
            total = np.concatenate([[0], np.cumsum(self.c2_vals)])
            p = _witten_bell(count, total[hi] - total[lo], hi - lo, p, beta)
        return float(-np.log(p).mean())

    def _contexts(self, feats):
        """Each event's second-order context (-1: none) and its rows [lo, hi) in the sparse count table."""
        K = len(self.states)
        last, last2 = feats["last_state"].to_numpy(), feats.last2.to_numpy()
        ctx = np.where((last2 >= 0) & (last >= 0), last2 * K + last, -1)
        lo = np.searchsorted(self.c2_keys, np.maximum(ctx, 0) * K)
        hi = np.where(ctx >= 0, np.searchsorted(self.c2_keys, np.maximum(ctx, 0) * K + K), lo)
        return ctx, lo, hi

    def _p1(self, alpha) -> np.ndarray:
        K = len(self.states)
        u = self.unigram / self.unigram.sum()
        p = (self.c1 + alpha * K * u) / (self.c1.sum(1, keepdims=True) + alpha * K)
        return np.vstack([p, u])  # row K: no observed past state

    def _log_probs(self, feats, alpha, beta) -> np.ndarray:
        K = len(self.states)
        last = feats["last_state"].to_numpy()
        p = self._p1(alpha)[np.where(last >= 0, last, K)]
        if beta is not None:  # second order (None while alpha is tuned on the first order alone)
            ctx, lo, hi = self._contexts(feats)  # each context's rows of the sparse (context, next) counts
            counts, distinct = np.zeros_like(p), (hi - lo)[:, None]
            n = hi - lo
            rows = np.repeat(np.arange(len(n)), n)
            at = np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            counts[rows, self.c2_keys[at] % K] = self.c2_vals[at]
            p = _witten_bell(counts, counts.sum(1, keepdims=True), distinct, p, beta)
        return np.log(p)

    def log_probs(self, events: Events) -> np.ndarray:
        return self._log_probs(history_features(events), self.alpha_, self.beta_)

    def tensors(self):
        return {"unigram": torch.tensor(self.unigram), "c1": torch.tensor(self.c1),
                "c2_keys": torch.tensor(self.c2_keys), "c2_vals": torch.tensor(self.c2_vals),
                "alpha": torch.tensor([self.alpha_], dtype=torch.float64),
                "beta": torch.tensor([np.nan if self.beta_ is None else self.beta_], dtype=torch.float64)}

    def load_tensors(self, t):
        self.unigram, self.c1 = t["unigram"].numpy(), t["c1"].numpy()
        self.c2_keys, self.c2_vals = t["c2_keys"].numpy(), t["c2_vals"].numpy()
        K = len(self.states)
        if self.unigram.shape != (K,) or self.c1.shape != (K, K) or self.c2_keys.shape != self.c2_vals.shape:
            raise UserError(f"markov: weights of shapes {tuple(self.unigram.shape)}, {tuple(self.c1.shape)} do not fit "
                            f"the {K} states of model.json")
        if "alpha" not in t:
            raise UserError("markov: the weights file lacks the tuned smoothing (saved by an older laborllm); refit it")
        self.alpha_ = float(t["alpha"][0])
        beta = float(t["beta"][0])
        self.beta_ = None if np.isnan(beta) else beta


def _witten_bell(count, total, distinct, p1, beta):
    """Second-order counts interpolated with the first-order probabilities `p1`, in proportion to the
    number of distinct next states seen after the context (no context seen: `p1`)."""
    return np.where(distinct > 0, (count + beta * distinct * p1) / np.maximum(total + beta * distinct, 1e-12), p1)
