"""An occupation model on a fine-tuned LLM (the paper's later route: the LLM as an input to an
occupation model). The LLM, frozen, reads each person's resume once; its last hidden state at the
``YEAR:`` that opens each predicted year (where the state's text would start) goes, with that year's
covariates as CAREER gets them (education, region, ...), into a read-out over the panel's states,
trained with cross-entropy on the training events and early-stopped on validation.

The distribution is exact and normalised by construction, and a person's events cost one forward
pass, not a trie of candidates per event. `head=two-stage` first says stay or move, then where to
(CAREER's head): staying is where the LLM's own next-token distribution errs most.
Features are computed in pieces (kept beside the model folder, like an LLM's scores), so a killed
fit or scoring resumes; the head trains in seconds on them.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from laborllm.data.events import Events
from laborllm.data.panel import CATEGORICAL
from laborllm.errors import UserError
from laborllm.distributed import is_main_process
from laborllm.models.base import Model
from laborllm.models.career import two_stage_log_probs
from laborllm.models.early_stopping import EarlyStopping
from laborllm.models.folder import read_model_json
from laborllm.models.llm import LLM
from laborllm.lm.precision import PRECISIONS, choose_precision
from laborllm.models.packaged import packaged_folder
from laborllm.settings import setting
from laborllm.scoring.partial import PartialScores

log = logging.getLogger(__name__)
HEADS = ("softmax", "two-stage")
LM_FOLDER = "lm"  # the frozen LLM's folder inside the head's, so the head travels whole


@dataclass
class LMHeadSettings:
    lm: str = setting("nlsy97-codes", "the fine-tuned LLM whose hidden states the head reads (frozen): a model "
                                      "folder of kind llm, or a packaged model name", role="source")
    head: str = setting("two-stage", "softmax over the states, or two-stage: stay or move first, then where",
                        choices=HEADS)
    covariates: bool = setting(True, "the predicted year's covariates (education, gender, race, region), as "
                                     "CAREER and the logit get them")
    hidden: int = setting(0, "a hidden layer of this width before the read-out (0: linear)", 0, 65536)
    dropout: float = setting(0.1, "dropout on the features while training", 0, 0.9)
    epochs: int = setting(100, "at most this many passes over the training events", 1, 10_000)
    lr: float = setting(1e-3, "Adam's learning rate", 1e-9, 10)
    batch_size: int = setting(512, "events per optimiser step", 1, 1 << 20)
    weight_decay: float = setting(1e-4, "AdamW weight decay", 0, 10)
    patience: int = setting(5, "stop after this many epochs without a better validation loss", 1, 1000)
    max_train_persons: int | None = setting(None, "features of at most this many training people, a seeded "
                                                  "sample (none: all)", 1, 10**9)
    precision: str = setting("auto", "the LLM's precision for the features (auto: bf16 where the CPU or GPU has "
                                     "it natively); a fitted head reads in the precision it was trained on",
                             choices=PRECISIONS)
    seed: int = setting(0, "the head's initial weights, dropout and batch order", 0, 2**32 - 1)


class HeadNet(nn.Module):
    """Features and covariates -> log-probabilities over the states (softmax or two-stage)."""

    def __init__(self, d_in: int, n_states: int, hidden: int, dropout: float, two_stage: bool):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU()) if hidden else nn.Identity()
        self.out = nn.Linear(hidden or d_in, n_states + int(two_stage))
        self.two_stage = two_stage

    def forward(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        z = self.out(self.body(self.drop(x)))
        if not self.two_stage:
            return torch.log_softmax(z, 1)
        return two_stage_log_probs(z[:, :-1], z[:, -1], last)


class LMHead(Model):
    kind = "llm-head"
    Settings = LMHeadSettings
    runs_lm = True
    presets = {"quick": {}, "full": {}}

    def __init__(self, **config):
        super().__init__(**config)
        self._llm = None
        self.lm_folder: Path | None = None  # set when loaded from a folder that carries its LLM

    def describe(self) -> str:
        c = self.config
        cov = "with the year's covariates" if c["covariates"] else "no covariates"
        body = f"hidden {c['hidden']}" if c["hidden"] else "linear"
        return (f"{self.name} ({c['head']} head, {body}, {cov}, on the frozen {self.meta.get('lm_name', c['lm'])}; "
                f"{self.meta.get('train_persons', '?')} training people, {self.meta.get('fit_epochs', '?')} epochs)")

    # -- the frozen LLM ------------------------------------------------------------------------
    def _lm_folder(self) -> Path:
        return self.lm_folder or packaged_folder(self.settings.lm) or Path(self.settings.lm)

    def _lm_meta(self) -> dict:
        folder = self._lm_folder()
        meta = read_model_json(folder)
        if meta is None:
            raise UserError(f"lm {self.settings.lm!r}: not a laborllm model folder or packaged model (no model.json)")
        if meta.get("kind") != "llm":
            raise UserError(f"lm {self.settings.lm!r}: a {meta.get('kind')} model; the head reads a fine-tuned LLM")
        return meta

    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = LLM.from_folder(self._lm_folder(), self._lm_meta())
        return self._llm

    def identity_inputs(self) -> dict:
        """The frozen LLM by its saved id, whatever name or path reaches it."""
        return {"lm": self._lm_meta().get("model_id")}

    def _bf16(self) -> bool:
        trained = self.meta.get("feature_precision")  # a fitted head reads features as it was trained on
        return choose_precision(self.settings.precision, "score", None if trained is None else trained == "bf16")[0]

    def features(self, events: Events, partial: Path | None = None) -> np.ndarray:
        """(n_events, hidden size): the LLM's last hidden state where each event's state text begins.
        With `partial`, finished people are kept there and a rerun continues from them."""
        llm, bf16 = self.llm(), self._bf16()
        lm = llm._scoring_lm(bf16)
        decoder = lm.get_decoder()
        d = lm.config.hidden_size
        stamp = {"lm": llm.fingerprint(), "events": events.fingerprint(), "bf16": bf16, "what": "features"}
        parts = PartialScores(partial, stamp, (len(events), d), label=f"features of {self.name}", dtype=np.float32)
        enc = llm._encoder(events.panel)
        f, ev = events.panel.frame, events.frame
        groups = ev.groupby("person_id").indices
        todo = [(pid, rows) for pid, rows in f[f.person_id.isin(groups.keys())].groupby("person_id")
                if not parts.done[groups[pid]].all()]
        people = [(groups[pid], *enc.person(rows)) for pid, rows in todo]
        for (pid, _), (_, ids, _) in zip(todo, people):
            llm.check_length(len(ids), pid)
        people.sort(key=lambda p: len(p[1]))  # similar lengths share a batch: little padding
        pos = ev.pos.to_numpy()
        batch = 8
        with torch.inference_mode(), tqdm(total=len(ev), initial=parts.n_done, desc=f"features {self.name}",
                                          unit="event", disable=not is_main_process()) as bar:
            for i in range(0, len(people), batch):
                chunk = people[i:i + batch]
                width = max(len(ids) for _, ids, _ in chunk)
                x = torch.zeros(len(chunk), width, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for j, (_, ids, _) in enumerate(chunk):
                    x[j, :len(ids)], mask[j, :len(ids)] = torch.tensor(ids), 1
                h = decoder(input_ids=x.to(lm.device), attention_mask=mask.to(lm.device)).last_hidden_state
                for j, (idx, _, starts) in enumerate(chunk):
                    at = torch.as_tensor(starts[pos[idx]] - 1)  # the last token of "YEAR:"
                    parts.add(idx, h[j, at.to(h.device)].float().cpu().numpy())
                    bar.update(len(idx))
        parts.flush()
        return parts.out

    # -- covariates --------------------------------------------------------------------------
    def _covariates(self, events: Events) -> np.ndarray:
        """One-hot of each covariate of the predicted year (a value unseen in training: all zeros)."""
        if not self.settings.covariates:
            return np.zeros((len(events), 0), dtype=np.float32)
        cols = []
        for c, levels in self.cov_levels.items():
            vals = events.frame[c].astype("string") if c in events.frame else None
            onehot = np.zeros((len(events), len(levels)), dtype=np.float32)
            if vals is not None:
                index = {v: i for i, v in enumerate(levels)}
                k = vals.map(index).astype("Float64").fillna(-1).astype(int).to_numpy()
                onehot[np.flatnonzero(k >= 0), k[k >= 0]] = 1
            cols.append(onehot)
        return np.concatenate(cols, 1) if cols else np.zeros((len(events), 0), dtype=np.float32)

    def _inputs(self, events: Events, partial: Path | None = None):
        x = np.concatenate([self.features(events, partial), self._covariates(events)], 1)
        return torch.from_numpy(x), torch.as_tensor(events.frame.last_state.to_numpy().copy())

    # -- fitting -----------------------------------------------------------------------------
    def _features_dir(self, split: str, persons: int | None = None) -> Path | None:
        """Beside the model folder, shared by every head on the same LLM and people (the variants
        compared on validation read the same features)."""
        if self.work_dir is None:
            return None
        return self.work_dir.parent / ".laborllm-features" / f"{self.llm().fingerprint()}-{split}-{persons or 'all'}"

    def fit(self, events: Events) -> "LMHead":
        c = self.config
        self.states = list(events.states)
        llm = self.llm()
        if list(llm.states) != self.states:
            raise UserError(f"{c['lm']}: its states differ from the panel's ({len(llm.states)} vs {len(self.states)})")
        if llm.meta.get("events_fingerprint") != events.fingerprint():
            raise UserError(f"{c['lm']}: fitted on other data or another split; its training people could be this "
                            "panel's validation or test people. Fit the head on the data and seed the LLM was fitted on")
        self.meta["feature_precision"] = "bf16" if self._bf16() else "fp32"
        self.meta["lm_name"] = llm.name
        train = events.train.sample_persons(c["max_train_persons"], c["seed"])
        self.cov_levels = {k: sorted(train.frame[k].dropna().astype(str).unique()) for k in CATEGORICAL
                           if k in train.frame} if c["covariates"] else {}
        xt, lt = self._inputs(train, self._features_dir("train", c["max_train_persons"]))
        xv, lv = self._inputs(events.valid, self._features_dir("valid"))
        yt = torch.as_tensor(train.frame.target.to_numpy().copy())
        yv = torch.as_tensor(events.valid.frame.target.to_numpy().copy())
        torch.manual_seed(c["seed"])
        self._d_in = xt.shape[1]
        self.net = HeadNet(xt.shape[1], len(self.states), c["hidden"], c["dropout"], c["head"] == "two-stage")
        opt = torch.optim.AdamW(self.net.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        stop, curve = EarlyStopping(c["patience"]), []
        gen = torch.Generator().manual_seed(c["seed"])
        for epoch in range(c["epochs"]):
            self.net.train()
            for b in torch.randperm(len(yt), generator=gen).split(c["batch_size"]):
                loss = nn.functional.nll_loss(self.net(xt[b], lt[b]), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.net.eval()
            with torch.no_grad():
                v = float(nn.functional.nll_loss(self.net(xv, lv), yv))
            curve.append(v)
            if stop.update(v, lambda: {k: t.clone() for k, t in self.net.state_dict().items()}):
                break
        self.net.load_state_dict(stop.best_state)
        self.net.eval()
        self.meta.update(valid_curve=[{"epoch": e + 1, "eval_loss": round(v, 5)} for e, v in enumerate(curve)],
                         fit_epochs=len(curve), valid_perplexity=round(float(np.exp(stop.best)), 4),
                         train_persons=int(train.frame.person_id.nunique()), train_events=len(yt))
        log.info("%s: validation perplexity %.3f (epoch %d of %d)", self.name, np.exp(stop.best),
                    int(np.argmin(curve)) + 1, len(curve))
        return self

    # -- scoring -----------------------------------------------------------------------------
    def log_probs(self, events: Events) -> np.ndarray:
        return self.log_probs_and_figures(events)[0]

    def log_probs_and_figures(self, events: Events, partial: Path | None = None) -> tuple[np.ndarray, dict]:
        if list(events.states) != self.states:
            raise UserError(f"{self.name}: the events' states differ from the model's")
        x, last = self._inputs(events, partial)
        with torch.no_grad():
            return self.net(x, last).double().numpy(), {"score_precision": self.meta["feature_precision"]}

    # -- persistence -------------------------------------------------------------------------
    def tensors(self):
        return dict(self.net.state_dict())

    def learned(self) -> dict:
        return {"cov_levels": self.cov_levels, "d_in": self._d_in}

    def load_learned(self, learned: dict) -> None:
        self.cov_levels, self._d_in = learned["cov_levels"], learned["d_in"]

    def load_tensors(self, t) -> None:
        c = self.config
        self.net = HeadNet(self._d_in, len(self.states), c["hidden"], 0.0, c["head"] == "two-stage")
        self.net.load_state_dict(t)
        self.net.eval()

    def save_extra(self, folder: Path) -> None:
        """The frozen LLM's folder (its adapter: a few MB) inside the head's, so the head loads anywhere."""
        src = self._lm_folder()
        keep = ("model.json", "weights.safetensors", "README.md", "adapter", "hf")
        shutil.copytree(src, folder / LM_FOLDER, ignore=lambda d, names: [n for n in names if Path(d) == src
                                                                          and n not in keep])

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "LMHead":
        m = super().from_folder(folder, meta)
        if (folder / LM_FOLDER / "model.json").is_file():
            m.lm_folder = folder / LM_FOLDER
        return m
