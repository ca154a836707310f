# podvisor: `make run` brings the whole stack up natively with local defaults; `make test` runs the suite.
# The system interpreter when there is one: services run as the login user, who cannot reach a Python
# installed under /root (pyenv), and the image uses the system one too.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Local defaults for `make run`: state in ./.podvisor, loopback and unprivileged ports, autostop in dry-run,
# uploads to a local folder. Any of them can be overridden from the environment.
export PODVISOR_STATE_DIR    ?= $(CURDIR)/.podvisor
export PODVISOR_PROVIDER     ?= local
export PODVISOR_BIND_HOST    ?= 127.0.0.1
export PODVISOR_WORKSPACE    ?= $(CURDIR)/workspace
export SSH_PORT              ?= 2222
export JUPYTER_PORT          ?= 8888
export JUPYTER_ROOT_DIR      ?= $(CURDIR)/workspace
export INFERENCE_PORT        ?= 8000
export INFERENCE_MODEL_DIR   ?= $(CURDIR)/workspace/models
export AUTOSTOP_ACTION       ?= none
export UPLOAD_WATCH_DIRS     ?= $(CURDIR)/workspace/checkpoints
export UPLOAD_DESTINATIONS   ?= file://$(CURDIR)/.local-uploads
export REPO_DIR              ?= $(CURDIR)/workspace/repo

.DEFAULT_GOAL := install

status: install
	$(BIN)/podvisor status

.PHONY: install run status test test-fast test-loaded lint bench env-example smoke image clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[pod,test]'
	touch $@

run: install
	mkdir -p $(UPLOAD_WATCH_DIRS) $(INFERENCE_MODEL_DIR) $(PODVISOR_STATE_DIR)
	$(BIN)/podvisor config --check || true
	exec $(BIN)/podvisor start

test: install
	$(BIN)/python -m pytest

# The suite with two busy CPU loops beside it: what a loaded CI machine does to timing.
test-loaded: install
	scripts/with_load.sh $(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m fast

# ruff (pycodestyle, pyflakes, pyupgrade, bugbear) and mypy with pydantic's plugin, as pyproject.toml sets them.
lint: install $(VENV)/.lint-installed
	$(BIN)/ruff check entrypoint services host
	$(BIN)/mypy

$(VENV)/.lint-installed: pyproject.toml
	$(BIN)/pip install -q -e '.[pod,test,lint]'
	touch $@

bench: install $(VENV)/.bench-installed
	command -v wrk >/dev/null || $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq wrk >/dev/null
	$(BIN)/python -m bench

$(VENV)/.bench-installed: pyproject.toml
	$(BIN)/pip install -q -e '.[pod,test,bench]'
	touch $@

env-example: install
	$(BIN)/podvisor env-example > env.example
	$(BIN)/podvisor env-example --readme README.md

image:
	scripts/build_image.sh

smoke: install
	$(BIN)/python scripts/smoke.py

clean:
	rm -rf $(VENV) .podvisor .local-uploads
