"""Fine-tuned LLM (LABOR-LLM), behind the common model interface.

`LLM.fit` fine-tunes a causal LM on the resume texts of the training people with the ordinary
next-token objective (Hugging Face Trainer: full or LoRA, bf16 on GPU, warm-up + cosine, validation
loss each epoch, best checkpoint kept, resumable, DDP under torchrun/accelerate). `log_probs`
scores every valid state after each history exactly (laborllm.scoring) and renormalises over the
state set; the mass that fell outside the set is kept and reported. The in-context baseline, the
same model untuned and prompted with example histories, is `laborllm.models.icl`.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from laborllm.data.events import Events, sample_ids
from laborllm.errors import UserError
from laborllm.distributed import is_main_process
from laborllm.models.base import Model
from laborllm.lm.loading import check_base, load_lm, peft_quiet, resolve_base
from laborllm.lm.precision import PRECISIONS, choose_precision
from laborllm.lm.checkpoints import WHOLE, copy_whole, run_stamp, started_precision
from laborllm.settings import setting
from laborllm.scoring import MODES, ExactScorer
from laborllm.scoring.partial import PartialScores, started_value
from laborllm.scoring.shards import score_in_shares
from laborllm.text import ResumeTemplate, SegmentEncoder
from laborllm.text.store import ResumeTokens, resume_tokens
from laborllm.text.templates import VARIANTS

log = logging.getLogger(__name__)
POOL_MODES = ("joint", "sequential")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LLMSettings:
    base: str = setting("smollm2", "the pretrained LM: smollm2 (packaged), a Hugging Face folder or a GGUF file")
    variant: str = setting("titles", "how states are written: occupation titles or codes", choices=VARIANTS)
    birth_year: bool = setting(True, "the resume states the birth year")
    year_covariates: bool = setting(False, "each year's line states that year's education (and region where it "
                                           "changed), as CAREER and the logit see the predicted year")
    lora: bool = setting(False, "train a LoRA adapter instead of every weight")
    lora_r: int = setting(16, "LoRA rank", 1, 4096)
    lora_layers: int | None = setting(None, "LoRA on the top N layers only (none: all; fewer is faster on a CPU)",
                                      1, 1024)
    lora_alpha: float = setting(32, "LoRA scaling", 1e-9, 1e6)
    epochs: int = setting(3, "epochs over the training resumes; several: the best validation epoch is kept", 0, 1000)
    batch_size: int = setting(32, "resumes per optimiser step", 1, 65536)
    lr: float = setting(2e-4, "peak learning rate (warm-up, then cosine decay)", 1e-9, 10)
    warmup_ratio: float = setting(0.05, "share of the steps spent warming up", 0, 1)
    weight_decay: float = setting(0.0, "AdamW weight decay", 0, 10)
    max_steps: int = setting(-1, "stop after this many optimiser steps (-1: the epochs decide)", -1, 10**7)
    max_train_persons: int | None = setting(None, "train on at most this many people, a seeded sample (none: all)",
                                            1, 10**9)
    max_valid_persons: int | None = setting(None, "validate on at most this many people (none: all)", 1, 10**9)
    score_max_tokens: int | None = setting(None, "tokens per scoring pass (none: chosen from the memory)",
                                           64, 1 << 20, role="run")
    seed: int = setting(0, "the adapter's initial weights and the batch order", 0, 2**32 - 1)
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)",
                                           role="run")
    pack_tokens: int = setting(0, "> 0: pack resumes into rows of this many tokens (no padding)", 0, 1 << 20)
    precision: str = setting("auto", "auto: bf16 where it is faster (GPUs; on CPUs, scoring with native bf16 "
                                     "and training with AMX), else fp32", choices=PRECISIONS, role="read")
    scoring: str = setting("renormalised", "exact scoring: renormalised over all states, or constrained to "
                                           "the state texts' branches (laborllm.scoring.exact)", choices=MODES,
                           role="read")
    pool: list | None = setting(None, "other panels whose people join the training, each career in its own words")
    pool_mode: str = setting("joint", "joint: one training; sequential: the pool first, then the target",
                             choices=POOL_MODES)
    pool_persons: int | None = setting(None, "at most this many people of each pooled panel, a seeded sample "
                                             "(none: all)", 1, 10**9)
    checkpoint_minutes: float = setting(10, "a killed fit loses at most this much training", 0, 10_000, role="run")
    patience: int = setting(1, "several epochs: stop after this many without a better validation loss", 1, 1000)
    validate: bool = setting(True, "validation loss at each epoch's end (the model card's curve; with several epochs "
                                   "the best is kept, without validation the last)")


class LLM(Model):
    kind = "llm"
    Settings = LLMSettings
    language_model = True
    runs_lm = True
    data_settings = ("pool",)
    presets = {
        # CPU-sized (the men panel's 382 training people in about 3 minutes on 2 cores): LoRA on the top 10
        # layers at lr 2e-3, one epoch, every training person (the best validation perplexity per
        # CPU-minute of the recipes measured, docs/benchmarks.md); scored constrained, which agrees
        # with the renormalised one to 0.01% for a fine-tuned model (docs/benchmarks.md) at a third of the cost;
        # no validation pass: one epoch has nothing to choose, and it costs half a minute an LLM on 2 cores
        "quick": {"lora": True, "lora_layers": 10, "epochs": 1, "batch_size": 8, "lr": 2e-3, "scoring": "constrained",
                  "validate": False},
        "full": {"lora": False, "epochs": 3, "batch_size": 32, "lr": 2e-4, "pack_tokens": 2048},
    }

    def __init__(self, **config):
        super().__init__(**config)
        check_base(self.settings.base)  # a missing pretrained LM is refused now, not after other models ran

    @property
    def normalization(self) -> str:
        if self.settings.scoring == "constrained":
            return "exact, constrained: next-token probabilities renormalised among the state texts' branches"
        return "exact, renormalised over all states (mass outside the state set reported)"

    @property
    def name(self) -> str:
        return self.label or (f"{self.kind}-{self.settings.variant}")

    def base_label(self) -> str:
        b = self.settings.base
        return "SmolLM2-135M" if b in (None, "", "smollm2") else Path(str(b)).name

    def describe(self) -> str:
        c, m = self.settings, self.meta
        how = (f"LoRA r{c.lora_r}" + (f" on the top {c.lora_layers} layers" if c.lora_layers else "")
               if c.lora else "full fine-tune")
        pool = (f" + {m.get('pool_persons', '?')} pooled from {', '.join(map(str, c.pool))} ({c.pool_mode})"
                if c.pool else "")
        steps = m.get("train_steps", "?")
        if isinstance(steps, int) and isinstance(m.get("pool_stage"), dict):  # sequential: both stages' steps
            steps += m["pool_stage"].get("train_steps", 0)
        return (f"{self.name} ({self.base_label()}, {how}, {c.variant}, {m.get('train_persons', '?')} training people"
                f"{pool}, {steps} steps, {m.get('precision', '?')}, {c.scoring})")

    # -- text -------------------------------------------------------------------------------
    def _encoder(self, panel) -> SegmentEncoder:
        tpl = ResumeTemplate(self.settings.variant, self.settings.birth_year, self.settings.year_covariates)
        return SegmentEncoder(self.tok, tpl, self.states, panel.scheme)

    def _out_dir(self) -> Path:
        return Path(self.work_dir or Path.cwd() / "laborllm-llm")

    def _resume_ids(self, events: Events, split: str, limit: int | None) -> ResumeTokens:
        ids = events.subset(split).sample_persons(limit, self.settings.seed).frame.person_id.unique()
        # people in text order of their ids: the training order does not depend on the id dtype
        return resume_tokens(events.panel, sorted(ids, key=str), self._encoder(events.panel), self._tokens_dir())

    def _tokens_dir(self) -> Path:
        """Beside the model folder, shared by the run's LLMs and kept: a refit reads it."""
        return self._out_dir().parent / ".laborllm-tokens"

    # -- fitting ----------------------------------------------------------------------------
    def _load_base(self):
        self.base_dir = resolve_base(self.settings.base)
        self.lm, self.tok = load_lm(self.base_dir)
        self._score_lm = None

    def fit(self, events: Events) -> "LLM":
        self.states = list(events.states)
        pools = self._pool_panels(events)  # a bad pooled panel is refused before any model is loaded
        self._load_base()
        self._prepare_prompt(events)
        if self.settings.epochs > 0:
            self._train(events, pools)
        self.meta["base_dir"] = str(self.base_dir)
        return self

    def _pool_panels(self, events: Events) -> list:
        from laborllm.data.loaders import load_other_panel

        panels = []
        for name in self.settings.pool or []:
            p = load_other_panel("pool", name, events.panel)
            if self.settings.variant == "codes" and "titles" in (p.scheme.name, events.panel.scheme.name):
                # a titles-scheme panel numbers its states by position: code 2004 would name one
                # occupation in one panel and another in the next
                raise UserError(f"pool {name!r}: variant=codes cannot pool panels coded by their own titles "
                                f"({p.source}: {p.scheme.name}, target: {events.panel.scheme.name}); their numeric "
                                "codes mean different occupations in each panel. Pool with variant=titles")
            panels.append(p)
        return panels

    def _pooled_resumes(self, panels: list) -> list | ResumeTokens:
        """Every person of each pooled panel (or `pool_persons` of them), in that panel's own states
        and words."""
        tpl = ResumeTemplate(self.settings.variant, self.settings.birth_year, self.settings.year_covariates)
        out = []
        for p in panels:
            enc = SegmentEncoder(self.tok, tpl, p.states, p.scheme)
            keep = sample_ids(p.frame.person_id, self.settings.pool_persons, self.settings.seed)
            people = sorted(pd.unique(p.frame.person_id) if keep is None else keep)
            out = out + resume_tokens(p, people, enc, self._tokens_dir())
        return out

    def _prepare_prompt(self, events: Events) -> None:
        """Tokens put before every resume: none for a fine-tuned model (ICL adds examples)."""
        self.prompt_ids: list[int] = []

    def _train(self, events: Events, pools: list) -> None:
        cfg = self.settings
        train = self._resume_ids(events, "train", cfg.max_train_persons)
        valid = self._resume_ids(events, "valid", cfg.max_valid_persons)
        pooled = self._pooled_resumes(pools)
        if cfg.lora:
            from peft import LoraConfig, get_peft_model
            from transformers import set_seed

            set_seed(cfg.seed)  # the adapters' initial weights: same seed, same model

            # lora_layers=N adapts only the top N layers: the backward pass then stops there (faster on a CPU)
            n = self.lm.config.num_hidden_layers
            # (a model with fewer layers than asked for adapts all of them)
            top = {"layers_to_transform": list(range(max(0, n - cfg.lora_layers), n))} if cfg.lora_layers else {}
            with peft_quiet():
                self.lm = get_peft_model(self.lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM", **top))
        out = self._out_dir()
        ckpt = out.parent / f".{out.name}.checkpoints"  # beside the model folder, removed once saved
        self._ckpts = [ckpt]
        world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
        started = started_precision([ckpt, ckpt.with_name(ckpt.name + "-pool")],
                                    run_stamp(self.fit_settings(), events.fingerprint(), None, world), self.Settings)
        bf16, why = choose_precision(cfg.precision, "train", started)
        self.meta["precision_choice"] = {"train": why, "score": choose_precision(cfg.precision, "score")[1]}
        log.info("%s: training in %s, scoring in %s", self.name, self.meta["precision_choice"]["train"],
                    self.meta["precision_choice"]["score"])

        from laborllm.lm.training import run_trainer  # the Hugging Face Trainer: imported when training

        def trainer(resumes, folder, stage=None):
            stamp = run_stamp(self.fit_settings(), events.fingerprint(), bf16, world, stage)
            return run_trainer(self.lm, resumes, valid, folder, stamp, cfg, self.name, bf16)

        if pooled and cfg.pool_mode == "sequential":  # first the pooled careers, then the target's
            self._ckpts.append(ckpt.with_name(ckpt.name + "-pool"))
            self.meta["pool_stage"] = trainer(pooled, self._ckpts[-1], "pool")
            stage = train
        else:
            stage = train + pooled
        self.meta.update(trainer(stage, ckpt), train_persons=len(train), valid_persons=len(valid),
                         pool_persons=len(pooled), subset="yes" if cfg.max_train_persons else "no")
        self.lm.eval()

    def resumed_seconds(self) -> float:
        return sum((stage or {}).get("train_seconds_earlier") or 0 for stage in (self.meta, self.meta.get("pool_stage")))

    # -- persistence ------------------------------------------------------------------------
    def save_extra(self, folder: Path) -> None:
        if not is_main_process():
            return
        if self.settings.epochs > 0:
            # the adapter is the artefact of record; a full fine-tune saves the whole model. Both as the
            # Trainer saved them at the end of training (gathered from the shards under FSDP)
            trained = getattr(self, "_ckpts", [Path("-")])[0] / WHOLE
            if trained.is_dir():
                whole = folder / ("adapter" if self.settings.lora else "hf")
                copy_whole(trained, whole)
            else:  # trained by another process and loaded here, LoRA merged: the whole model
                whole = folder / "hf"
                self.lm.save_pretrained(whole)
            if whole.name == "hf":
                self.tok.save_pretrained(whole)
        for ckpt in getattr(self, "_ckpts", []):
            shutil.rmtree(ckpt, ignore_errors=True)

    def tensors(self):
        return {"prompt_ids": torch.tensor(self.prompt_ids or [-1])}

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "LLM":
        m = super().from_folder(folder, meta)
        if (folder / "hf").exists():
            m.lm, m.tok = load_lm(folder / "hf")
        else:
            m.base_dir = resolve_base(m.settings.base)
            m.lm, m.tok = load_lm(m.base_dir)
            if (folder / "adapter").exists():
                from peft import PeftModel

                cls._check_adapter(folder / "adapter")
                with peft_quiet():
                    m.lm = PeftModel.from_pretrained(m.lm, folder / "adapter").merge_and_unload()
        m.lm.eval()
        return m

    @staticmethod
    def _check_adapter(folder: Path) -> None:
        """Adapters load from safetensors only: a pickled adapter_model.bin is refused, never read."""
        if not (folder / "adapter_model.safetensors").is_file():
            raise UserError(f"{folder}: no adapter_model.safetensors (pickled .bin adapters are never loaded)")

    def load_tensors(self, t):
        ids = t["prompt_ids"].tolist()
        self.prompt_ids = [] if ids == [-1] else ids

    # -- scoring ----------------------------------------------------------------------------
    def check_length(self, n_tokens: int, person) -> None:
        """A resume longer than the LM reads is refused with the limit named (not an index error)."""
        limit = getattr(self.lm.config, "max_position_embeddings", None)
        if limit and n_tokens > limit:
            raise UserError(f"{self.name}: person {person}'s resume is {n_tokens} tokens with the state scored, over the "
                            f"{limit} the language model reads; keep the most recent years of the history")

    def forget_reading(self) -> None:
        self._score_lm = None  # cast and merged for the old precision

    def _scoring_lm(self, bf16: bool):
        """The LM the scorer reads: LoRA merged (faster) and cast to bf16 where asked, on a copy, so
        the fitted LM, which `save` writes, stays as trained."""
        if getattr(self, "_score_lm", None) is None or self._score_lm[0] != bf16:
            lm = self.lm
            if hasattr(lm, "merge_and_unload") or bf16:
                lm = copy.deepcopy(lm)
                lm = lm.merge_and_unload() if hasattr(lm, "merge_and_unload") else lm
                lm = lm.to(torch.bfloat16) if bf16 else lm
            self._score_lm = (bf16, lm.eval())
        return self._score_lm[1]

    def _scoring(self, events: Events, desc: str, done: np.ndarray | None = None, bf16: bool | None = None):
        """The encoder, an exact scorer over the state texts, and per person of `events` not yet
        `done`: the event rows, the token ids (prompt + resume) and the start of each year's state text.
        `bf16`: the scoring precision (default: the `precision` setting's choice on this machine)."""
        enc = self._encoder(events.panel)
        lm = self._scoring_lm(choose_precision(self.settings.precision)[0] if bf16 is None else bf16)
        scorer = ExactScorer(lm, enc.candidates, max_tokens=self.settings.score_max_tokens, mode=self.settings.scoring)
        f, ev = events.panel.frame, events.frame
        groups = ev.groupby("person_id").indices
        if done is not None and done.any():
            groups = {p: i for p, i in groups.items() if not done[i].all()}
        pos = ev.pos.to_numpy()

        def people():
            start = 0 if done is None else int(done.sum())
            with tqdm(total=len(ev), initial=start, desc=desc, unit="event", disable=not is_main_process()) as bar:
                for pid, rows in f[f.person_id.isin(groups.keys())].groupby("person_id"):
                    idx = groups[pid]
                    ids, starts = enc.person(rows)
                    self.check_length(len(self.prompt_ids) + len(ids) + max(map(len, enc.candidates)), pid)
                    yield idx, self.prompt_ids + ids, [len(self.prompt_ids) + int(starts[p]) for p in pos[idx]]
                    bar.update(len(idx))

        return enc, scorer, people()

    def raw_log_probs(self, events: Events, partial: Path | None = None) -> np.ndarray:
        """The scorer's log-probabilities for every event and state: unrenormalised log P(state text |
        history) in the renormalised mode, already normalised in the constrained mode. With `partial`,
        finished people are written there as scoring goes, and a rerun continues from them. Under
        torchrun, each process scores a share of the people (its own `partial`) and all get the whole."""
        return self._scores(events, partial)[0]

    def _scores(self, events: Events, partial: Path | None = None) -> tuple[np.ndarray, dict]:
        """`raw_log_probs` and how the scoring went (precision, seconds of earlier pieces)."""
        return score_in_shares(events, self._score_people, partial)

    def _score_people(self, events: Events, partial: Path | None = None) -> tuple[np.ndarray, dict]:
        stamp = {"model": self.fingerprint(), "events": events.fingerprint(), "mode": self.settings.scoring}
        # scoring continued on another machine keeps the precision its finished people were scored in
        stamp["bf16"] = choose_precision(self.settings.precision, "score", started_value(partial, stamp, "bf16"))[0]
        parts = PartialScores(partial, stamp, (len(events), len(self.states)), label=f"scoring {self.name}")
        if parts.n_done:
            log.info("%s: %d of %d events already scored in %s (%s); continuing", self.name, parts.n_done,
                        len(events), partial, "bf16" if stamp["bf16"] else "fp32")
        _, scorer, people = self._scoring(events, f"scoring {self.name}", parts.done, stamp["bf16"])
        for idx, ids, ends in people:
            parts.add(idx, scorer.score(ids, ends))
        parts.flush()
        figures = {"score_precision": "bf16" if stamp["bf16"] else "fp32"}
        if parts.earlier_seconds:  # scored in pieces: the time of the pieces before this one
            figures["score_seconds_earlier"] = round(parts.earlier_seconds, 1)
        return parts.out, figures

    def true_log_probs(self, events: Events) -> np.ndarray:
        """The cheap unnormalised mode: log P(observed state text | history) only, every event of a
        person from one forward pass; mass on invalid text is not renormalised away."""
        enc, scorer, people = self._scoring(events, f"scoring {self.name} (observed state only)")
        y = events.frame.target.to_numpy()
        out = np.zeros(len(events))
        for idx, ids, ends in people:
            out[idx] = scorer.true_only(ids, [(a, a + len(enc.candidates[k])) for a, k in zip(ends, y[idx])])
        return out

    def log_probs(self, events: Events) -> np.ndarray:
        return self.log_probs_and_figures(events)[0]

    def log_probs_and_figures(self, events: Events, partial: Path | None = None) -> tuple[np.ndarray, dict]:
        """Renormalised: the figures say how much mass the LM put on the states' texts. `partial`: a
        folder where scoring keeps finished people, so an interrupted scoring resumes."""
        raw, figures = self._scores(events, partial)
        if self.settings.scoring == "constrained":
            return raw, figures
        mass = np.logaddexp.reduce(raw, axis=1)
        return raw - mass[:, None], figures | {
            "unnormalised_perplexity": float(np.exp(events.target_nll(raw).mean())),
            "valid_mass_mean": float(np.exp(mass).mean()),
            "valid_mass_min": float(np.exp(mass).min()),
        }
