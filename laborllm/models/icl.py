"""The untuned language model prompted in context: example histories from the training split before
each resume (the paper's in-context baseline), made a fair opponent: as many examples as the prompt's
token budget holds (seeded), and calibrated against the content-free prediction (Zhao et al. 2021:
what the model predicts for an empty history is divided out, so a bias towards some state texts that
has nothing to do with the history no longer counts against it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from laborllm.data.events import Events, sample_ids
from laborllm.models.llm import LLM, LLMSettings
from laborllm.lm.precision import choose_precision
from laborllm.settings import setting
from laborllm.scoring.exact import ExactScorer

CONTENT_FREE_YEAR = "N/A:"  # the content-free input: a resume with no person and no year


@dataclass
class ICLSettings(LLMSettings):
    epochs: int = setting(0, "not fine-tuned", 0, 0)
    shots: int = setting(3, "at most this many example histories from the training split in the prompt", 0, 10_000)
    max_shot_years: int = setting(8, "years shown of each example history", 1, 200)
    prompt_tokens: int = setting(0, "> 0: add seeded example histories while the prompt stays under this many tokens "
                                    "(up to `shots`)", 0, 1 << 20)
    calibrate: str = setting("none", "content-free: divide out the prediction after an empty resume; temperature: one "
                                     "temperature fitted on the validation people (the untuned LM copies the last "
                                     "line with near certainty)", choices=("none", "content-free", "temperature"))


class ICL(LLM):
    """The base model without fine-tuning, prompted with example histories from the training split."""

    kind = "icl"
    Settings = ICLSettings
    # one temperature, chosen on the men panel's validation events (docs/benchmarks.md): the untuned LM
    # copies the last line with near certainty, and loses to a uniform guess without it
    presets = {"quick": {"shots": 2, "calibrate": "temperature"}, "full": {"shots": 5, "calibrate": "temperature"}}

    def describe(self) -> str:
        cal = {"none": "", "content-free": ", calibrated on the content-free prediction",
               "temperature": f", temperature {self.meta.get('temperature', 1):.2f} fitted on validation"}[self.settings.calibrate]
        return (f"{self.name} ({self.base_label()} not fine-tuned, {self.meta.get('shots_used', self.settings.shots)} "
                f"example histories in the prompt{cal}, {self.settings.scoring})")

    def _prepare_prompt(self, events: Events) -> None:
        f = events.panel.frame
        cfg = self.settings
        # a seeded order over every training person; the first `shots` of them, or as many as the budget holds
        people = events.train.frame.person_id
        if cfg.prompt_tokens:
            order = list(np.random.default_rng(cfg.seed).permutation(
                np.array(sorted(pd.unique(people), key=str), dtype=object)))
        else:
            order = sample_ids(people, cfg.shots, cfg.seed) or []
        enc = self._encoder(events.panel)
        ids = list(enc.encode("Below are work histories of survey respondents, one year per line.\n\n"))
        used = 0
        for pid in order[:cfg.shots]:
            rows = f[f.person_id == pid].head(cfg.max_shot_years)
            shot = enc.person(rows)[0][:-1] + enc.encode("\n\n")
            if cfg.prompt_tokens and len(ids) + len(shot) > cfg.prompt_tokens:
                break
            ids += shot
            used += 1
        self.prompt_ids = ids
        self.meta["shots_used"] = used
        # all an untuned model learns in its fit: the prompt, and here the temperature that reads it
        if cfg.calibrate == "temperature":
            valid = events.valid.sample_persons(cfg.max_valid_persons, cfg.seed)
            self.meta["temperature"] = fit_temperature(self.raw_log_probs(valid), valid.frame.target.to_numpy())

    def content_free_log_probs(self, panel) -> np.ndarray:
        """log P(state | the prompt, then a resume with no person and no year), normalised over the states."""
        enc = self._encoder(panel)
        ids = self.prompt_ids + enc.bos + enc.encode(enc.template.header(pd.Series(dtype=object))) + enc.encode(
            CONTENT_FREE_YEAR)
        scorer = ExactScorer(self._scoring_lm(choose_precision(self.settings.precision)[0]), enc.candidates,
                             max_tokens=self.settings.score_max_tokens, mode=self.settings.scoring)
        lp = scorer.score(ids, [len(ids)])[0]
        return lp - np.logaddexp.reduce(lp)

    def log_probs_and_figures(self, events: Events, partial=None) -> tuple[np.ndarray, dict]:
        lp, figures = super().log_probs_and_figures(events, partial)
        if self.settings.calibrate == "content-free":
            lp = lp - self.content_free_log_probs(events.panel)[None, :]
        elif self.settings.calibrate == "temperature":
            lp = lp / self.meta["temperature"]
        return lp - np.logaddexp.reduce(lp, axis=1, keepdims=True), figures


def fit_temperature(lp: np.ndarray, target: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(lp / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        z = lp / np.exp(log_t)
        return float((np.logaddexp.reduce(z, axis=1) - z[np.arange(len(z)), target]).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 5), method="bounded").x))
