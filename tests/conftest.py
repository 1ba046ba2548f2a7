"""Shared fixtures: a tiny Llama + tokenizer built locally (no hub), and a few conversational preference pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

# real HH-RLHF rows, in ../shared beside the repository (never copied into it)
SHARED_HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test-0000-1199.jsonl"

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "I don't know, figure it out."),
    ("Can you help me bake bread?", "Sure! Mix flour, water, yeast and salt, then knead.", "No."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have six legs, like ants."),
    ("Say something kind.", "You are doing great, keep going!", "Whatever."),
    ("What is two plus two?", "Two plus two is four.", "Two plus two is five, obviously."),
    ("Recommend a book, please.", "Try 'The Hobbit' by Tolkien; it is a warm adventure.", "Read anything."),
]


# Fast tier (`make test-fast`): tests that carry none of the markers in pyproject.toml. Markers that follow from a
# fixture or a whole file are added here, so a new test that uses the real SmolLM2 or the toy SFT model is marked too.
_FIXTURE_MARKS = {"smollm2_dir": "slow", "toy_sft_dir": "toy_model"}
_FILE_MARKS = {"test_smollm2.py": "slow", "test_real_recipe.py": "slow", "test_hub.py": "hub",
               "test_suite.py": "notebook"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        marks = {m for f, m in _FIXTURE_MARKS.items() if f in getattr(item, "fixturenames", ())}
        if item.path.name in _FILE_MARKS:
            marks.add(_FILE_MARKS[item.path.name])
        for m in sorted(marks):
            item.add_marker(getattr(pytest.mark, m))


def conversational_pairs() -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in PAIRS
    ]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from helpers.infra.tinymodel import build_tiny_model

    texts = [t for triple in PAIRS for t in triple] * 4
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0, vocab_size=400)


@pytest.fixture(scope="session")
def shared_hh_path() -> Path:
    if not SHARED_HH.exists():
        pytest.fail(f"real HH-RLHF rows expected at {SHARED_HH} (../shared beside the repo)")
    return SHARED_HH


@pytest.fixture(scope="session")
def toy_sft_dir() -> Path:
    """The offline default reference model: the weights shipped under data/toy-sft-*/ (no training; a test that
    retrains them is tests/test_toy_model.py::test_a_rebuild_matches_the_shipped_weights)."""
    from helpers.worlds.toy_model import build_toy_sft_model

    return build_toy_sft_model(verbose=False)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once from the packaged GGUF into .cache/ (~20 s the first time)."""
    from helpers.infra.smollm2 import packaged_model_dir

    return packaged_model_dir(verbose=False)
