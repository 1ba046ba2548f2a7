"""Repository-wide pytest set-up (applies to tests/ and to nbmake runs of notebooks/).

Tests and notebook runs are offline (CI has no hub). Notebook 02 reads real HH-RLHF rows from ../shared when
they are there (the CI layout), so the notebook's counts are those of real data; elsewhere it uses its default.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

_SHARED_HH = Path(__file__).resolve().parents[1] / "shared/data/hh-rlhf/harmless-base-test-0000-1199.jsonl"
if _SHARED_HH.exists():
    os.environ.setdefault("DPO_HH_SOURCE", str(_SHARED_HH))


def _fail_on_unclean_output() -> None:
    """nbmake: notebooks run with the course's client (``helpers.course.nbexec.CourseNotebookClient``: no silent
    wait on a missed kernel message, an IOPub timeout is an error), and a notebook whose executed outputs hold library
    noise or stacked progress bars, or whose runner waited more than a minute between two cells, fails its test
    (``helpers.course.suite.output_problems`` and ``helpers.course.nbexec.stall_problems``: what `make run` checks)."""
    try:
        import nbmake.nb_run as nb_run
        from nbmake.nb_result import NotebookError
        from nbmake.nb_run import NotebookRun
    except ImportError:  # nbmake not installed: nothing to hook
        return
    if getattr(NotebookRun.execute, "_dpo_course_checked", False):
        return
    from helpers.course.nbexec import CourseNotebookClient

    nb_run.NotebookClient = CourseNotebookClient  # the name nbmake's execute() looks up
    execute = NotebookRun.execute

    def checked(self, *args, **kwargs):
        from helpers.course.nbexec import stall_problems
        from helpers.course.suite import output_problems

        result = execute(self, *args, **kwargs)
        problems = output_problems(result.nb) + stall_problems(result.nb) if result.error is None else []
        if problems:
            result.error = NotebookError(summary="unclean cell output: " + "; ".join(problems),
                                         trace="\n".join(problems), failing_cell_index=0)
        return result

    checked._dpo_course_checked = True
    NotebookRun.execute = checked


_fail_on_unclean_output()


def pytest_collection_modifyitems(config, items):
    """Every nbmake item (a notebook under notebooks/) is a ``notebook`` test: `make test-fast` skips them."""
    import pytest

    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
