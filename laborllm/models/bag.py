"""CAREER's bag-of-jobs baseline (Vafa et al.): the last state, the mean of all past states and
the static covariates, each read out linearly into next-state logits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from laborllm.data.events import Events
from laborllm.errors import UserError
from laborllm.models.base import Model
from laborllm.models.early_stopping import EarlyStopping
from laborllm.settings import setting


@dataclass
class BagSettings:
    epochs: int = setting(30, "at most this many passes over the training events", 0, 1000)
    lr: float = setting(0.03, "Adam's learning rate", 1e-9, 10)
    batch_size: int = setting(1024, "events per optimiser step", 1, 65536)
    weight_decay: float = setting(1e-5, "Adam's L2 penalty", 0, 10)
    patience: int = setting(3, "stop after this many epochs without a better validation perplexity", 1, 1000)
    seed: int = setting(0, "the initial weights and the batch order", 0, 2**32 - 1)


class BagOfJobs(Model):
    """CAREER's bag-of-jobs baseline: logits are a read-out of the last state plus a read-out of
    the mean of all past states (order is ignored except for the last one) plus static covariates,
    fitted by Adam with early stopping on validation perplexity."""

    kind = "bag"
    Settings = BagSettings

    def _inputs(self, events: Events):
        f = events.panel.frame
        K = len(self.states)
        # running count of each past observed state, per person, at every panel row
        onehot = torch.zeros(len(f), K)
        sid = torch.as_tensor(f.state_id.to_numpy())
        obs = sid >= 0
        onehot[torch.nonzero(obs).squeeze(1), sid[obs]] = 1
        rows = torch.as_tensor(events.frame.row.to_numpy())
        starts = f.groupby("person_id").cumcount().to_numpy()
        cum = torch.cumsum(onehot, 0)
        start_row = torch.as_tensor(np.arange(len(f)) - starts)
        before = cum[rows - 1] - torch.where((start_row[rows] > 0).unsqueeze(1), cum[(start_row[rows] - 1).clamp(min=0)], torch.zeros(K))
        mean = before / before.sum(1, keepdim=True).clamp(min=1)
        last = torch.as_tensor(events.frame["last_state"].to_numpy()).clamp(min=0)
        return last, mean

    def _logits(self, last, mean):
        return (self.W_last[last] + mean @ self.W_bag + self.b).clamp(-10, 10)

    def fit(self, events: Events) -> "BagOfJobs":
        torch.manual_seed(self.settings.seed)
        self.states = list(events.states)
        K = len(self.states)
        self.W_last, self.W_bag, self.b = (torch.zeros(K, K, requires_grad=True), torch.zeros(K, K, requires_grad=True),
                                           torch.zeros(K, requires_grad=True))
        last, mean = self._inputs(events.train)
        y = torch.as_tensor(events.train.frame.target.to_numpy())
        with torch.no_grad():  # start at the unigram distribution
            self.b += torch.log((torch.bincount(y, minlength=K) + 0.1) / (len(y) + 0.1 * K))
        vl, vm = self._inputs(events.valid)
        vy = torch.as_tensor(events.valid.frame.target.to_numpy())
        opt = torch.optim.AdamW([self.W_last, self.W_bag, self.b], lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        weights = lambda: [t.detach().clone() for t in (self.W_last, self.W_bag, self.b)]  # noqa: E731
        valid_loss = lambda: torch.nn.functional.cross_entropy(self._logits(vl, vm), vy).item()  # noqa: E731
        stop = EarlyStopping(self.settings.patience)
        with torch.no_grad():  # the unigram start is a candidate too (and the model when epochs=0)
            stop.update(valid_loss(), weights)
        for _ in range(self.settings.epochs):
            for idx in torch.randperm(len(y)).split(self.settings.batch_size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(self._logits(last[idx], mean[idx]), y[idx]).backward()
                opt.step()
            with torch.no_grad():
                if stop.update(valid_loss(), weights):
                    break
        self.W_last, self.W_bag, self.b = stop.best_state
        self.meta["valid_perplexity"] = round(float(np.exp(stop.best)), 4)
        return self

    @torch.no_grad()
    def log_probs(self, events: Events) -> np.ndarray:
        return torch.log_softmax(self._logits(*self._inputs(events)), 1).double().numpy()

    def tensors(self):
        return {"W_last": self.W_last, "W_bag": self.W_bag, "b": self.b}

    def load_tensors(self, t):
        self.W_last, self.W_bag, self.b = t["W_last"], t["W_bag"], t["b"]
        K = len(self.states)
        if self.W_last.shape != (K, K) or self.W_bag.shape != (K, K) or self.b.shape != (K,):
            raise UserError(f"bag: weights of shapes {tuple(self.W_last.shape)}, {tuple(self.W_bag.shape)}, "
                            f"{tuple(self.b.shape)} do not fit the {K} states of model.json")
