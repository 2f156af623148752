# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test chromium lint bench clean

# Reinstall when the project's dependency files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray]"
	touch $(STAMP)

# The tour: every slide of the seed, reproduced and corrected, in runs/tour/index.html.
demo: $(STAMP)
	$(BIN)/epochlab tour --out runs/tour --overwrite

# The browser test renders the tour in headless Chromium. Install Debian's package
# where it is missing and we can (root with apt-get); otherwise that one test skips.
test: $(STAMP) chromium
	$(BIN)/python -m pytest

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    || echo "Could not install chromium: the browser test will skip."; \
	  else echo "chromium is not installed and cannot be (not root, or no apt-get):" \
	    "the browser test will skip."; fi; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fit_overhead.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
