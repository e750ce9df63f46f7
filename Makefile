# The README's two commands are `make run` and `make test`; everything else is a convenience.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= var/data/demo
CUSTOMERS ?= 50000

.PHONY: install run test lint simulate train bench clean

# Installs the project and its pinned dependencies into a local virtualenv (re-run when setup.cfg changes).
$(BIN)/retention: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/retention

# Main job, until the decision service exists: simulate a data set, train both models, print the evaluation.
run: install
	@if [ ! -f $(DATA)/dataset.json ]; then $(BIN)/retention simulate --customers $(CUSTOMERS) --seed 7 --out $(DATA); fi
	$(BIN)/retention train --data $(DATA) --out models

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

simulate: install
	$(BIN)/retention simulate --customers $(CUSTOMERS) --seed 7 --out $(DATA)

train: install
	$(BIN)/retention train --data $(DATA) --out models

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
