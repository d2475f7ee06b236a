# Two entry points: `make demo` (whole pipeline on Fashion-MNIST) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
RUN_DIR ?= runs/demo

.PHONY: install data demo test clean

install: $(STAMP)

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

demo: install data
	$(BIN)/scanlearn run --preset fashion-mnist --run-dir $(RUN_DIR) --set data.download=true

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
