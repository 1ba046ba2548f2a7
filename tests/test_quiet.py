"""Known library noise stays out of cell output once helpers is imported; the control shows it is there without."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.infra.quiet import NOISE

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import torchao, bitsandbytes, transformers"


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300).stderr


@pytest.mark.subprocess
def test_helpers_drops_the_known_noise_and_only_that():
    loud = _stderr(IMPORTS)
    # Which noise a machine prints depends on its CPU: on an AMD EPYC machine (2026-12-07) bitsandbytes printed no
    # "No module named 'kernels'", while torchao's messages showed. The control asks for at least one known fragment
    # (so the test can fail), and every fragment it shows must be gone once helpers is imported.
    present = [f for frags in NOISE.values() for f in frags if f in loud]
    assert present, loud[-2000:]
    quiet = _stderr("import helpers; " + IMPORTS + "; import logging; logging.getLogger('torchao').warning('kept')")
    assert not any(f in quiet for f in present), quiet[-2000:]
    assert "kept" in quiet  # other messages of the same logger still show


def _nb(*cells_outputs):
    import nbformat

    nb = nbformat.v4.new_notebook()
    for outputs in cells_outputs:
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    return nb


def _bar(desc):
    return {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2,
                                                                  "version_minor": 0},
                     "text/plain": f"{desc}:   0%|          | 0/38 [00:00<?, ?it/s]"}}


def test_output_problems_finds_noise_and_stacked_bars_and_passes_clean_output():
    from helpers.course.suite import output_problems

    stream = lambda name, text: {"output_type": "stream", "name": name, "text": text}  # noqa: E731
    clean = _nb([stream("stdout", "loss 0.69\n"), _bar("sweep")], [_bar("training")])
    assert output_problems(clean) == []
    dirty = _nb([stream("stderr", "Failed to load /x/_C_mxfp8.so: undefined symbol\n")],
                [_bar("sweep"), _bar("Loading weights"), _bar("Tokenizing train dataset")],
                [stream("stderr", "Tokenizing:   0%|   | 0/8\rTokenizing: 100%|###| 8/8\nDropping:   0%|  | 0/8\r")],
                [stream("stderr", "UserWarning: bitsandbytes was compiled without GPU support\n")])
    problems = output_problems(dirty)
    assert [p.split(":")[0] for p in problems] == ["cell 0", "cell 1", "cell 2", "cell 3"], problems
    assert "3 progress bars" in problems[1] and "2 progress bars" in problems[2]


def test_progress_bars_off_silences_transformers_and_datasets_and_restores_them():
    import datasets
    import transformers.utils.logging as tf_logging

    from helpers.infra.quiet import progress_bars_off

    assert tf_logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()
    with progress_bars_off():
        assert not tf_logging.is_progress_bar_enabled() and datasets.are_progress_bars_disabled()
    assert tf_logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()  # a state set by the user is restored as it was
    try:
        with progress_bars_off():
            pass
        assert not tf_logging.is_progress_bar_enabled()
    finally:
        tf_logging.enable_progress_bar()


@pytest.mark.notebook
def test_nbmake_fails_a_notebook_with_noise_and_passes_a_clean_one(tmp_path):
    """The repository's conftest hooks nbmake, so `make test` fails on the noise `make run` would flag."""
    import os

    import nbformat

    for name, code in (("noisy", "import sys\nprint('Failed to load /x/_C_mxfp8.so', file=sys.stderr)"),
                       ("clean", "print('hello')")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "-p", "conftest", "-p", "no:cacheprovider",
                           "-q", "noisy.ipynb", "clean.ipynb"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "FAILED noisy.ipynb" in proc.stdout and "library noise" in proc.stdout, proc.stdout[-2000:]
    assert "1 failed, 1 passed" in proc.stdout


@pytest.mark.subprocess
def test_the_whole_sequence_warning_is_dropped_and_other_tokenizer_warnings_stay():
    from helpers.infra.quiet import LENGTH_NOISE

    (fragment,) = LENGTH_NOISE["transformers.tokenization_utils_base"]
    code = ("from transformers import PreTrainedTokenizerFast; from tokenizers import Tokenizer, models, "
            "pre_tokenizers; w = Tokenizer(models.WordLevel({'a': 0, '[UNK]': 1}, unk_token='[UNK]')); "
            "w.pre_tokenizer = pre_tokenizers.Whitespace(); "
            "t = PreTrainedTokenizerFast(tokenizer_object=w, model_max_length=4); t('a ' * 10); import logging; "
            "logging.getLogger('transformers.tokenization_utils_base').warning('kept')")
    loud = _stderr(code)
    assert fragment in loud, loud[-2000:]  # the warning exists on this stack (the test can fail)
    quiet = _stderr("import helpers; " + code)
    assert fragment not in quiet and "kept" in quiet, quiet[-2000:]
