"""Loading tokenizers (and, with the offline-world issue, models) the same way for a hub id and a local directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["MODEL_ID", "load_tokenizer"]

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def load_tokenizer(
    name_or_path: str | Path = MODEL_ID,
    *,
    fallback_texts: Iterable[str] | None = None,
    fallback_vocab_size: int = 4096,
    verbose: bool = True,
):
    """A tokenizer with a pad token and a chat template, plus a note on where it came from.

    ``name_or_path`` is a local directory or a hub id. When it is a hub id and the hub is not usable (offline or
    unreachable) and ``fallback_texts`` is given, a ChatML byte-level BPE is trained on those texts instead
    (``helpers.tinymodel.train_tokenizer``) and a note says so; without ``fallback_texts`` it raises
    ``HubUnavailableError``. Returns ``(tokenizer, source)`` where ``source`` describes what was loaded.
    """
    from transformers import AutoTokenizer

    from helpers.runtime import HubUnavailableError, require_hub
    from helpers.tinymodel import CHATML_TEMPLATE, train_tokenizer

    path = Path(name_or_path)
    if path.is_dir():
        tok, source = AutoTokenizer.from_pretrained(path), f"local directory {path}"
    else:
        try:
            require_hub(f"tokenizer {name_or_path}")
            tok, source = AutoTokenizer.from_pretrained(str(name_or_path)), f"hub: {name_or_path}"
        except HubUnavailableError as e:
            if fallback_texts is None:
                raise
            tok = train_tokenizer(fallback_texts, vocab_size=fallback_vocab_size)
            source = f"offline fallback: ChatML BPE ({len(tok)} tokens) trained on the given texts; {e}"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    if verbose:
        print(f"tokenizer: {source}")
    return tok, source
