"""Tiny random causal LMs with a tokenizer trained on the spot: for tests, benchmarks and demos
that must run in seconds on a CPU without any download."""
from __future__ import annotations

import torch


def train_tokenizer(texts: list[str], vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


# architectures of the pretrained LMs users bring (Llama 2/3, Qwen2, Mistral, Gemma 3), in tiny sizes
ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma3_text")


def tiny_llama(vocab_size: int, hidden: int = 64, layers: int = 2, seed: int = 0, arch: str = "llama"):
    """A tiny random causal LM of the given architecture (Hugging Face model_type)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(arch, vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                               num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=hidden // 4, max_position_embeddings=4096, tie_word_embeddings=True,
                               bos_token_id=0, eos_token_id=0, pad_token_id=None)
    return AutoModelForCausalLM.from_config(cfg).eval()


def tiny_model_folder(folder, texts: list[str], vocab_size: int = 600, **kw):
    """Write a tiny random model + tokenizer as a Hugging Face folder (safetensors)."""
    tok = train_tokenizer(texts, vocab_size)
    model = tiny_llama(len(tok), **kw)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
