"""Model kinds by name (the MODEL argument of `laborllm fit`), and loading a model folder of any kind."""
from __future__ import annotations

import json
from pathlib import Path

from laborllm.errors import UserError
from laborllm.models.base import Model
from laborllm.models.folder import recover
from laborllm.models.career import Career
from laborllm.models.icl import ICL
from laborllm.models.llm import LLM
from laborllm.models.logit import Logit
from laborllm.models.bag import BagOfJobs
from laborllm.models.markov import Markov
from laborllm.models.lm_head import LMHead
from laborllm.models.mixture import Mixture
from laborllm.models.uniform import Uniform
from laborllm.models.packaged import packaged_folder

KINDS = {"uniform": Uniform, "markov": Markov, "bag": BagOfJobs, "logit": Logit, "career": Career, "llm": LLM, "icl": ICL,
         "llm-head": LMHead, "mixture": Mixture}


def load_model(folder: str | Path) -> Model:
    packaged = packaged_folder(str(folder))
    folder = packaged or Path(folder)
    if packaged is None:
        recover(folder)  # never writes into the package
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise UserError(f"{folder}: not a laborllm model folder (no model.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
        kind = meta["kind"]
        if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("states"), list):
            raise KeyError("config/states")
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta_path}: not a laborllm model description ({type(e).__name__}: {e})") from None
    if kind not in KINDS:
        raise UserError(f"{meta_path}: unknown model kind {kind!r}")
    try:
        return KINDS[kind].from_folder(folder, meta)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{folder}: cannot load the model ({type(e).__name__}: {str(e)[:200]})") from None


Mixture.load_member = staticmethod(load_model)  # a mixture's members are models of any kind
