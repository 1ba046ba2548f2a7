"""Publishing the course for Colab: the notebooks' first cell, and ``make publish URL=<git url> [REF=<tag>]``.

``publish`` stamps the course's git URL (and ref) into the first code cell of every notebook, and writes one
"Open in Colab" badge per notebook into each title cell and into README.md (between the ``colab-badges`` markers).
An instructor who forks the course runs it once, commits, and shares the badges:

    make publish URL=https://github.com/me/dpo-course REF=v1.0  # = python -m helpers.course.publish --url ... --ref ...

The first cell (``FIRST_CELL``, 12 lines, collapsed on Colab by its ``# @title`` as Unsloth's notebooks do) holds only
what must run before ``helpers`` is importable: find the course folder, or on Colab clone it into ``./dpo-course``
(the folder Colab starts in) unless that clone exists, and put it on the path. Then one call,
``helpers.infra.colab.setup_course``, does the rest: on Colab the install (``requirements-colab.txt`` with Colab's own
versions of ``PROTECTED`` as constraints, then ``requirements-colab-nodeps.txt`` without dependencies, once per
runtime, restarting the runtime if it replaced a module already loaded); everywhere the working folder. Rerunning it
(after a kernel restart, or from another notebook on the same runtime) reuses the clone and the install.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from helpers.infra.files import write_text

__all__ = ["FIRST_CELL", "first_cell", "github_repo", "badge", "publish", "main", "NOTEBOOK_GLOB"]

NOTEBOOK_GLOB = "notebooks/[0-9][0-9]_*.ipynb"
BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
README_START, README_END = "<!-- colab-badges -->", "<!-- /colab-badges -->"

FIRST_CELL = '''\
# @title Setup: find the course (on Colab: clone it once, install what Colab lacks) {{ display-mode: "form" }}
COURSE_REPO = {url!r}  # the course's git URL, stamped by `make publish URL=...`; env var DPO_COURSE_REPO overrides it
COURSE_REF = {ref!r}  # a tag or commit to check out ("": the default branch)
import os, shlex, subprocess, sys
ROOT = next((os.path.abspath(d) for d in (".", "..", "dpo-course") if os.path.isfile(f"{{d}}/helpers/__init__.py")), None)
if ROOT is None and "google.colab" in sys.modules:  # clone beside; only a complete clone gets the name looked for
    URL = os.environ.get("DPO_COURSE_REPO") or COURSE_REPO
    if not URL: raise RuntimeError("Which course? Set COURSE_REPO above (or env DPO_COURSE_REPO) to its git URL; `make publish URL=...` stamps it")
    subprocess.run(f"rm -rf dpo-course.partial && git clone -q {{shlex.quote(URL)}} dpo-course.partial && git -C dpo-course.partial checkout -q {{shlex.quote(COURSE_REF or 'HEAD')}}", shell=True, check=True)
    ROOT = os.path.abspath("dpo-course"); os.rename("dpo-course.partial", ROOT); print(f"cloned {{URL}} into {{ROOT}}")
sys.path.insert(0, ROOT or os.getcwd())  # helpers imports without installing it
from helpers.course import setup_course; setup_course(ROOT)  # on Colab the install (once per runtime); cd notebooks/
'''  # noqa: E501 (the cell's own lines: what a learner sees, collapsed on Colab)


def first_cell(url: str = "", ref: str = "") -> str:
    """The first code cell of every notebook, with ``url``/``ref`` as the defaults it clones."""
    for name, value in (("url", url), ("ref", ref)):
        if not isinstance(value, str) or any(c in value for c in "\n\r'\"\\"):
            raise ValueError(f"{name} must be a string without quotes, backslashes or line breaks, got {value!r}")
    return FIRST_CELL.format(url=url, ref=ref).rstrip("\n")


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
        write_text(readme, new_text)
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
