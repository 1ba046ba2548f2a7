"""helpers.worlds.splits: where HH rows come from (hub, file, toy fallback), saved splits and when they are stale."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from helpers.worlds.splits import load_hh, read_jsonl

H, A = "\n\nHuman:", "\n\nAssistant:"


# --------------------------------------------------------------------------------- data: provenance, typos, empty
def test_saved_splits_are_rebuilt_when_asked_for_another_source_or_limit(tmp_path, shared_hh_path, capsys):
    """Defect 2: splits built from an HH file with limit=100 were returned for source="toy"."""
    from helpers.worlds.splits import TOY, load_or_build_splits

    out = tmp_path / "02_hh"
    hh = load_or_build_splits(out, source=str(shared_hh_path), limit=100)
    assert len(hh["train"]) + len(hh["test"]) <= 100
    capsys.readouterr()
    toy = load_or_build_splits(out, source=TOY)
    assert "saved splits were built for source=" in capsys.readouterr().out
    assert len(toy["train"]) > 100 and json.loads((out / "report.json").read_text())["source"] == TOY
    load_or_build_splits(out, source=TOY)
    assert "rebuilding" not in capsys.readouterr().out  # the same request reuses them
    load_or_build_splits(out, source=TOY, limit=50)
    assert "limit=None, not limit=50" in capsys.readouterr().out


def test_a_changed_local_source_file_is_noticed(tmp_path, shared_hh_path, capsys):
    from helpers.worlds.splits import load_or_build_splits

    src = tmp_path / "hh.jsonl"
    src.write_text("".join(shared_hh_path.read_text().splitlines(keepends=True)[:60]))
    load_or_build_splits(tmp_path / "s", source=str(src))
    src.write_text("".join(shared_hh_path.read_text().splitlines(keepends=True)[60:140]))
    capsys.readouterr()
    load_or_build_splits(tmp_path / "s", source=str(src))
    assert "fingerprint=" in capsys.readouterr().out


def test_a_mistyped_local_source_is_an_error_and_only_the_default_falls_back(tmp_path, monkeypatch):
    """Defect 3: a missing /path/x.json was taken for a hub id and silently became the toy world."""
    from helpers.infra.runtime import HubUnavailableError
    from helpers.worlds.splits import DEFAULT_SOURCE, TOY, resolve_hh

    for typo in (str(tmp_path / "missing.json"), str(tmp_path / "missing.jsonl"), "./data/nope", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resolve_hh(typo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError):
        resolve_hh("someone/other-dataset")  # named explicitly: no silent toy world
    fb = resolve_hh(DEFAULT_SOURCE)
    assert fb.source == TOY and "fallback" in fb.note


def test_a_source_whose_rows_are_all_dropped_is_an_error_at_build_time(tmp_path):
    """Defect 7: an empty train split was saved, and every later run failed inside datasets."""
    from helpers.worlds.splits import load_or_build_splits, resolve_hh

    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\n"
                                                                                   "Assistant: go away"}) + "\n")
    with pytest.raises(ValueError, match="train split is empty"):
        resolve_hh(one)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"chosen": "no markers", "rejected": "x"}) + "\n" for _ in range(20)))
    with pytest.raises(ValueError, match=r"split is empty \(\d+ rows read, all dropped: \{'no_leading_human'"):
        resolve_hh(bad)
    with pytest.raises(ValueError, match="empty"):
        load_or_build_splits(tmp_path / "splits", source=str(bad))
    assert not (tmp_path / "splits").exists() or not any((tmp_path / "splits").iterdir())


def test_empty_truncated_and_invalid_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no rows"):
        load_hh(empty)
    row = json.dumps({"chosen": f"{H} a{A} b", "rejected": f"{H} a{A} c"}) + "\n"
    gz = tmp_path / "rows.jsonl.gz"
    gz.write_bytes(gzip.compress((row * 500).encode()))
    assert len(load_hh(gz)) == 500 and len(load_hh(gz, limit=7)) == 7
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"cut\.jsonl\.gz: cannot be read completely"):
        load_hh(cut)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(row + "{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_hh(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="limit"):
        load_hh(gz, limit=0)


def test_hub_source_fails_fast_when_offline(monkeypatch):

    from helpers.infra.runtime import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_hh("Anthropic/hh-rlhf", data_dir="helpful-base")
    assert time.perf_counter() - t0 < 2


# --- source resolution, fallback, save and rebuild ---------------------------------------------------------------
def test_hub_source_falls_back_to_the_toy_world_offline(monkeypatch, capsys):
    from helpers.worlds.splits import TOY, resolve_hh

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = resolve_hh("Anthropic/hh-rlhf", limit=50, test_limit=20)
    assert s.source == TOY and "fallback" in s.note and "HF_HUB_OFFLINE" in s.note
    assert len(s.raw["train"]) == 50 and len(s.raw["test"]) == 20
    assert "Falling back" in capsys.readouterr().out


def test_local_file_is_split_deterministically(shared_hh_path):
    from helpers.worlds.splits import resolve_hh

    a = resolve_hh(shared_hh_path, seed=1)
    b = resolve_hh(shared_hh_path, seed=1)
    assert a.raw == b.raw and len(a.raw["test"]) == 120 and len(a.raw["train"]) == 1080
    rows = load_hh(shared_hh_path)
    assert sorted(map(json.dumps, a.raw["train"] + a.raw["test"])) == sorted(map(json.dumps, rows))  # a partition
    assert resolve_hh(shared_hh_path, seed=2).raw["test"] != a.raw["test"]


def test_load_or_build_rebuilds_when_absent_then_reuses(tmp_path, capsys):
    from helpers.worlds.splits import load_or_build_splits

    out = tmp_path / "02_hh"
    first = load_or_build_splits(out, source="toy", limit=40, test_limit=10)
    assert "rebuilding" in capsys.readouterr().out
    assert (out / "report.json").exists() and 30 < len(first["train"]) <= 40
    again = load_or_build_splits(out, source="toy")
    assert "rebuilding" not in capsys.readouterr().out
    assert again["train"].to_list() == first["train"].to_list()


def test_saved_toy_splits_are_rebuilt_when_the_toy_files_change(tmp_path, monkeypatch, capsys):
    from helpers.worlds import splits
    from helpers.worlds.splits import load_or_build_splits

    out = tmp_path / "02_hh"
    load_or_build_splits(out, source="toy", limit=30, test_limit=10)
    capsys.readouterr()
    load_or_build_splits(out, source="toy")
    assert "rebuilding" not in capsys.readouterr().out
    monkeypatch.setattr(splits, "_toy_fingerprint", lambda: "changed-data")
    load_or_build_splits(out, source="toy")
    assert "stale toy data" in capsys.readouterr().out


def test_a_bad_row_is_named_by_its_file_and_line_not_its_place_in_the_shuffled_split(tmp_path, shared_hh_path):
    """Issue 35: a bad row on line 12 of a local file was reported as "row 10" (its place in the shuffled split),
    naming neither file nor split."""
    import gzip

    from helpers.worlds.splits import resolve_hh

    opener = gzip.open if shared_hh_path.suffix == ".gz" else open
    with opener(shared_hh_path, "rt", encoding="utf-8") as f:
        good = [next(f) for _ in range(20)]
    lines = good[:5] + ["\n"] + good[5:10] + ['{"chosen": 5, "rejected": "Human: hi"}\n'] + good[10:]
    bad = tmp_path / "mine.jsonl"
    bad.write_text("".join(lines))  # the bad row is on line 12 (a blank line 6 before it)
    with pytest.raises(ValueError, match=f"{bad}, line 12: "):
        resolve_hh(source=str(bad))
