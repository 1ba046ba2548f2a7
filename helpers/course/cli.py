"""The command line of notebook 03's recipe: every ``DPORecipe`` field a flag, ``run_recipe`` behind it.

    python -m helpers.course.cli --offline --output-dir runs/train                 # offline default, CPU
    python -m helpers.course.cli --model HuggingFaceTB/SmolLM2-135M-Instruct --data runs/notebooks/02_hh
    accelerate launch --num_processes 2 -m helpers.course.cli --backend transformers ...  # several GPUs (DDP)

Flags: ``--beta``, ``--learning-rate``, ``--max-steps``, ``--lora-r`` ... (``--help`` lists them with their defaults);
``--offline`` starts from the toy world's measured settings (explicit flags still win); ``--stop-after N`` simulates
pressing stop after step N. Exit codes: 0 done, 2 bad arguments or data, 3 output directory locked, 130 interrupted.
This module imports no ML library before it has decided whether ``unsloth`` must be imported first.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from helpers.recipe import OFFLINE, TOY, DPORecipe, run_recipe, toy_style

__all__ = ["main"]


_NONE = "none"  # what `--max-prompt-length none` parses to before it becomes None


def _int_or_none(v: str):
    if v.strip().lower() == _NONE:
        return _NONE
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'none', got {v!r}") from None


def _check_data_args(given: dict[str, Any]) -> str | None:
    """A mistyped ``--data`` must not become a new folder (or the toy world): what is wrong, or None."""
    data = given.get("data")
    if data is None or data == TOY:
        return None
    path = Path(data)
    if path.is_file():
        return (f"--data {data} is a file; --data takes a folder of saved splits (notebook 02's output) or 'toy'. "
                f"For a raw HH-RLHF .jsonl[.gz] file use --data-source {data} --data <folder to save the splits in>")
    if not path.exists() and "data_source" not in given:
        return (f"--data {data} does not exist. Give notebook 02's saved splits folder, or 'toy', or add "
                f"--data-source <hub id or .jsonl file> to build the splits there")
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="LoRA DPO with TRL (notebook 03's recipe), measured on held-out pairs.")
    defaults = DPORecipe()
    for f in dataclasses.fields(DPORecipe):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        text = f.metadata["help"]  # DPORecipe's own help text, written once beside the field
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{text} (default {default})")
        elif isinstance(default, tuple):
            p.add_argument(flag, nargs="+", default=None, help=f"{text} (default {' '.join(default)})")
        elif f.name == "max_prompt_length":
            p.add_argument(flag, type=_int_or_none, default=None,
                           help=f"{text}; 'none' keeps all (default {default!r})")
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"{text} (default {default!r})")
    p.add_argument("--offline", action="store_true",
                   help="the offline default: toy SFT model and toy data with their measured settings "
                        "(explicit flags still win)")
    p.add_argument("--stop-after", type=int, default=None, help="simulate an interrupt after this step")
    return p


def main(argv: list[str] | None = None) -> int:
    a = vars(_parser().parse_args(argv))
    stop_after, offline = a.pop("stop_after"), a.pop("offline")
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in a.items() if v is not None}
    if given.get("max_prompt_length") == _NONE:
        given["max_prompt_length"] = None
    problem = _check_data_args(given)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        recipe = DPORecipe(**{**(OFFLINE if offline else {}), **given})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from helpers.models import unsloth_importable  # imports no ML library

    if recipe.backend == "unsloth" or (recipe.backend == "auto" and unsloth_importable()):
        import unsloth  # noqa: F401  (before transformers/trl)
    from helpers.infra.lock import OutputDirLocked

    try:
        run_recipe(recipe, stop_after=stop_after, **toy_style(recipe))
    except KeyboardInterrupt:
        return 130
    except OutputDirLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:  # bad data, lengths, checkpoints: said plainly, no traceback
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
