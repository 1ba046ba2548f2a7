"""helpers.infra.files: files and folders written atomically, never over something the course did not make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.infra.files import MARKER, building_dir

ROOT = Path(__file__).resolve().parents[1]

_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from helpers.infra.files import building_dir
for i in range(int(sys.argv[2])):
    with building_dir(sys.argv[1], kind="race") as tmp:
        for k in range(20):  # a folder of several files, as a saved split is
            (tmp / f"part-{{k}}").write_text(sys.argv[3] * 1000)
"""


def test_racing_builders_of_one_folder_all_succeed_and_leave_one_complete_folder(tmp_path):
    """Issue 35: two processes saving notebook 02's splits into one folder: 4 of 12 saves failed ("Directory not
    empty") and 4 temporary copies were left behind."""
    out = tmp_path / "02_hh"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT)))
    procs = [subprocess.Popen([sys.executable, str(script), str(out), "6", str(i)], stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02_hh", "writer.py"], "no temporary folder is left"
    parts = sorted(out.glob("part-*"))
    assert len(parts) == 20 and len({p.read_text() for p in parts}) == 1, "one writer's folder, whole"
    assert json.loads((out / MARKER).read_text()) == {"kind": "race"}


def test_a_folder_the_course_did_not_make_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    ran = []
    with pytest.raises(ValueError, match=r"mine already holds files that are not an earlier splits of this course"):
        with building_dir(out, kind="splits") as tmp:
            ran.append(tmp)
    assert not ran and (out / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    with building_dir(out, kind="splits", also_ours=("thesis.tex",)) as tmp:  # what an earlier version left
        (tmp / "a").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a"]


def test_an_earlier_build_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "built"
    with building_dir(out, kind="k") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), building_dir(out, kind="k") as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("interrupted midway")
    assert (out / "v").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["built"]
    with pytest.raises(ValueError, match="earlier other"):  # another kind's folder is not replaced either
        with building_dir(out, kind="other"):
            pass
    with building_dir(out, kind="k") as tmp:
        (tmp / "v").write_text("2")
    assert (out / "v").read_text() == "2"


def test_saved_splits_never_replace_a_folder_of_something_else(tmp_path):
    from helpers.worlds.splits import TOY, resolve_hh, save_splits

    out = tmp_path / "runs"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    splits = resolve_hh(source=TOY)
    with pytest.raises(ValueError, match="not an earlier saved splits"):
        save_splits(splits, out)
    assert (out / "notes.txt").read_text() == "keep me"
    save_splits(splits, tmp_path / "02_hh")
    save_splits(splits, tmp_path / "02_hh")  # its own earlier save is replaced
    assert (tmp_path / "02_hh" / "report.json").is_file()


_REWRITER = """
import json, sys
sys.path.insert(0, {root!r})
from helpers.infra.files import write_json
for i in range(int(sys.argv[2])):
    write_json(sys.argv[1], {{"i": i, "rows": list(range(300))}})
"""


def test_a_reader_never_sees_half_a_file_while_another_process_rewrites_it(tmp_path):
    """Issue 35: the sweep cache was written in place; a reader saw invalid JSON in 53,842 of 56,850 reads while a
    writer rewrote one file."""
    target = tmp_path / "entry.json"
    script = tmp_path / "rewriter.py"
    script.write_text(_REWRITER.format(root=str(ROOT)))
    target.write_text(json.dumps({"i": -1, "rows": list(range(300))}))
    writer = subprocess.Popen([sys.executable, str(script), str(target), "3000"])
    reads = bad = 0
    while writer.poll() is None:
        try:
            json.loads(target.read_text())
        except ValueError:
            bad += 1
        reads += 1
    assert writer.returncode == 0
    assert reads > 50 and bad == 0, f"{bad} of {reads} reads saw a half-written file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.json", "rewriter.py"], "no temporary file left"
