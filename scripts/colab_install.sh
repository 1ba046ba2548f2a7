#!/usr/bin/env bash
# Installs the pinned stack on Google Colab (called by every notebook's first cell, only on Colab).
# Keeps the torch that Colab ships (a CUDA build); everything else uses the same pins as requirements*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -v -E '^(torch==|#|$)' requirements.txt > /tmp/dpo-course-requirements.txt
pip install -q -r /tmp/dpo-course-requirements.txt
# On Colab the registry has every dependency unsloth declares, so a normal install works there.
pip install -q -r requirements-unsloth.txt
pip install -q --no-deps -e .
echo "dpo-course: pinned stack installed (torch $(python -c 'import torch; print(torch.__version__)') kept from Colab)"
