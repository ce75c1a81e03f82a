"""Model kinds by name (the MODEL argument of `laborllm fit`)."""
from __future__ import annotations

from laborllm.models.logit import Logit
from laborllm.models.markov import BagOfJobs, Markov

MODELS = {"markov": Markov, "bag": BagOfJobs, "logit": Logit}


def register(cls) -> None:
    MODELS[cls.kind] = cls


def _late_imports() -> None:
    """Models with heavy imports (torch transformers) register here."""
    try:
        from laborllm.models import career, llm  # noqa: F401
    except ImportError as e:  # pragma: no cover - only when an optional piece is missing
        import logging

        logging.getLogger(__name__).debug("optional models unavailable: %s", e)


_late_imports()
