"""The models the project trains and ships inside the package, loaded by name (`laborllm predict NAME`).

Kept apart from the registry so the CLI can name them without importing torch."""
from __future__ import annotations

from pathlib import Path

PACKAGED = {"nlsy97-titles": "SmolLM2-135M with a LoRA adapter, titles, fine-tuned on NLSY97's training people",
            "nlsy97-codes": "SmolLM2-135M with a LoRA adapter, codes, fine-tuned on NLSY97's training people"}
PACKAGED_DIR = Path(__file__).parent / "assets"
