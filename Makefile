# Entry points: `make demo` (whole pipeline on Fashion-MNIST within a 20-minute budget on this CPU), `make demo-full`
# (the preset's full schedule: the headline figures) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
RUN_DIR ?= runs/demo
FULL_RUN_DIR ?= runs/demo-full
BUDGET ?= 20m

.PHONY: install data demo demo-full test clean

install: $(STAMP)

# pip byte-compiles every installed file (136 s of a 2-core set-up; 61 s with --no-compile), and that stays: where
# PYTHONDONTWRITEBYTECODE is set (it is on this project's machines) nothing compiled later is kept, and the tests that start
# fresh interpreters then took twice as long (`make test`'s tests 9:51 against 7:47).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Debian's dataset-fashion-mnist when we are root on a Debian-like system; otherwise the
# loader falls back to $$SCANLEARN_DATA or torchvision's download and says what is missing.
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

# The run's first lines say which CPU path it takes (e.g. `CPU AVX2, no native bf16`) and the schedule the budget buys.
demo: install data
	$(BIN)/scanlearn run --preset fashion-mnist --run-dir $(RUN_DIR) --set data.download=true --time-budget $(BUDGET)

demo-full: install data
	$(BIN)/scanlearn run --preset fashion-mnist --run-dir $(FULL_RUN_DIR) --set data.download=true

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
