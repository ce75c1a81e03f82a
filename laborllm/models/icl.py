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
from laborllm.models.lm_loading import use_bf16
from laborllm.models.settings import setting
from laborllm.scoring.exact import ExactScorer

CONTENT_FREE_YEAR = "N/A:"  # the content-free input: a resume with no person and no year


@dataclass
class ICLSettings(LLMSettings):
    epochs: int = setting(0, "not fine-tuned", 0, 0)
    shots: int = setting(3, "at most this many example histories from the training split in the prompt", 0, 10_000)
    max_shot_years: int = setting(8, "years shown of each example history", 1, 200)
    prompt_tokens: int = setting(0, "> 0: add seeded example histories while the prompt stays under this many tokens "
                                    "(up to `shots`)", 0, 1 << 20)
    calibrate: bool = setting(False, "divide out the content-free prediction (the distribution after an empty resume)")


class ICL(LLM):
    """The base model without fine-tuning, prompted with example histories from the training split."""

    kind = "icl"
    Settings = ICLSettings
    fit_exempt = (*LLM.fit_exempt, "calibrate")  # how the fitted prompt is read, not what it is
    read_settings = (*LLM.read_settings, "calibrate")
    # chosen on the men panel's validation events (docs/benchmarks.md)
    presets = {"quick": {"shots": 2}, "full": {"shots": 5}}

    def describe(self) -> str:
        cal = ", calibrated on the content-free prediction" if self.config["calibrate"] else ""
        return (f"{self.name} ({self.base_label()} not fine-tuned, {self.meta.get('shots_used', self.config['shots'])} "
                f"example histories in the prompt{cal}, {self.config['scoring']})")

    def _prepare_prompt(self, events: Events) -> None:
        f = events.panel.frame
        cfg = self.config
        # a seeded order over every training person; the first `shots` of them, or as many as the budget holds
        people = events.train.frame.person_id
        if cfg["prompt_tokens"]:
            order = list(np.random.default_rng(cfg["seed"]).permutation(
                np.array(sorted(pd.unique(people), key=str), dtype=object)))
        else:
            order = sample_ids(people, cfg["shots"], cfg["seed"]) or []
        enc = self._encoder(events.panel)
        ids = list(enc.encode("Below are work histories of survey respondents, one year per line.\n\n"))
        used = 0
        for pid in order[:cfg["shots"]]:
            rows = f[f.person_id == pid].head(cfg["max_shot_years"])
            shot = enc.person(rows)[0][:-1] + enc.encode("\n\n")
            if cfg["prompt_tokens"] and len(ids) + len(shot) > cfg["prompt_tokens"]:
                break
            ids += shot
            used += 1
        self.prompt_ids = ids
        self.meta["shots_used"] = used

    def content_free_log_probs(self, panel) -> np.ndarray:
        """log P(state | the prompt, then a resume with no person and no year), normalised over the states."""
        enc = self._encoder(panel)
        ids = self.prompt_ids + enc.bos + enc.encode(enc.template.header(pd.Series(dtype=object))) + enc.encode(
            CONTENT_FREE_YEAR)
        scorer = ExactScorer(self._scoring_lm(use_bf16(self.config["precision"])), enc.candidates,
                             max_tokens=self.config["score_max_tokens"], mode=self.config["scoring"])
        lp = scorer.score(ids, [len(ids)])[0]
        return lp - np.logaddexp.reduce(lp)

    def log_probs_and_figures(self, events: Events, partial=None) -> tuple[np.ndarray, dict]:
        lp, figures = super().log_probs_and_figures(events, partial)
        if not self.config["calibrate"]:
            return lp, figures
        cal = lp - self.content_free_log_probs(events.panel)[None, :]
        return cal - np.logaddexp.reduce(cal, axis=1, keepdims=True), figures
