"""The FSDP configuration shipped with the package is one accelerate accepts, and it asks for what
docs/scaling.md promises (FSDP itself needs GPUs: scripts/gpu-benchmark.sh fsdp runs it)."""
import os
import subprocess
import sys


def test_packaged_fsdp_config_goes_through_accelerate_launch(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = subprocess.run([sys.executable, "-m", "laborllm.lm.fsdp"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert os.path.isfile(path)
    args = launch_command_parser().parse_args(["--config_file", path, "-m", "laborllm.cli", "fit", "llm"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)  # what `accelerate launch` hands each process
    for k, v in env.items():
        if k.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # full shard
    assert plugin.activation_checkpointing is True
    assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)  # resumable sharded checkpoints
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
