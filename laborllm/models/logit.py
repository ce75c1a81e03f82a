"""Multinomial logit over all states with hand-made features, L2-penalised, fitted in PyTorch.

The design matrix is sparse one-hot: last state, second-to-last state, the state before the current
spell, years in the current state, number of distinct past states, number of past years, age, birth
cohort, education, gender, race, region, calendar year, a year-gap dummy and a previous-year-Missing
dummy. Besides one weight vector over states per feature (the ordinary MNL), every feature also
shifts the utility of staying in the last state (a conditional-logit "stay" term), which is how
economists let tenure and age move the stay rate. Full-batch L-BFGS from the first-order Markov chain as an offset; the intercept is unpenalised.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from laborllm.data.events import Events
from laborllm.data.panel import CATEGORICAL
from laborllm.models.base import Model
from laborllm.models.features import history_features
from laborllm.settings import setting

TENURE_BINS = [0, 1, 2, 3, 4, 6, 9, 1000]
COUNT_BINS = [-1, 0, 1, 2, 3, 5, 8, 1000]


def design(events: Events, vocab: dict[str, list] | None = None):
    """Sparse one-hot design matrix (n, F) and the vocabulary of each block (built on train)."""
    h = history_features(events)
    ev = events.frame
    K = len(events.states)
    blocks = {
        "last": h["last_state"].map(str), "last2": h.last2.map(str), "prev_distinct": h.prev_distinct.map(str),
        "tenure": pd.cut(h.tenure, TENURE_BINS).map(str), "n_distinct": pd.cut(h.n_distinct, COUNT_BINS).map(str),
        "n_past": pd.cut(h.n_past, COUNT_BINS).map(str), "gap": (h.gap > 1).map(str),
        "prev_missing": h.prev_missing.map(str), "year": ev.year.map(str),
    }
    if "age" in ev:
        blocks["age"] = ev.age.clip(upper=45).map(str)
    if "birth_year" in ev:
        blocks["cohort"] = ev.birth_year.map(str)
    for c in CATEGORICAL:
        if c in ev:
            blocks[c] = ev[c].map(str)
    if vocab is None:
        vocab = {k: sorted(v.unique()) for k, v in blocks.items()}
    cols, offset = [], 0
    for k, values in vocab.items():
        index = {v: i for i, v in enumerate(values)}
        col = blocks[k].map(index) if k in blocks else pd.Series(np.nan, index=ev.index)
        cols.append(np.where(col.isna(), -1, col.fillna(-1).astype(int) + offset))  # unseen level: no column
        offset += len(values)
    idx = np.stack(cols, 1)
    rows = np.repeat(np.arange(len(ev)), idx.shape[1])
    flat = idx.ravel()
    keep = flat >= 0
    with warnings.catch_warnings():  # torch's notices about sparse invariant checks
        warnings.simplefilter("ignore")
        x = torch.sparse_coo_tensor(np.stack([rows[keep], flat[keep]]), torch.ones(int(keep.sum())),
                                    (len(ev), offset)).coalesce()
    return x, vocab, torch.as_tensor(h["last_state"].to_numpy().copy()), K


@dataclass
class LogitSettings:
    l2: float | None = setting(None, "L2 penalty (none: 30 / training events, a fixed prior strength "
                                     "whatever the panel size)", 0, 1e6)
    max_iter: int = setting(50, "L-BFGS iterations", 1, 100_000)
    stay_term: bool = setting(True, "a feature for staying in the last state")
    markov_offset: bool = setting(True, "start from (and shrink to) the smoothed first-order Markov chain")
    seed: int = setting(0, "the initial weights", 0, 2**32 - 1)


class Logit(Model):
    kind = "logit"
    Settings = LogitSettings
    presets = {"quick": {"max_iter": 30}, "full": {"max_iter": 50}}

    def describe(self) -> str:
        return f"{self.name} (multinomial logit, history features + stay term, shrunk to the Markov chain)"

    def _logits(self, x, last):
        z = torch.sparse.mm(x, self.W) + self.b + self.offset[last]
        if self.settings.stay_term:
            z = z.index_put((torch.arange(len(last)), last), z[torch.arange(len(last)), last] + torch.sparse.mm(x, self.v).squeeze(1))
        return z

    def fit(self, events: Events) -> "Logit":
        torch.manual_seed(self.settings.seed)
        self.states = list(events.states)
        x, self.vocab, last, K = design(events.train)
        y = torch.as_tensor(events.train.frame.target.to_numpy().copy())
        F = x.shape[1]
        self.W = torch.zeros(F, K, requires_grad=True)
        self.v = torch.zeros(F, 1, requires_grad=True)
        prior = torch.bincount(y, minlength=K).double() + 0.1
        # The smoothed first-order Markov chain is a fixed offset, so the L2 penalty shrinks toward
        # it rather than toward uniform; L-BFGS then converges in few steps.
        counts = torch.zeros(K, K).index_put_((last, y), torch.ones(len(y)), accumulate=True)
        u = prior.float() / prior.sum()
        self.offset = torch.log((counts + 0.1 * K * u) / (counts.sum(1, keepdim=True) + 0.1 * K))
        if not self.settings.markov_offset:  # a plain MNL (used to check against scikit-learn)
            self.offset = torch.zeros(K, K)
        self.b = torch.zeros(K, requires_grad=True)
        params = [self.W, self.b, self.v]
        opt = torch.optim.LBFGS(params, lr=1, max_iter=self.settings.max_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)
        lam = self.settings.l2 if self.settings.l2 is not None else 30.0 / len(y)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self._logits(x, last), y)
            loss = loss + 0.5 * lam * (self.W.pow(2).sum() + self.v.pow(2).sum())
            loss.backward()
            return loss

        opt.step(closure)
        self.meta.update(train_events=len(y), features=F)
        va = self.log_probs(events.valid)
        self.meta["valid_perplexity"] = round(float(np.exp(events.valid.target_nll(va).mean())), 4)
        return self

    @torch.no_grad()
    def log_probs(self, events: Events) -> np.ndarray:
        x, _, last, _ = design(events, self.vocab)
        return torch.log_softmax(self._logits(x, last), 1).numpy().astype(np.float64)

    def tensors(self):
        return {"W": self.W, "b": self.b, "v": self.v, "offset": self.offset}

    def load_tensors(self, t):
        self.W, self.b, self.v, self.offset = t["W"], t["b"], t["v"], t["offset"]
        K = len(self.states)
        if self.W.ndim != 2 or self.W.shape[1] != K or self.b.shape != (K,) or self.offset.shape[-1] != K:
            from laborllm.errors import UserError

            raise UserError(f"logit: weights of shapes {tuple(self.W.shape)}, {tuple(self.b.shape)} do not fit the "
                            f"{K} states of model.json")

    def learned(self):
        return {"vocab": self.vocab}

    def load_learned(self, learned):
        self.vocab = learned["vocab"]
