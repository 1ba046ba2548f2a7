"""Keep known, harmless library noise out of notebook cells: by logger and message, nothing else.

Importing ``helpers`` installs these filters, before the notebooks import torch, transformers or unsloth. Each one
drops only records of one logger whose message contains one of the listed fragments; every other message, warning
and error still shows. The messages dropped here say that optional CUDA/kernel extensions cannot load on this
machine (a CPU, or a GPU they were not built for) and a torch deprecation inside torchao: nothing a learner can act on.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

__all__ = ["NOISE", "LENGTH_NOISE", "ALL_NOISE", "install", "progress_bars_off"]

# logger name -> message fragments to drop (seen on the pinned stack, CPU and GPU)
NOISE: dict[str, tuple[str, ...]] = {
    "torchao": ("Failed to load",),  # torchao's optional C++/CUDA extensions (_C_mxfp8, _C_cutlass_90a)
    "torch.utils._pytree": ("is an Enum subclass",),  # torchao registers Enums the old way (a deprecation)
    "bitsandbytes.backends.cpu.ops": ("No module named 'kernels'",),  # optional HF `kernels` package
}
# Said once per tokenizer when a text is tokenized whole beyond model_max_length. The course does that on purpose:
# notebook 02 measures whole HH pairs, ``check_lengths`` drops long prompts and TRL truncates to ``max_length``, each
# reported with its counts; the online output showed it seven times, telling the learner nothing they can act on.
LENGTH_NOISE: dict[str, tuple[str, ...]] = {
    "transformers.tokenization_utils_base": ("Token indices sequence length is longer than",),
}
ALL_NOISE = {**NOISE, **LENGTH_NOISE}


class _DropFragments(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(f in msg for f in self.fragments)


def install() -> None:
    """Attach the filters (idempotent)."""
    for name, fragments in ALL_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropFragments) for f in logger.filters):
            logger.addFilter(_DropFragments(fragments))


@contextmanager
def progress_bars_off():
    """Silence the progress bars of transformers (weight loading) and datasets (tokenizing, filtering, saving) for
    a block, restoring their previous state after it. Used around steps that take a second or two, so that a cell
    shows one bar: that of its long loop (training, a sweep). Downloads (huggingface_hub) keep their bars."""
    import datasets
    import transformers.utils.logging as tf_logging

    ds_was_on, tf_was_on = not datasets.are_progress_bars_disabled(), tf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ds_was_on:
            datasets.enable_progress_bars()
        if tf_was_on:
            tf_logging.enable_progress_bar()
