"""Model kinds by name (the MODEL argument of `laborllm fit`)."""
from __future__ import annotations

from laborllm.models.logit import Logit
from laborllm.models.markov import BagOfJobs, Markov

MODELS = {"markov": Markov, "bag": BagOfJobs, "logit": Logit}


def register(cls) -> None:
    MODELS[cls.kind] = cls


from laborllm.models.career import Career  # noqa: E402
from laborllm.models.llm import ICL, LLM  # noqa: E402

MODELS.update({"career": Career, "llm": LLM, "icl": ICL})
