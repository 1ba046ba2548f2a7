#!/usr/bin/env bash
# Runs every notebook (the offline default, like `make run`) with Colab's versions of the packages Colab imports
# before cell 1 and that this course uses directly: numpy, matplotlib, ipywidgets (from ../shared/colab/
# pip-freeze.gpu.txt). They are installed into a separate folder put first on PYTHONPATH; .venv is not touched.
# torch, pandas and the kernel stay at the local versions (Colab's CUDA torch cannot be installed here).
# Usage: bash scripts/run_with_colab_versions.sh   (after `make venv`; ~4 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
FREEZE=../shared/colab/pip-freeze.gpu.txt
pin() { grep -i "^$1==" "$FREEZE"; }
TARGET=.cache/colab-versions
rm -rf "$TARGET"
.venv/bin/pip install -q --disable-pip-version-check --no-deps --target "$TARGET" \
  "$(pin numpy)" "$(pin matplotlib)" "$(pin ipywidgets)" "$(pin widgetsnbextension)" "$(pin ipython-genutils)" \
  "$(pin jupyterlab_widgets)"
PYTHONPATH="$PWD/$TARGET" .venv/bin/python -c \
  "import numpy, matplotlib, ipywidgets; print('Colab versions:', numpy.__version__, matplotlib.__version__, ipywidgets.__version__)"
PYTHONPATH="$PWD/$TARGET" HF_HUB_OFFLINE=1 .venv/bin/python -m helpers.course.suite --runs-dir .cache/colab-versions-runs
