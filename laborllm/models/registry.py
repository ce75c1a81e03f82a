"""Model kinds by name (the MODEL argument of `laborllm fit`)."""
from __future__ import annotations

from laborllm.models.career import Career
from laborllm.models.llm import ICL, LLM
from laborllm.models.logit import Logit
from laborllm.models.markov import BagOfJobs, Markov

MODELS = {"markov": Markov, "bag": BagOfJobs, "logit": Logit, "career": Career, "llm": LLM, "icl": ICL}
