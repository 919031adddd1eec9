# Fresh machine: `make demo` (the whole chain on built-in synthetic data) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q

.PHONY: venv test test-ext test-pure bench bench-smoke demo default-model lint clean pi bare-check

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -U pip

# Dev install: editable, Cython extension required (a failed build is an error here).
venv: $(BIN)/activate
	CAPTCHA_EDGE_REQUIRE_EXT=1 $(BIN)/pip install $(PIP_FLAGS) -e ".[dev,train]"

# The suite runs twice: with the Cython decoder (required), then forcing the pure-Python twin.
test: venv
	$(MAKE) test-ext test-pure

test-ext:
	CAPTCHA_EDGE_REQUIRE_EXT=1 $(BIN)/python -m pytest tests -q

test-pure:
	CAPTCHA_EDGE_PUREPYTHON=1 $(BIN)/python -m pytest tests -q -m "not slow"

bench: venv
	$(BIN)/python -m pytest benchmarks --benchmark-only

demo: venv
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

# ruff, then mypy --strict over the assembled captcha_edge package (scripts/typecheck.sh).
lint:
	$(BIN)/ruff check runtime decoder_ext train export tests benchmarks
	MYPY=$(abspath $(BIN))/mypy bash scripts/typecheck.sh

# Bare-machine proof (root): README's commands in a bookworm amd64 rootfs with only README's
# packages; the last result is kept in benchmarks/results/bare-check.json. Not part of CI (time).
bare-check:
	BARE_RESULT=benchmarks/results/bare-check.json bash scripts/bare-check.sh

clean:
	rm -rf build dist *.egg-info decoder_ext/_ctc_cy.c decoder_ext/*.so
