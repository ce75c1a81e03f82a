"""The floor every model must clear: each state equally likely, whatever the history."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from laborllm.data.events import Events
from laborllm.models.base import Model


@dataclass
class UniformSettings:
    pass


class Uniform(Model):
    kind = "uniform"
    Settings = UniformSettings

    def describe(self) -> str:
        return f"{self.name} (every state equally likely: the floor)"

    def fit(self, events: Events) -> "Uniform":
        self.states = list(events.states)
        return self

    def log_probs(self, events: Events) -> np.ndarray:
        return np.full((len(events), len(self.states)), -np.log(len(self.states)))
