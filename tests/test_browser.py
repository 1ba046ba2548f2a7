"""The learner's view in a real browser (issue 37): JupyterLab over copies of the notebooks, driven by headless
Chromium (helpers.course.lab). 02's pair slider must show the pair the data holds, 01's beta slider must redraw its
figure, no cell may show an error, and a broken widget callback must fail the check. Screenshots of each notebook's
first screen and of the widgets land in the test's folder (``make screenshots`` writes the docs' copies)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB01, NB02 = "01_dpo_math_and_loss.ipynb", "02_hh_rlhf_formatting.ipynb"
BROKEN = "02_broken_callback.ipynb"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import nbformat

    from helpers.course.lab import Lab, chromium_path

    chromium_path()  # no browser: FileNotFoundError saying how to install one (a failure, never a skip)
    work = tmp_path_factory.mktemp("lab")
    nb = nbformat.read(ROOT / "notebooks" / NB02, as_version=4)
    cell = next(c for c in nb.cells if "def show_pair" in c.source)
    cell.source = cell.source.replace('e = splits.data["train"][i]', 'e = splits.data["train"][0]')  # ignores i
    assert 'splits.data["train"][0]' in cell.source
    nbformat.write(nb, work / BROKEN)
    with Lab([ROOT / "notebooks" / NB01, ROOT / "notebooks" / NB02, work / BROKEN], work / "course") as running:
        yield running


@pytest.fixture(scope="module")
def chromium(lab):
    from playwright.sync_api import sync_playwright

    from helpers.course.lab import browser

    with sync_playwright() as p:
        b = browser(p)
        yield b
        b.close()


@pytest.fixture
def page(chromium):
    """A new page per test: one notebook in the document."""
    pg = chromium.new_page(viewport={"width": 1400, "height": 900})
    yield pg
    pg.close()


def _expected_pair(i: int) -> str:
    """What 02's show_pair prints for pair ``i``, from the data 02 loads: its parameters cell run here, in the
    environment the page's kernel has (offline; the tests' DPO_HH_SOURCE)."""
    import io
    from contextlib import redirect_stdout

    import nbformat

    from helpers.worlds.splits import resolve_hh

    nb = nbformat.read(ROOT / "notebooks" / NB02, as_version=4)
    p: dict = {}
    exec(next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source, p)
    with redirect_stdout(io.StringIO()):
        splits = resolve_hh(p["SOURCE"], data_dir=p["DATA_DIR"], limit=p["LIMIT"], test_limit=p["TEST_LIMIT"],
                            seed=p["SEED"])
    e = splits.data["train"][i]
    return "\n".join([*(f"{t['role']:>9}: {t['content']}" for t in e["prompt"]),
                      f"{'CHOSEN':>9}: {e['chosen'][0]['content']}", f"{'REJECTED':>9}: {e['rejected'][0]['content']}"])


def _norm(text: str) -> str:
    return "\n".join(re.sub(r"\s+", " ", line).strip() for line in text.strip().splitlines())


def test_02_runs_in_the_page_and_its_pair_slider_shows_the_pair_the_data_holds(lab, page, tmp_path):
    from helpers.course.lab import errors_in, move_slider, open_notebook

    open_notebook(page, lab, NB02, first_screen=tmp_path / "02_first_screen.png", timeout_s=300)
    assert errors_in(lab, NB02) == []
    moved = move_slider(page, "def show_pair", presses=2, screenshot=tmp_path / "02_pair_browser.png")
    assert _norm(moved["before"]["text"]) == _norm(_expected_pair(0))
    assert _norm(moved["after"]["text"]) == _norm(_expected_pair(2)), "two steps right: pair 2 of the train split"
    assert (tmp_path / "02_first_screen.png").stat().st_size > 10_000
    assert (tmp_path / "02_pair_browser.png").stat().st_size > 5_000


def test_a_broken_widget_callback_fails_the_check(lab, page):
    from helpers.course.lab import errors_in, move_slider, open_notebook

    open_notebook(page, lab, BROKEN, timeout_s=300)
    assert errors_in(lab, BROKEN) == []  # it runs cleanly: only the slider is broken
    with pytest.raises(AssertionError):  # the callback ignores the slider: the output never changes
        moved = move_slider(page, "def show_pair", presses=2)
        assert _norm(moved["after"]["text"]) == _norm(_expected_pair(2))


def test_01_runs_in_the_page_and_its_beta_slider_redraws_the_figure(lab, page, tmp_path):
    from helpers.course.lab import errors_in, move_slider, open_notebook

    open_notebook(page, lab, NB01, first_screen=tmp_path / "01_first_screen.png", timeout_s=600)
    assert errors_in(lab, NB01) == []
    moved = move_slider(page, "def draw_loss_and_weight", presses=3, screenshot=tmp_path / "01_beta_slider.png")
    before, after = moved["before"]["images"], moved["after"]["images"]
    assert len(before) == 1 and len(after) == 1 and before != after, "one figure, redrawn"
    assert (tmp_path / "01_beta_slider.png").stat().st_size > 10_000


def test_no_browser_is_a_failure_that_says_how_to_install_one(monkeypatch, tmp_path):
    from helpers.course import lab

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DPO_CHROMIUM", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
        lab.chromium_path()
    monkeypatch.setenv("DPO_CHROMIUM", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="DPO_CHROMIUM="):
        lab.chromium_path()
