"""CAREER (Vafa et al., TMLR 2024) reimplemented in plain PyTorch.

Input at year t: the embedding of the previous state (BOS at the first year), scaled by sqrt(d),
plus a sinusoidal position, plus learned embeddings of the covariates of the year being predicted
(calendar year, education) and of the person (gender, race, region). Pre-LayerNorm causal decoder
layers and a final LayerNorm feed the two-stage head: P(stay) = sigmoid(a), otherwise a softmax over
the other states. AdamW with warm-up, dropout, gradient clipping, bf16 on GPU (the original fp16
run diverged), early stopping on validation perplexity over the common events. Optional
pretraining on another panel (`pretrain_data`) before fine-tuning: states of the same name share an
embedding, and `pretrain_states` (a CSV of state,target) sends the other panel's states onto the
target's where the codings differ; a state it does not send keeps an embedding of its own.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from laborllm.data.events import Events
from laborllm.data.panel import CATEGORICAL
from laborllm.data.schemes import MISSING
from laborllm.errors import UserError
from laborllm.files import atomic_write, write_json_atomic
from laborllm.models.base import Model
from laborllm.models.early_stopping import EarlyStopping
from laborllm.settings import fit_differences, setting

log = logging.getLogger(__name__)

COVARIATES = ("year", *CATEGORICAL)
MAX_YEARS = 128  # the longest history CAREER's positional encoding reads (the paper's model: 128 too)
FIRST_YEAR_ONLY = ("education", "region")  # with time_varying=false, held at the first year's value


def two_stage_log_probs(z: torch.Tensor, stay: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """log P(state): P(stay) = sigmoid(stay) on the last observed state, the rest spread by a softmax
    of `z` over the other states; a plain softmax of `z` where no state was observed before."""
    has = last >= 0
    mask = torch.zeros_like(z, dtype=torch.bool)
    mask[has, last[has]] = True
    move = torch.log_softmax(z.masked_fill(mask, -1e9), 1) + nn.functional.logsigmoid(-stay)[:, None]
    out = torch.where(mask, nn.functional.logsigmoid(stay)[:, None].expand_as(z), move)
    return torch.where(has[:, None], out, torch.log_softmax(z, 1))


class CareerNet(nn.Module):
    def __init__(self, n_tokens: int, n_states: int, cov_sizes: dict[str, int], d: int, layers: int, heads: int,
                 ff: int, dropout: float, max_len: int = None):
        max_len = max_len or MAX_YEARS
        super().__init__()
        self.d, self.n_states = d, n_states
        self.tok = nn.Embedding(n_tokens, d)
        self.cov = nn.ModuleDict({k: nn.Embedding(n, d) for k, n in cov_sizes.items()})
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_states + 1, bias=False)  # state logits + the "stay" logit
        self.drop = nn.Dropout(dropout)
        pos = torch.arange(max_len)[:, None] * torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        pe = torch.zeros(max_len, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos)
        self.register_buffer("pe", pe, persistent=False)
        for emb in [self.tok, *self.cov.values()]:
            nn.init.normal_(emb.weight, 0, d ** -0.5)
        nn.init.normal_(self.head.weight, 0, d ** -0.5)

    def forward(self, prev, covs, last, allowed=None):
        """Log-probabilities (B, T, n_states). `last` is the last observed state before each year
        (-1 if none): the state whose "stay" probability the two-stage head models."""
        B, T = prev.shape
        x = self.tok(prev) * math.sqrt(self.d) + self.pe[:T]
        for k, emb in self.cov.items():
            x = x + emb(covs[k])
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=prev.device), 1)
        h = self.norm(self.blocks(self.drop(x), mask=causal, is_causal=True))
        out = self.head(h).float()
        z, a = out[..., :-1], out[..., -1]
        if allowed is not None:  # states that cannot occur in this panel
            z = z.masked_fill(~allowed, float("-inf"))
        return two_stage_log_probs(z.reshape(B * T, -1), a.reshape(-1), last.reshape(-1)).reshape(B, T, -1)


@dataclass
class CareerSettings:
    layers: int = setting(12, "transformer layers (the paper's size: 12)", 1, 128)
    d: int = setting(192, "model width", 1, 65536)
    heads: int = setting(3, "attention heads", 1, 1024)
    ff: int = setting(768, "feed-forward width", 1, 1 << 20)
    dropout: float = setting(0.1, "dropout", 0, 0.99)
    lr: float = setting(1e-3, "peak learning rate (AdamW, warm-up then inverse square root decay)", 1e-9, 10)
    warmup_steps: int | None = setting(None, "warm-up steps (none: 5% of all steps, at most 200)", 1, 10**6)
    weight_decay: float = setting(0.01, "AdamW weight decay", 0, 10)
    batch_size: int = setting(64, "people per optimiser step", 1, 65536)
    epochs: int = setting(60, "at most this many epochs, early stopped on validation", 0, 1000)
    patience: int = setting(3, "stop after this many epochs without a better validation perplexity", 1, 1000)
    clip: float = setting(1.0, "gradient norm clipping", 1e-9, 1e6)
    seed: int = setting(0, "the initial weights and the batch order", 0, 2**32 - 1)
    pretrain_data: str | None = setting(None, "a panel to pretrain on first (embedded name or file)")
    pretrain_epochs: int = setting(10, "epochs of pretraining", 0, 1000)
    pretrain_states: str | None = setting(None, "a CSV of state,target sending the pretraining panel's "
                                                "states onto this panel's")
    min_steps: int = setting(0, "at least this many optimiser steps (more epochs on small panels)", 0, 10**6)
    time_varying: bool = setting(True, "education and region as of each predicted year (false: as of the person's "
                                       "first year, all the fine-tuned LLM's resume states: the information ablation)")


class Career(Model):
    kind = "career"
    Settings = CareerSettings
    data_settings = ("pretrain_data",)
    presets = {
        # at least 300 steps however small the panel (the men panel has 6 batches an epoch), early stopped
        "quick": {"layers": 4, "d": 192, "heads": 3, "ff": 768, "epochs": 3, "min_steps": 300},
        "full": {"layers": 12, "d": 192, "heads": 3, "ff": 768, "epochs": 60},
    }

    def describe(self) -> str:
        c, m = self.config, self.meta
        data = f"pretrained on {c['pretrain_data']}" if c["pretrain_data"] else "survey data only"
        if c["pretrain_data"] and c["pretrain_states"]:
            data += f", states by {Path(c['pretrain_states']).name}"
        return f"{self.name} ({c['layers']} layers, {m.get('fit_epochs', c['epochs'])} epochs, {data})"

    # -- tensors from a panel ---------------------------------------------------------------
    def _vocab(self, panels) -> None:
        self.states_all = list(self.states) + sorted({s for p in panels for s in p.states} - set(self.states))
        self.cov_vocab = {}
        for k in COVARIATES:
            vals = set()
            for p in panels:
                if k in p.frame:
                    vals |= set(p.frame[k].dropna().astype(str))
            self.cov_vocab[k] = sorted(vals)

    def _sequences(self, panel, persons=None):
        """Padded per-person tensors: prev token, covariates, last observed state, target."""
        f = panel.frame if persons is None else panel.frame[panel.frame.person_id.isin(persons)]
        S = len(self.states_all)
        index = {s: i for i, s in enumerate(self.states_all)}
        sid = f.state.map(index).fillna(-1).astype(int).to_numpy()  # Missing -> -1
        pid = f.person_id.to_numpy()
        starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
        lens = np.diff(np.r_[starts, len(f)])
        T = int(lens.max())
        if T > MAX_YEARS:  # refused with the limit named, not a tensor-size error deep in the network
            who = pid[starts[int(np.argmax(lens))]]
            raise UserError(f"CAREER reads at most {MAX_YEARS} years of a career; person {who} has {T} years in "
                            f"{getattr(panel, 'source', 'the panel')} (keep the most recent {MAX_YEARS} years, or use "
                            "another model kind)")
        n = len(starts)
        BOS, MISS = S, S + 1
        prev = np.full((n, T), BOS)
        last = np.full((n, T), -1)
        target = np.full((n, T), -1)
        covs = {k: np.zeros((n, T), dtype=np.int64) for k in self.cov_vocab}
        cov_cols = {}
        for k, vocab in self.cov_vocab.items():
            if k in f:
                m = {v: i + 1 for i, v in enumerate(vocab)}  # 0 = unknown / absent
                cov_cols[k] = f[k].map(lambda v: m.get(str(v), 0) if not pd.isna(v) else 0).to_numpy()
        for j, (s, L) in enumerate(zip(starts, lens)):
            seq = sid[s: s + L]
            target[j, :L] = seq
            prev[j, 1:L] = np.where(seq[:-1] >= 0, seq[:-1], MISS)
            obs = np.where(seq >= 0, seq, -1)
            lo = -1
            for t in range(L):
                last[j, t] = lo
                if obs[t] >= 0:
                    lo = obs[t]
            for k, col in cov_cols.items():
                covs[k][j, :L] = col[s: s + L] if k not in FIRST_YEAR_ONLY or self.settings.time_varying else col[s]
        t = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
        return {"prev": t(prev), "last": t(last), "target": t(target), "covs": {k: t(v) for k, v in covs.items()},
                "lens": t(lens), "person_id": pid[starts]}

    def _net(self):
        c = self.config
        return CareerNet(len(self.states_all) + 2, len(self.states_all), {k: len(v) + 1 for k, v in self.cov_vocab.items()},
                         c["d"], c["layers"], c["heads"], c["ff"], c["dropout"])

    def _pretrain_panel(self, target):
        """The pretraining panel, its states sent onto the target's by the crosswalk if one is given."""
        from laborllm.data.loaders import load_other_panel
        from laborllm.data.panel import read_table
        from laborllm.errors import UserError

        path = self.settings.pretrain_states
        pre = load_other_panel("pretrain_data", self.settings.pretrain_data, target)
        if not path:
            return pre
        x = read_table(path)
        if list(x.columns[:2]) != ["state", "target"]:
            raise UserError(f"{path}: a crosswalk needs the columns state,target")
        for col, known, what in (("target", target.states, "the panel"), ("state", pre.states, "the pretraining panel")):
            unknown = set(x[col].dropna()) - set(known)
            if unknown:  # a typo or a wrong case would otherwise leave a group unmapped, or map onto nothing
                rows = [i + 2 for i, v in enumerate(x[col]) if v in unknown][:5]
                raise UserError(f"{path}: {col} state(s) not in {what}: {', '.join(sorted(map(str, unknown))[:5])} "
                                f"(line(s) {', '.join(map(str, rows))})")
        xwalk = dict(zip(x.state, x.target))
        frame = pre.frame.assign(state=pre.frame.state.map(lambda s: xwalk.get(s, s)))
        return SimpleNamespace(frame=frame, states=sorted(set(frame.state) - {MISSING}))

    def _allowed(self, device):
        a = torch.zeros(len(self.states_all), dtype=torch.bool, device=device)
        a[: len(self.states)] = True
        return a

    # -- training ---------------------------------------------------------------------------
    def fit(self, events: Events) -> "Career":

        torch.manual_seed(self.settings.seed)
        self.states = list(events.states)
        pre = self._pretrain_panel(events.panel) if self.settings.pretrain_data else None
        self._vocab([events.panel] + ([pre] if pre is not None else []))
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = self._net().to(dev)
        stamp = {"settings": self.fit_settings(), "data": events.fingerprint()}
        if pre is not None:
            data = self._sequences(pre)
            self._train(data, None, self.settings.pretrain_epochs, allowed=None, desc="pretrain", stamp=stamp)
        train_ids = events.frame[events.frame.split == "train"].person_id.unique()
        data = self._sequences(events.panel, set(train_ids))
        self._train(data, events.valid, self.settings.epochs, allowed=self._allowed(dev), desc="fit", stamp=stamp)
        self.meta.update(train_persons=len(train_ids),
                         parameters=sum(p.numel() for p in self.net.parameters()), device=dev)
        return self

    # -- checkpoints: each epoch, so a killed fit of the paper's size loses one epoch at most --------
    def _checkpoints(self) -> Path | None:
        return None if self.work_dir is None else self.work_dir.parent / f".{self.work_dir.name}.checkpoints"

    def _resume(self, desc: str, stamp: dict | None, parts: dict) -> dict | None:
        """The training state of this very fit (same settings and events) saved after an epoch, or None."""
        folder = self._checkpoints()
        if folder is None or stamp is None or not (folder / f"{desc}.pt").is_file():
            return None
        try:
            old = json.loads((folder / f"{desc}.json").read_text())
            if old.get("data") != stamp["data"] or fit_differences(old.get("settings", {}), stamp["settings"], self.Settings):
                return None
            state = torch.load(folder / f"{desc}.pt", weights_only=True)  # tensors and numbers only, never code
            for k, obj in parts.items():
                obj.load_state_dict(state[k])
        except Exception as e:  # damaged or of another version: start this stage over, and say so
            log.warning("%s: cannot resume from %s (%s); training from the start", self.name, folder, type(e).__name__)
            return None
        torch.set_rng_state(state["rng"])
        log.info("%s: resuming %s after epoch %d from %s", self.name, desc, state["epoch"], folder)
        return state

    def _save_checkpoint(self, desc: str, stamp: dict | None, parts: dict, **extra) -> None:
        folder = self._checkpoints()
        if folder is None or stamp is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: obj.state_dict() for k, obj in parts.items()} | {"rng": torch.get_rng_state()} | extra
        atomic_write(folder / f"{desc}.pt", lambda tmp: torch.save(state, tmp))
        write_json_atomic(folder / f"{desc}.json", stamp)

    def save_extra(self, folder: Path) -> None:
        if self._checkpoints() is not None:  # saved: the checkpoints are spent
            shutil.rmtree(self._checkpoints(), ignore_errors=True)

    def _train(self, data, valid: Events | None, epochs, allowed, desc, stamp: dict | None = None):
        c, dev = self.config, next(self.net.parameters()).device
        opt = torch.optim.AdamW(self.net.parameters(), lr=c["lr"], betas=(0.9, 0.98), weight_decay=c["weight_decay"])
        n = len(data["prev"])
        steps_per_epoch = -(-n // c["batch_size"])
        epochs = max(epochs, -(-c["min_steps"] // steps_per_epoch))
        # warm-up scales with the run: 5% of its planned steps, at most 200 (the paper's 60-epoch run)
        warm = c["warmup_steps"] or min(200, max(1, round(0.05 * epochs * steps_per_epoch)))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * min(1.0, math.sqrt(warm / (s + 1))))
        bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        stopper, done = EarlyStopping(c["patience"]), 0
        parts = {"net": self.net, "opt": opt, "sched": sched}
        state = self._resume(desc, stamp, parts)
        if state is not None:
            stopper.best, stopper.bad, done = state["best"], state["bad"], state["epoch"]
            stopper.best_state = state.get("best_state") or None
            if state.get("stopped"):
                epochs = done  # it had stopped early: nothing left to train
        bar = tqdm(range(done, epochs), desc=f"career {desc}", unit="epoch", initial=done, total=epochs)
        for _ in bar:
            done += 1
            self.net.train()
            for idx in torch.randperm(n).split(c["batch_size"]):
                b = _batch(data, idx, dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    lp = self.net(b["prev"], b["covs"], b["last"], allowed)
                m = b["target"] >= 0
                loss = -lp[m].gather(-1, b["target"][m][:, None]).mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), c["clip"])
                opt.step()
                sched.step()
            if valid is None:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                self._save_checkpoint(desc, stamp, parts, epoch=done, best=stopper.best, bad=stopper.bad)
                continue
            v = float(valid.target_nll(self.log_probs(valid)).mean())
            bar.set_postfix(valid_ppl=f"{math.exp(v):.3f}")
            stop = stopper.update(v, lambda: copy.deepcopy(self.net.state_dict()))
            self._save_checkpoint(desc, stamp, parts, epoch=done, best=stopper.best, bad=stopper.bad, stopped=stop,
                                  best_state=stopper.best_state or {})
            if stop:
                break
        if stopper.best_state is not None:
            self.net.load_state_dict(stopper.best_state)
            self.meta["valid_perplexity"] = round(math.exp(stopper.best), 4)
        self.meta[f"{desc}_steps"] = steps_per_epoch * done
        self.meta[f"{desc}_epochs"] = done
        self.meta[f"{desc}_warmup_steps"] = warm

    # -- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def log_probs(self, events: Events) -> np.ndarray:
        self.net.eval()
        dev = next(self.net.parameters()).device
        data = self._sequences(events.panel, set(events.frame.person_id))
        row_of = {p: i for i, p in enumerate(data["person_id"])}
        out = np.zeros((len(events), len(self.states)))
        rows = events.frame.person_id.map(row_of).to_numpy()
        pos = events.frame.pos.to_numpy()
        allowed = self._allowed(dev)
        for idx in torch.arange(len(data["prev"])).split(256):
            b = _batch(data, idx, dev)
            lp = self.net(b["prev"], b["covs"], b["last"], allowed)[..., : len(self.states)].double().cpu().numpy()
            sel = np.flatnonzero((rows >= int(idx[0])) & (rows <= int(idx[-1])))
            out[sel] = lp[rows[sel] - int(idx[0]), pos[sel]]
        return out

    # -- persistence ------------------------------------------------------------------------
    def tensors(self):
        return self.net.state_dict()

    def learned(self):
        return {"states_all": self.states_all, "cov_vocab": self.cov_vocab}

    def load_learned(self, learned):
        self.states_all, self.cov_vocab = learned["states_all"], learned["cov_vocab"]

    def load_tensors(self, t):
        self.net = self._net()
        self.net.load_state_dict(t)
        self.net.eval()


def _batch(data, idx, dev):
    T = int(data["lens"][idx].max())
    return {"prev": data["prev"][idx, :T].to(dev), "last": data["last"][idx, :T].to(dev),
            "target": data["target"][idx, :T].to(dev), "covs": {k: v[idx, :T].to(dev) for k, v in data["covs"].items()}}
