"""The untuned language model prompted in context: example histories from the training split before
each resume (the paper's in-context baseline)."""
from __future__ import annotations

from dataclasses import dataclass

from laborllm.data.events import Events, sample_ids
from laborllm.models.llm import LLM, LLMSettings
from laborllm.models.settings import setting


@dataclass
class ICLSettings(LLMSettings):
    epochs: int = setting(0, "not fine-tuned", 0, 0)
    shots: int = setting(3, "example histories from the training split in the prompt", 0, 100)
    max_shot_years: int = setting(8, "years shown of each example history", 1, 200)


class ICL(LLM):
    """The base model without fine-tuning, prompted with example histories from the training split."""

    kind = "icl"
    Settings = ICLSettings
    presets = {"quick": {"shots": 2}, "full": {"shots": 5}}

    def describe(self) -> str:
        return (f"{self.name} ({self.base_label()} not fine-tuned, {self.config['shots']} example histories "
                f"in the prompt, {self.config['scoring']})")

    def _prepare_prompt(self, events: Events) -> None:
        f = events.panel.frame
        shots = sample_ids(events.train.frame.person_id, self.config["shots"], self.config["seed"]) or []
        enc = self._encoder(events.panel)
        intro = enc.encode("Below are work histories of survey respondents, one year per line.\n\n")
        ids = list(intro)
        for pid in shots:
            rows = f[f.person_id == pid].head(self.config["max_shot_years"])
            ids += enc.person(rows)[0][:-1] + enc.encode("\n\n")
        self.prompt_ids = ids
