"""Taking the trained model out and back in: a merged 16-bit model (adapter folded in), a push to the Hugging Face
hub, and ``trained_adapter``, which finds notebook 03's adapter (a folder, Drive, a hub repository) or trains it.

Notebook 03's last section calls these (off by default). Both start from what notebook 03 saved (``adapter/`` and
``metrics.json`` in its output folder), so they also work after a restart or on another runtime.

The hub repository that ``push_to_hub`` writes is a plain PEFT adapter repository (``adapter_config.json`` at its
top, loadable with ``PeftModel.from_pretrained(base, "<you>/<repo>")``) or a plain transformers model (merged), plus
``metrics.json``: notebook 05 accepts such a repository id as its ``TRAIN_DIR``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["save_merged", "push_to_hub", "REPO_ID", "is_hub_id", "trained_adapter"]

REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]{1,96}$")  # "name" (under the token's user) or "owner/name"
_DTYPES = ("float16", "bfloat16", "float32")


def is_hub_id(source: str | Path) -> bool:
    """``source`` names a hub repository (``owner/name``) rather than a folder: no such folder here, one slash,
    not a relative path (``./x``, ``../x``)."""
    name = str(source)
    return (not Path(source).exists() and name.count("/") == 1 and bool(REPO_ID.match(name))
            and not name.startswith("."))


def save_merged(adapter_dir: str | Path, base_model: str | Path, out_dir: str | Path, *,
                dtype: str = "float16") -> Path:
    """Fold the LoRA adapter in ``adapter_dir`` into ``base_model`` and save a plain transformers model + tokenizer.

    The merge is computed in fp32 (W + B·A·alpha/r), then cast to ``dtype`` ("float16", as Unsloth's
    ``save_pretrained_merged(..., save_method="merged_16bit")``; "bfloat16"; or "float32"). The result loads with
    ``AutoModelForCausalLM.from_pretrained(out_dir)`` and needs neither peft nor the base model. Written to a
    temporary folder and renamed when complete. Returns ``out_dir``.
    """
    import torch

    from helpers.compare import load_policy
    from helpers.infra.quiet import progress_bars_off

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    out = Path(out_dir)
    model, tok = load_policy(adapter_dir, base_model)  # fp32 base + adapter; ValueError if no adapter
    merged = model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.config.torch_dtype = getattr(torch, dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with progress_bars_off():
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def push_to_hub(folder: str | Path, repo_id: str, *, token: str | None, private: bool = True,
                extra_files: dict[str, str | Path] | None = None, commit_message: str = "DPO course: notebook 03"
                ) -> str:
    """Upload ``folder`` (an adapter or a merged model) to the hub model repository ``repo_id`` and return its URL.

    ``token``: a write token (``helpers.infra.colab.hub_token``). ``extra_files``: name in the repository -> local file
    (e.g. ``{"metrics.json": ...}``). The repository is created (private by default) if it does not exist.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must be 'name' or 'owner/name' (letters, digits, '-', '_', '.'), got {repo_id!r}")
    if not token:
        from helpers.infra.colab import hub_token

        raise ValueError(f"token is required to push: {hub_token()[1]}")
    if not folder.is_dir() or not any(folder.iterdir()):
        raise ValueError(f"folder {folder} does not exist or is empty: run the save cell first")
    api = HfApi(token=token)
    url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    full_id = getattr(url, "repo_id", None) or repo_id
    api.upload_folder(folder_path=str(folder), repo_id=full_id, repo_type="model", commit_message=commit_message)
    for name, path in (extra_files or {}).items():
        api.upload_file(path_or_fileobj=str(path), path_in_repo=name, repo_id=full_id, repo_type="model",
                        commit_message=commit_message)
    return str(url)


def trained_adapter(train_dir: str | Path, recipe=None) -> tuple[Path, dict[str, Any]]:
    """Notebook 03's trained adapter and its ``metrics.json``, for notebook 05: ``(adapter folder, metrics)``.

    ``train_dir`` is notebook 03's ``OUTPUT_DIR`` (``adapter/`` + ``metrics.json``, on this disk or on Google
    Drive), a folder holding a pushed adapter (``adapter_config.json`` + ``metrics.json``), or the hub id
    ``owner/name`` of a repository that notebook 03's export section pushed. When a local ``train_dir`` holds no
    adapter and ``recipe`` is given, the adapter is trained now with ``recipe`` (notebook 03's recipe, output in
    ``train_dir``), printing the expected time first and the measured time after; without ``recipe``:
    ``FileNotFoundError``.
    """
    p = Path(train_dir)
    for adapter in (p / "adapter", p):
        if (adapter / "adapter_config.json").exists() and (p / "metrics.json").exists():
            return adapter, json.loads((p / "metrics.json").read_text())
    name = str(train_dir)
    if is_hub_id(name):
        from huggingface_hub import snapshot_download

        from helpers.infra.runtime import require_hub

        require_hub(f"TRAIN_DIR={name!r} (a hub repository)")
        local = Path(snapshot_download(name))
        if not (local / "adapter_config.json").exists() or not (local / "metrics.json").exists():
            raise FileNotFoundError(f"hub repository {name} holds no adapter_config.json + metrics.json (push the "
                                    f"adapter with notebook 03's export section)")
        print(f"adapter: hub repository {name} -> {local}")
        return local, json.loads((local / "metrics.json").read_text())
    if recipe is None:
        raise FileNotFoundError(f"no trained adapter in {p} (adapter/ and metrics.json): run notebook 03, or give "
                                f"TRAIN_DIR as the hub id of a pushed adapter")
    from helpers.course.estimate import expected_time
    from helpers.recipe import run_recipe, toy_style

    recipe = recipe.replace(output_dir=str(p))
    print(f"NOTE: no trained adapter in {p}: training it now with notebook 03's recipe "
          f"({recipe.model}, {recipe.max_steps} steps). Expected: {expected_time(recipe)}.")
    t0 = time.perf_counter()
    run_recipe(recipe, **toy_style(recipe))
    print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min (loading and evaluation included)")
    return p / "adapter", json.loads((p / "metrics.json").read_text())
