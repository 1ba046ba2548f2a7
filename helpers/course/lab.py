"""The learner's view: the notebooks in JupyterLab, driven by a headless Chromium (Playwright), as a learner would.

``Lab`` starts JupyterLab on 127.0.0.1 (a free port, a random token, settings of its own) over a copy of the
notebooks in a temporary folder and stops it (its whole process group) on exit, also on failure. ``open_notebook``
opens one, runs all its cells from the page (the Run menu) and waits for the kernel; ``errors_in`` reads the saved
notebook back for error outputs; ``move_slider`` moves a widget's slider with the keyboard and returns what its output
shows then. ``tests/test_browser.py`` checks 01's beta slider and 02's pair browser with these; ``main`` writes the
screenshots the docs show (``make screenshots``). The browser is Debian's Chromium (``chromium``; ``DPO_CHROMIUM``
names another executable): Playwright drives it, nothing is downloaded.

    python -m helpers.course.lab --out docs/figures      # 02's pair browser and 01's beta slider, as PNGs
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from helpers.infra.paths import ROOT
from helpers.infra.settings import setting

__all__ = ["chromium_path", "Lab", "open_notebook", "errors_in", "move_slider", "browser", "main"]

NO_CHROMIUM = ("no Chromium found for the browser test: install Debian's (`sudo apt-get install -y chromium`; .ci/run "
               "does) or set DPO_CHROMIUM to a Chromium or Chrome executable")


def chromium_path() -> str:
    """The Chromium executable: ``DPO_CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on the
    PATH. ``FileNotFoundError`` saying how to install one otherwise (never a silent skip)."""
    given = setting("DPO_CHROMIUM", "")
    if given:
        if not (Path(given).is_file() and os.access(given, os.X_OK)):
            raise FileNotFoundError(f"DPO_CHROMIUM={given!r} is not an executable file. {NO_CHROMIUM}")
        return given
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found is None:
        raise FileNotFoundError(NO_CHROMIUM)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """JupyterLab over copies of ``notebooks`` (paths) in ``work/notebooks``; a context manager.

    Offline like ``make run`` (``HF_HUB_OFFLINE=1``), artifacts under ``work/runs`` (``DPO_RUN_DIR``), its settings,
    workspaces and runtime files under ``work`` (nothing of the user's JupyterLab is read or changed), every cell in
    the page (``windowingMode: none``) so that a test sees the whole notebook."""

    def __init__(self, notebooks: list[Path], work: Path, *, env: dict[str, str] | None = None):
        self.work, self.port, self.token = Path(work), _free_port(), secrets.token_hex(16)
        (self.work / "notebooks").mkdir(parents=True, exist_ok=True)
        for nb in notebooks:
            shutil.copy2(nb, self.work / "notebooks" / Path(nb).name)
        for plugin, value in (("notebook-extension/tracker", {"windowingMode": "none"}),
                              ("apputils-extension/notification", {"fetchNews": "false"})):  # no news toast
            f = self.work / ".lab" / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        base = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # a learner's lab draws inline, not Agg
        self.env = {**base, "HF_HUB_OFFLINE": "1", "DPO_RUN_DIR": str(self.work / "runs"),
                    "JUPYTERLAB_SETTINGS_DIR": str(self.work / ".lab" / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.work / ".lab" / "workspaces"),
                    "JUPYTER_RUNTIME_DIR": str(self.work / ".lab" / "runtime"), "PYTHONPATH": str(ROOT),
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._log = None

    def url(self, name: str) -> str:
        """``name`` alone in a fresh workspace (``reset``: no tab of an earlier notebook is restored)."""
        return f"http://127.0.0.1:{self.port}/lab/tree/notebooks/{name}?reset&token={self.token}"

    def __enter__(self) -> Lab:
        self._log = open(self.work / "lab.log", "wb")  # noqa: SIM115 - the server writes here until it stops
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.work}", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             *(["--allow-root"] if os.geteuid() == 0 else [])], cwd=self.work, env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"JupyterLab exited at start ({self.proc.returncode}): "
                                   f"{(self.work / 'lab.log').read_text(errors='replace')[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"JupyterLab did not answer on 127.0.0.1:{self.port} within 90 s: "
                           f"{(self.work / 'lab.log').read_text(errors='replace')[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()


def browser(playwright):
    """A headless Chromium (Debian's; ``chromium_path``) for ``playwright``."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                      args=["--no-sandbox", "--disable-gpu"])


# Done: some cell has run and none is running or queued ("[*]"); after an error the queued cells are cancelled
# ("[ ]"), so a failing notebook ends the wait too (errors_in says where).
_ALL_RAN = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
  return prompts.some(t => /\\[\\d+\\]/.test(t)) && !prompts.some(t => t.includes('*'));
}"""


def open_notebook(page, lab: Lab, name: str, *, run: bool = True, timeout_s: float = 600,
                  first_screen: Path | None = None) -> None:
    """Open ``name`` in ``page`` (a new page per notebook: one notebook in the document); save a screenshot of
    its first screen to ``first_screen``; with ``run``, Run All
    Cells from the Run menu, wait until every code cell has run (an execution count in its prompt), and save."""
    page.goto(lab.url(name))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => !document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"busy\"]')")
    page.wait_for_timeout(1500)  # the kernel starts; the toolbar settles
    if first_screen is not None:
        page.screenshot(path=str(first_screen))
    if not run:
        return
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(_ALL_RAN, timeout=timeout_s * 1000, polling=1000)
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)


def errors_in(lab: Lab, name: str) -> list[str]:
    """The error outputs of the saved ``name`` (after ``open_notebook``): ``"cell N: EName: message"``."""
    nb = json.loads((lab.work / "notebooks" / name).read_text())
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb["cells"])
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def move_slider(page, cell_text: str, *, presses: int = 1, screenshot: Path | None = None,
                timeout_s: float = 20) -> dict[str, Any]:
    """Move the slider of the widget in the code cell whose source contains ``cell_text``, ``presses`` steps right
    with the keyboard (as a learner's arrow keys), and return what its output shows before and after: ``{"before",
    "after"}``, each ``{"text", "images"}`` (the images' ``src``). ``AssertionError`` when no slider is there, or
    when the output does not change within ``timeout_s`` (a broken callback)."""
    cell = page.locator(".jp-CodeCell", has_text=cell_text).last
    cell.scroll_into_view_if_needed()
    handle = cell.locator(".widget-slider .noUi-handle").first
    assert handle.count() == 1, f"no widget slider in the cell holding {cell_text!r}"
    out = cell.locator(".jupyter-widgets.widget-output").last  # interact's / interactive's output widget

    def shown() -> dict[str, Any]:
        return {"text": out.inner_text(), "images": [i.get_attribute("src") for i in out.locator("img").all()]}

    from playwright.sync_api import TimeoutError as PageTimeout

    before = shown()
    handle.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    try:
        page.wait_for_function(
            "([el, old]) => el.innerText !== old[0] || [...el.querySelectorAll('img')].map(i => i.src).join() "
            "!== old[1]", arg=[out.element_handle(), [before["text"], ",".join(s or "" for s in before["images"])]],
            timeout=timeout_s * 1000)
    except PageTimeout:
        raise AssertionError(f"moving the slider in the cell holding {cell_text!r} changed nothing in its output "
                             f"within {timeout_s:g} s: its callback is broken or ignores the value") from None
    page.wait_for_timeout(500)
    if screenshot is not None:  # the widget and what it shows, as the learner sees it under the cell
        shown_widget = cell.locator(".jp-OutputArea-child", has=page.locator(".widget-slider")).last
        shown_widget.scroll_into_view_if_needed()
        shown_widget.screenshot(path=str(screenshot))
    return {"before": before, "after": shown()}


def main(argv: list[str] | None = None) -> int:
    """``--out DIR``: 02's pair browser and 01's beta slider after a move, and 02's first screen, as PNGs."""
    from playwright.sync_api import sync_playwright

    from helpers.infra.files import write_bytes

    ap = argparse.ArgumentParser(prog="python -m helpers.course.lab", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/figures")
    a = ap.parse_args(argv)
    out = Path(a.out)
    nbs = [ROOT / "notebooks" / n for n in ("01_dpo_math_and_loss.ipynb", "02_hh_rlhf_formatting.ipynb")]
    with tempfile.TemporaryDirectory(prefix="lab-") as tmp, Lab(nbs, Path(tmp)) as lab, sync_playwright() as p:
        b = browser(p)
        shots = {}
        for name, text, key in (("02_hh_rlhf_formatting.ipynb", "def show_pair", "lab_02_pair_browser.png"),
                                ("01_dpo_math_and_loss.ipynb", "def draw_loss_and_weight", "lab_01_beta_slider.png")):
            first = Path(tmp) / f"first-{key}"
            page = b.new_page(viewport={"width": 1400, "height": 1000})  # one notebook per page
            open_notebook(page, lab, name, first_screen=first)
            if errors := errors_in(lab, name):
                raise RuntimeError(f"{name}: {errors}")
            move_slider(page, text, presses=3, screenshot=Path(tmp) / key)
            shots[key] = Path(tmp) / key
            shots[f"{key[:7]}first_screen.png"] = first  # lab_02_first_screen.png, lab_01_first_screen.png
        b.close()
        for key, f in shots.items():
            write_bytes(out / key, f.read_bytes())
            print(f"-> {out / key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
