"""The language-model machinery the LLM kinds share (fine-tuned, in-context, the head on it): loading
a pretrained base from local files, the precision policy, the Trainer run and its checkpoints, the
FSDP configuration, and tiny test models. Nothing here knows about model kinds."""
