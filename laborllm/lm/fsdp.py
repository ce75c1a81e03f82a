"""The accelerate configuration for sharded training (FSDP2), shipped with the package.

    accelerate launch --config_file "$(python -m laborllm.lm.fsdp)" -m laborllm.cli fit llm ...

Full shard, activation checkpointing, bf16 mixed precision, sharded (resumable) checkpoints. FSDP
needs GPUs -- accelerate runs FSDP on CPU processes as plain DDP -- so it is rehearsed by
`scripts/gpu-benchmark.sh fsdp` when a GPU is lent; the weights are gathered to be saved by
`laborllm.lm.training.save_whole`.
"""
from pathlib import Path

CONFIG = Path(__file__).with_name("fsdp.yaml")

if __name__ == "__main__":
    print(CONFIG)
