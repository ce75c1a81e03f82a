"""A mixture of fitted models: P(state) = sum_k w_k P_k(state), the weights chosen on validation
events only (maximum likelihood by EM, a concave problem: one optimum). Two LLMs that read the same
career in different words (titles, codes) err in different places, so their mixture can beat both.

The members are fitted model folders (or packaged models) of the same panel and split; the mixture
never refits them. Their scores are read from where a run or `evaluate` already keeps them when the
same model scored the same events, otherwise computed (in resumable pieces for an LLM) and kept.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from laborllm.data.events import Events
from laborllm.errors import UserError
from laborllm.models.base import Model
from laborllm.models.folder import read_model_json
from laborllm.models.packaged import packaged_folder
from laborllm.models.score_cache import kept_log_probs, model_log_probs
from laborllm.settings import setting

log = logging.getLogger(__name__)
MEMBERS = "members"  # the members' folders inside the mixture's, so it travels whole


@dataclass
class MixtureSettings:
    members: list | None = setting(None, "the fitted models mixed: model folders or packaged model names (in "
                                         "`laborllm run`, names of the run's models); two or more", role="source")
    max_valid_persons: int | None = setting(300, "the weights are chosen on at most this many validation people, "
                                                 "a seeded sample (none: all)", 1, 10**9)
    seed: int = setting(0, "the validation sample", 0, 2**32 - 1)


def mixture_weights(target_lp: np.ndarray, iters: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """The weights maximising sum_i log sum_k w_k p_ik, from (members, events) log-probabilities of
    what happened (EM: each step cannot lower the likelihood)."""
    k = len(target_lp)
    w = np.full(k, 1 / k)
    for _ in range(iters):
        joint = np.log(w)[:, None] + target_lp
        resp = np.exp(joint - np.logaddexp.reduce(joint, axis=0))
        new = resp.mean(1)
        if np.abs(new - w).max() < tol:
            return new
        w = new
    return w


class Mixture(Model):
    kind = "mixture"
    Settings = MixtureSettings
    runs_lm = True  # its members are LLMs, as a rule
    presets = {"quick": {}, "full": {}}

    def __init__(self, **config):
        super().__init__(**config)
        if len(self.settings.members or []) < 2:
            raise UserError("mixture: name two or more fitted models in members (model folders or packaged models)")
        self.weights = np.full(len(self.settings.members), 1 / len(self.settings.members))
        self.folders = [packaged_folder(m) or Path(m) for m in self.settings.members]
        self._models = None

    @property
    def normalization(self) -> str:
        """As its members': a mixture of constrained LLM distributions is constrained too."""
        members = self.meta.get("member_normalizations") or []
        if any("constrained" in n for n in members):
            return "exact, constrained: the members' distributions mixed (the LLMs' constrained to the state texts)"
        return "exact, over all states: the members' distributions mixed"

    def describe(self) -> str:
        names = self.meta.get("member_names") or [Path(m).name for m in self.settings.members]
        mix = " + ".join(f"{w:.2f} {n}" for w, n in zip(self.weights, names))
        return f"{self.name} ({mix}; weights from {self.meta.get('valid_events', '?')} validation events)"

    #: loads a member folder of any kind; set by the registry, which knows every kind (this one included)
    load_member: ClassVar[Callable[[Path], Model]]

    def members(self) -> list[Model]:
        if self._models is None:
            self._models = []
            for spec, folder in zip(self.settings.members, self.folders):
                meta = read_model_json(folder)
                if meta is None:
                    raise UserError(f"mixture member {spec!r}: not a laborllm model folder or packaged model")
                if meta.get("kind") == self.kind:
                    raise UserError(f"mixture member {spec!r}: a mixture; name its members instead")
                self._models.append(type(self).load_member(folder))
        return self._models

    def identity_inputs(self) -> dict:
        """The members by their saved ids, whatever names or paths reach them."""
        return {"members": [(read_model_json(f) or {}).get("model_id") for f in self.folders]}

    def _member_scores(self, member: Model, folder: Path, events: Events, keep: Path | None) -> np.ndarray:
        """A member's log-probabilities: from where they are already kept for these very events and
        model, else computed (and kept under `keep`)."""
        kept = kept_log_probs(member, folder, events)
        if kept is not None:
            return kept[0]
        where = keep / f"{member.fingerprint()}-{events.fingerprint()}.parquet" if keep else None
        if where:
            where.parent.mkdir(parents=True, exist_ok=True)
        return model_log_probs(member, where, events)[0]

    def _all_scores(self, events: Events, keep: Path | None) -> np.ndarray:
        for spec, m in zip(self.settings.members, self.members()):
            if list(m.states) != list(events.states):
                raise UserError(f"mixture member {spec!r}: its states differ from the panel's")
        return np.stack([self._member_scores(m, f, events, keep) for m, f in zip(self.members(), self._sources())])

    def _sources(self) -> list[Path]:
        """Each member's folder as named (a run's scores are kept beside it), else its copy here."""
        return [Path(m) if Path(m).is_dir() else f for m, f in zip(self.settings.members, self.folders)]

    def fit(self, events: Events) -> "Mixture":
        self.states = list(events.states)
        for spec, m in zip(self.settings.members, self.members()):
            if m.meta.get("events_fingerprint") != events.fingerprint():
                raise UserError(f"mixture member {spec!r}: fitted on other data or another split; its training "
                                "people could be this panel's validation or test people")
        self.meta.update(member_names=[m.name for m in self.members()],
                         member_normalizations=[m.normalization for m in self.members()])
        valid = events.valid.sample_persons(self.settings.max_valid_persons, self.settings.seed)
        keep = self.work_dir.parent / ".laborllm-scores" if self.work_dir else None
        lp = self._all_scores(valid, keep)
        self.weights = mixture_weights(-np.stack([valid.target_nll(x) for x in lp]))
        mixed = np.logaddexp.reduce(np.log(np.maximum(self.weights, 1e-300))[:, None, None] + lp, axis=0)
        self.meta.update(weights=self.weights.round(6).tolist(), valid_events=len(valid),
                         valid_persons=int(valid.frame.person_id.nunique()),
                         valid_perplexity=round(float(np.exp(valid.target_nll(mixed).mean())), 4),
                         member_valid_perplexities=[round(float(np.exp(valid.target_nll(x).mean())), 4) for x in lp])
        log.info("%s: weights %s chosen on %d validation events (perplexity %.3f; members %s)", self.name,
                    self.meta["weights"], len(valid), self.meta["valid_perplexity"], self.meta["member_valid_perplexities"])
        return self

    def log_probs(self, events: Events) -> np.ndarray:
        return self.log_probs_and_figures(events)[0]

    def log_probs_and_figures(self, events: Events, partial: Path | None = None) -> tuple[np.ndarray, dict]:
        lp = self._all_scores(events, partial)
        mixed = np.logaddexp.reduce(np.log(np.maximum(self.weights, 1e-300))[:, None, None] + lp, axis=0)
        return mixed - np.logaddexp.reduce(mixed, axis=1)[:, None], {}  # rows of float32 caches: renormalised

    # -- persistence -------------------------------------------------------------------------
    def learned(self) -> dict:
        return {"weights": self.weights.tolist()}

    def load_learned(self, learned: dict) -> None:
        self.weights = np.array(learned["weights"])

    def save_extra(self, folder: Path) -> None:
        """The members' folders (an LLM's adapter: a few MB) inside the mixture's."""
        keep = ("model.json", "weights.safetensors", "README.md", "adapter", "hf", "lm", MEMBERS)
        for i, src in enumerate(self.folders):
            shutil.copytree(src, folder / MEMBERS / f"{i}-{Path(src).name}",
                            ignore=lambda d, names, src=src: [n for n in names if Path(d) == src and n not in keep])

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "Mixture":
        m = super().from_folder(folder, meta)
        copies = sorted((folder / MEMBERS).glob("*"), key=lambda p: int(p.name.split("-", 1)[0]))
        if len(copies) == len(m.folders):
            m.folders = copies
        return m
