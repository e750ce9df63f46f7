# The README's two commands are `make run` and `make test`; everything else is a convenience.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= var/data/demo
CUSTOMERS ?= 50000
PORT   ?= 8000
# A fixed key for the local demo only (the README's curl example uses it); real keys come from `retention keys create`.
DEMO_KEY ?= demo-frontend-key-not-for-production

.PHONY: install demo-model run test test-fast fuzz-long lint simulate train migrate bench bench-features bench-slow-clients bench-policy bench-scale experiment-demo soak outage-drill clean

# Installs the project and its pinned dependencies into a local virtualenv (re-run when setup.cfg changes).
$(BIN)/retention: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/retention

# Main job: the decision service on SQLite with a verified model. Simulates a demo data set and trains a model
# only when there is none yet, loads the customers' features, registers the demo frontend key, then serves,
# with the webhook delivery worker in the background (stopped when gunicorn stops).
run: demo-model
	$(BIN)/retention db upgrade
	$(BIN)/retention load-features --data $(DATA) --if-stale
	$(BIN)/retention keys create --name demo-frontend --role decide --key $(DEMO_KEY)
	@echo "serving on http://127.0.0.1:$(PORT)  (API docs: http://127.0.0.1:$(PORT)/docs)"
	@# The webhook delivery worker (the Procfile's worker:) runs beside gunicorn and stops with it.
	$(BIN)/retention webhooks worker & worker=$$!; trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT; \
	  PORT=$(PORT) RETENTION_PIDFILE=var/gunicorn.pid $(BIN)/gunicorn -c gunicorn.conf.py "service:create_app()"

# The demo data set and a model trained on it, each made only when missing.
demo-model: install
	@if [ ! -f $(DATA)/dataset.json ]; then $(BIN)/retention simulate --customers $(CUSTOMERS) --seed 7 --out $(DATA); fi
	@if [ -z "$$(ls models/*/metadata.json 2>/dev/null)" ]; then $(BIN)/retention train --data $(DATA) --out models; fi
	@if [ ! -f models/registry.json ]; then $(BIN)/retention models promote latest --reason "make run: the demo model"; fi

# The decision-API benchmark (bench/run.py): the service vs a bare Flask endpoint under the same gunicorn
# config, driven by wrk (installed from Debian's packages when missing) and an open-loop generator.
bench: demo-model
	@command -v wrk >/dev/null || (apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y wrk >/dev/null))
	$(BIN)/python -m bench.run --data $(DATA) --models models

# Feature aggregation: DuckDB against a plain pandas groupby of the same usage features (bench/features.py).
bench-features: demo-model
	$(BIN)/python -m bench.features --data $(DATA)

# Slow clients (bench/slow_clients.py): an ordinary client's decision latency for 20 s alone, then for 20 s
# while 50 connections send a request's headers one byte every 0.5 s; p50/p99/max of both and their ratio.
bench-slow-clients: demo-model
	$(BIN)/python -m bench.slow_clients --data $(DATA) --models models

# Soak (bench/soak.py): 10 minutes of mixed decisions, outcomes and NPS events at 70% of the measured maximum
# against gunicorn, then every acknowledged write looked up in the store; exit 1 on any 5xx or lost write.
soak: demo-model
	@command -v wrk >/dev/null || (apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y wrk >/dev/null))
	$(BIN)/python -m bench.soak --data $(DATA) --models models --minutes $(or $(MINUTES),10)

# Store outage drill (bench/outage.py): PostgreSQL unreachable behind a TCP proxy for 60 s while gunicorn serves;
# decisions and outcomes are spooled and must all land in the store exactly once when it is back.
# MODE=blackhole: a silent partition (connections stay open, nothing gets through) instead of a refusal.
outage-drill: demo-model
	$(BIN)/python -m bench.outage --seconds $(or $(SECONDS),60) --mode $(or $(MODE),cut)

# The risk list's top-decile lift on a held-out month of two simulated worlds (bench/atrisk.py, ~80 s).
.PHONY: bench-atrisk bench-followup-capacity
bench-atrisk: install
	$(BIN)/python -m bench.atrisk

# Follow-up capacity (bench/followup_capacity.py, ~20 s): the share of detractors contacted within 48 h when
# C tasks a day are worked, on the reference world's NPS answers. HOURS=24x7 for a team around the clock.
bench-followup-capacity: install
	$(BIN)/python -m bench.followup_capacity $(if $(HOURS),--hours $(HOURS))

# The offer policy on every world of training/simulator/worlds.py (bench/policy.py, ~10 minutes): simulate,
# train as `retention train` does, decide a fresh population with the service's Policy, value it with the
# world's truth; rewrites the results table in docs/worlds.md. WORLDS=types,tiny for some of them.
bench-policy: install
	$(BIN)/python -m bench.policy --update-docs $(if $(WORLDS),--worlds $(WORLDS))

# Off-policy evaluation against the truth (bench/ope.py, ~5 minutes): 100 logs of the service's exploring
# policy (share 0.05) on a fresh population; IPS, SNIPS and DR of six candidates against their true values,
# what exploring costs, the logged decisions needed to tell two policies 5% apart; var/bench/ope.json and the
# results section of docs/ope.md. Reads the worlds bench-policy caches (reference, reference-small, types-large,
# types; simulated and trained first where missing). WORLDS=reference for one of them.
.PHONY: bench-ope
bench-ope: install
	@for w in reference reference-small types-large types; do \
	  if [ -z "$$(ls var/bench/worlds/$$w/models/*/metadata.json 2>/dev/null)" ]; then missing=1; fi; done; \
	  if [ -n "$$missing" ]; then $(BIN)/python -m bench.policy --worlds reference,reference-small,types-large,types; fi
	$(BIN)/python -m bench.ope --update-docs $(if $(WORLDS),--worlds $(WORLDS))

# Training at scale: simulate + train 1,000,000 customers, timed, with peak memory (bench/scale.py).
bench-scale: install
	$(BIN)/python -m bench.scale --customers 1000000

# An offer experiment end to end (training/experiment_sim.py): a fresh simulated population (unseen by the
# model) cancels through gunicorn with config/experiments.example.toml running, outcomes and billing events
# are posted back from the simulator's true response, and the report is checked against the truth.
XP := var/experiments
XP_KEY := xp-admin-key-not-for-production-0123
XP_PORT ?= 8010
experiment-demo: demo-model
	@if [ ! -f var/data/eval-seed8/dataset.json ]; then $(BIN)/retention simulate --customers 20000 --seed 8 --out var/data/eval-seed8; fi
	rm -rf $(XP) && mkdir -p $(XP)
	sed "s/^start = .*/start = $$(date -u -d yesterday +%Y-%m-%dT%H:%M:%SZ)/" config/experiments.example.toml > $(XP)/experiments.toml
	DATABASE_URL=sqlite:///$(XP)/store.db $(BIN)/retention db upgrade
	DATABASE_URL=sqlite:///$(XP)/store.db $(BIN)/retention keys create --name xp-admin --role admin --key $(XP_KEY)
	DATABASE_URL=sqlite:///$(XP)/store.db $(BIN)/retention load-features --data var/data/eval-seed8
	DATABASE_URL=sqlite:///$(XP)/store.db RETENTION_EXPERIMENTS=$(XP)/experiments.toml PORT=$(XP_PORT) \
	  RETENTION_LOG_LEVEL=WARNING RETENTION_RATE_LIMIT="100000 per second" $(BIN)/gunicorn -c gunicorn.conf.py "service:create_app()" & echo $$! > $(XP)/gunicorn.pid; \
	  for i in $$(seq 60); do curl -sf http://127.0.0.1:$(XP_PORT)/healthz >/dev/null && break; sleep 0.5; done; \
	  $(BIN)/retention experiment simulate --data var/data/eval-seed8 --url http://127.0.0.1:$(XP_PORT) --key $(XP_KEY) \
	    --name offer-variants --limit 8000 --seed 1 --html $(XP)/offer-variants.html --json $(XP)/offer-variants.json; \
	  status=$$?; kill $$(cat $(XP)/gunicorn.pid); exit $$status

# Every test, on every core, in two phases sharing one data set and model (tests/conftest.py builds them once):
# first the tests that may run side by side, spread over pytest-xdist workers (one per core); then, one at a
# time, the `serial` ones, which put real load on the machine or measure time (a thousand concurrent duplicates and
# kill -9 under load, the soak, the outage drill, the scoring time budget). Fails when any test fails. What CI runs.
TEST_WORKERS ?= auto
# With PYTHONDONTWRITEBYTECODE set, every process (the controller, each worker, the serial phase) would compile
# the project and pytest would rewrite every test module again: ~5 s of CPU each.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest
# worksteal: an idle worker takes half of another's queue, so a few long tests do not leave one core idle at the
# end (and, unlike loadscope/loadgroup, it keeps the schemathesis tests, which share one node id).
PARALLEL := -n $(TEST_WORKERS) --dist worksteal
# The second phase collects only the files the first found serial tests in (all of them if it left no list), and
# finding none is no failure (pytest's exit status 5).
test: install
	@shared=$$(mktemp -d) && trap 'rm -rf "$$shared"' EXIT && export RETENTION_TEST_SHARED=$$shared && status=0; \
	  echo "== the tests that run side by side ($(TEST_WORKERS) workers)"; \
	  $(PYTEST) -q $(PARALLEL) -m "not serial" || status=$$?; \
	  echo "== the serial tests, one at a time"; \
	  $(PYTEST) -q -m serial $$(cat "$$shared/serial-files" 2>/dev/null) || { s=$$?; [ $$s -eq 5 ] || status=$$s; }; \
	  exit $$status

# The inner loop: every test not marked `slow` (more than ~2 s), in parallel; a `serial` one among them waits for
# the machine to itself.
test-fast: install
	$(PYTEST) -q $(PARALLEL) -m "not slow"

# The long schemathesis run (tests/service/test_hostile_input.py): every check, 1,000 examples per operation
# (12,269 cases on 2026-12-01, 5 min) against the service on SQLite; prints the cases and the answers by status class. The
# figures of a run are in docs/api-conformance.md. FUZZ_EXAMPLES=... for another size.
FUZZ_EXAMPLES ?= 1000
fuzz-long: install
	RETENTION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) -q -p no:cacheprovider -p no:logging --show-capture=no \
	  tests/service/test_hostile_input.py -k "test_every_generated or test_every_documented"

# Style, then the layer contracts of setup.cfg [importlinter] (docs/architecture.md).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --config setup.cfg --no-cache

simulate: install
	$(BIN)/retention simulate --customers $(CUSTOMERS) --seed 7 --out $(DATA)

train: install
	$(BIN)/retention train --data $(DATA) --out models

migrate: install
	$(BIN)/retention db upgrade

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
