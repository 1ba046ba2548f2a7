"""Publishing the course for Colab: the notebooks' first cell, and ``make publish URL=<git url> [REF=<tag>]``.

``publish`` stamps the course's git URL (and ref) into the first code cell of every notebook, and writes one
"Open in Colab" badge per notebook into each title cell and into README.md (between the ``colab-badges`` markers).
An instructor who forks the course runs it once, commits, and shares the badges:

    make publish URL=https://github.com/me/dpo-course REF=v1.0  # = python -m helpers.course.publish --url ... --ref ...

The first cell (``FIRST_CELL``) is plain Python that runs before ``helpers`` is importable. On Colab it clones the
course into ``./dpo-course`` (the folder Colab starts in) unless that clone exists, installs
``requirements-colab.txt`` with Colab's own versions of ``helpers.infra.colab.PROTECTED`` as constraints, then
``requirements-colab-nodeps.txt`` without dependencies, once per runtime; everywhere it makes ``helpers`` importable.
Rerunning it (after a kernel restart, or from another notebook on the same runtime) reuses the clone and the install.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from helpers.infra.colab import PROTECTED, REPLACEABLE

__all__ = ["FIRST_CELL", "first_cell", "github_repo", "badge", "publish", "main", "NOTEBOOK_GLOB"]

NOTEBOOK_GLOB = "notebooks/[0-9][0-9]_*.ipynb"
BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
README_START, README_END = "<!-- colab-badges -->", "<!-- /colab-badges -->"

FIRST_CELL = '''\
# Setup. On Colab: fetch this course once per runtime and install only what Colab lacks. Elsewhere: nothing to install.
COURSE_REPO = {url!r}  # the course's git URL, stamped by `make publish URL=...`; env var DPO_COURSE_REPO overrides it
COURSE_REF = {ref!r}  # a tag or commit to check out ("": the default branch)
import os, subprocess, sys

ROOT = next((os.path.abspath(d) for d in (".", "..", "dpo-course")
             if os.path.isfile(os.path.join(d, "helpers", "__init__.py"))), None)
ON_COLAB = "google.colab" in sys.modules
if ROOT is None and ON_COLAB:
    url = os.environ.get("DPO_COURSE_REPO") or COURSE_REPO
    if not url:
        raise RuntimeError("Which course? Set COURSE_REPO at the top of this cell (or os.environ['DPO_COURSE_REPO']) "
                           "to the course's git URL. Instructors stamp it once with `make publish URL=...` (README).")
    ROOT, partial = os.path.abspath("dpo-course"), os.path.abspath("dpo-course.partial")
    subprocess.run(["rm", "-rf", partial], check=True)
    subprocess.run(["git", "clone", "--quiet", url, partial], check=True)
    if COURSE_REF:
        subprocess.run(["git", "-C", partial, "checkout", "--quiet", COURSE_REF], check=True)
    os.rename(partial, ROOT)  # only a complete clone gets the name that later runs look for
    print(f"cloned {{url}}{{' @ ' + COURSE_REF if COURSE_REF else ''}} into {{ROOT}}")
elif ROOT is not None:
    print(f"course folder: {{ROOT}}")
if ON_COLAB and os.path.exists(os.path.join(ROOT, ".colab-installed")):
    print("packages: already installed on this runtime")
elif ON_COLAB:
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None
    keep = [f"{{n}}=={{installed(n)}}" for n in {protected!r} if installed(n)]  # Colab's own versions stay
    with open(os.path.join(ROOT, ".colab-constraints.txt"), "w") as f:
        f.write("\\n".join(keep) + "\\n")
    replaceable = {replaceable!r}  # (distribution, module): Colab has them, the install may replace them
    before = {{d: installed(d) for d, _ in replaceable}}
    subprocess.run(["pip", "install", "-q", "-r", "requirements-colab.txt", "-c", ".colab-constraints.txt"],
                   cwd=ROOT, check=True)
    subprocess.run(["pip", "install", "-q", "--no-deps", "-r", "requirements-colab-nodeps.txt"], cwd=ROOT, check=True)
    open(os.path.join(ROOT, ".colab-installed"), "w").close()
    importlib.invalidate_caches()
    stale = [m for d, m in replaceable if m in sys.modules and installed(d) != before[d]]
    if stale:  # an old copy is loaded while the new one is on disk: the next import of it would fail
        print(f"packages: installed, but this runtime had already imported the old {{', '.join(stale)}} (loaded "
              "before this cell ran). Restarting the runtime now; when it is back, run the notebook again (Run "
              "all): the install is skipped.", flush=True)
        os.kill(os.getpid(), 9)  # Colab's own way to restart a runtime
    print("packages: installed (Colab's torch, numpy and kernel packages kept)")
if ROOT is not None:
    os.chdir(os.path.join(ROOT, "notebooks"))  # the notebooks' relative paths (../runs, ../data) start here
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # import helpers without installing it
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
'''


def first_cell(url: str = "", ref: str = "") -> str:
    """The first code cell of every notebook, with ``url``/``ref`` as the defaults it clones."""
    for name, value in (("url", url), ("ref", ref)):
        if not isinstance(value, str) or any(c in value for c in "\n\r'\"\\"):
            raise ValueError(f"{name} must be a string without quotes, backslashes or line breaks, got {value!r}")
    return FIRST_CELL.format(url=url, ref=ref, protected=PROTECTED, replaceable=REPLACEABLE).rstrip("\n")


def github_repo(url: str) -> str | None:
    """``owner/name`` of a GitHub URL (https, ssh or git@ form), else None (Colab opens notebooks from GitHub)."""
    m = re.match(r"^(?:https?://|ssh://git@|git@)github\.com[:/]([\w.-]+)/([\w.-]+?)(?:\.git)?/?$", url.strip())
    return f"{m.group(1)}/{m.group(2)}" if m else None


def badge(repo: str, ref: str, notebook: str) -> str:
    """A Markdown "Open in Colab" badge for ``notebooks/<notebook>`` of GitHub ``repo`` at ``ref``."""
    return f"[![Open In Colab]({BADGE_SVG})](https://colab.research.google.com/github/{repo}/blob/{ref}/notebooks/{notebook})"


def _title_with_badge(source: str, line: str | None) -> str:
    lines = [x for x in source.split("\n") if not x.startswith("[![Open In Colab]")]
    if line:
        lines.insert(1, line)  # right under the "# NN · title" line
    return "\n".join(lines)


def publish(url: str, ref: str = "", root: str | Path = ".") -> list[str]:
    """Stamp ``url``/``ref`` into every notebook's first code cell and write the badges; returns what changed.

    Idempotent: publishing the same URL twice changes nothing the second time. A URL that is not on GitHub is
    stamped, but no badge is written (Colab's "open from GitHub" needs a GitHub repository); that is printed.
    """
    import nbformat

    if not url or not isinstance(url, str):
        raise ValueError(f"url must be the course's git URL, got {url!r}")
    root = Path(root)
    readme = root / "README.md"
    notebooks = sorted(root.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise ValueError(f"root must be the course folder (holding {NOTEBOOK_GLOB}), got {root}")
    text = readme.read_text() if readme.exists() else ""
    if README_START not in text or README_END not in text:
        raise ValueError(f"root must hold a README.md with a '{README_START}' ... '{README_END}' block for the "
                         f"badges; {readme} has none")
    repo = github_repo(url)
    if repo is None:
        print(f"NOTE: {url} is not a GitHub URL: the first cells clone it, but no Open-in-Colab badge is written")
    badge_ref = ref or "main"
    changed = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = next(c for c in nb.cells if c.cell_type == "code")
        title = next(c for c in nb.cells if c.cell_type == "markdown")
        new_code = first_cell(url, ref)
        new_title = _title_with_badge(title.source, badge(repo, badge_ref, path.name) if repo else None)
        if (code.source, title.source) != (new_code, new_title):
            code.source, title.source = new_code, new_title
            nbformat.write(nb, path)
            changed.append(str(path.relative_to(root)))
    rows = "\n".join(f"| {p.stem} | {badge(repo, badge_ref, p.name)} |" for p in notebooks) if repo else \
        f"(published from {url}, which is not on GitHub: open the notebooks in Colab with File > Upload notebook)"
    block = f"{README_START}\n| notebook | open |\n|---|---|\n{rows}\n{README_END}" if repo else \
        f"{README_START}\n{rows}\n{README_END}"
    new_text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    if new_text != text:
        readme.write_text(new_text)
        changed.append("README.md")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stamp the course's git URL into the notebooks; write Colab badges.")
    p.add_argument("--url", required=True, help="git URL of the course (e.g. https://github.com/you/dpo-course)")
    p.add_argument("--ref", default="", help="tag, branch or commit the notebooks check out (default: the default "
                                             "branch; badges then point at 'main')")
    p.add_argument("--root", default=".", help="the course folder")
    a = p.parse_args(argv)
    try:
        changed = publish(a.url, a.ref, a.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("updated: " + (", ".join(changed) if changed else "nothing (already published with these values)"))
    print("commit these files and push; the badges open the notebooks in Colab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
