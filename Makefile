# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint bench clean

$(BIN)/python:
	@echo "Creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the project's metadata changes. The first install downloads the
# dependencies (a minute or two): pip's own lines (Collecting …) show how far it got.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing trustmesh and its dependencies into $(VENV) (the first time takes a minute or two)"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m sidecar.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench

# Leaves the tree as cloned: everything a build, a test run or a demo writes is removed,
# including mesh homes (.trustmesh) that commands run inside the examples created.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .trustmesh build dist bench/results
	find . -path ./.git -prune -o -type d \( -name __pycache__ -o -name '*.egg-info' \
		-o -name .trustmesh \) -prune -exec rm -rf {} +
	rm -rf examples/per-tool-servers/db_server/.data
