"""The models the project trains and ships inside the package, loaded by name (`laborllm predict NAME`).

Kept apart from the registry so the CLI can name them without importing torch."""
from __future__ import annotations

from pathlib import Path

from laborllm.errors import UserError

PACKAGED = {"nlsy97-titles": "SmolLM2-135M with a LoRA adapter, titles, fine-tuned on NLSY97's training people",
            "nlsy97-codes": "SmolLM2-135M with a LoRA adapter, codes, fine-tuned on NLSY97's training people",
            "nlsy97-mix": "nlsy97-titles and nlsy97-codes mixed, the weights chosen on NLSY97's validation people"}
PACKAGED_DIR = Path(__file__).parent / "assets"


def packaged_folder(name: str) -> Path | None:
    """The folder of a packaged model name (None when `name` is not one, or is a folder of the user's)."""
    if str(name) not in PACKAGED or Path(name).exists():
        return None
    folder = PACKAGED_DIR / str(name)
    if not (folder / "model.json").is_file():
        raise UserError(f"model {name!r} is not in this release yet: it is being trained by the NLSY97 CPU run "
                        "(`make nlsy97-cpu`, or on a GPU by scripts/gpu-benchmark.sh); pass a model folder instead")
    return folder
