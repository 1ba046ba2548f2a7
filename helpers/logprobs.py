"""Masked per-token and per-sequence log-probabilities, without a full log_softmax copy of the logits.

The naive recipe ``log_softmax(logits).gather(-1, labels)`` materialises a second (B, T, V) tensor and autograd keeps
it for the backward pass. At SmolLM2's vocabulary (V = 49152) that copy dominates memory. ``_LabelLogProb`` computes
``logit[label] - logsumexp(logits)`` chunk by chunk, saves only the per-row logsumexp (B*T floats), and in backward
writes ``grad * (onehot(label) - softmax)`` straight into the gradient buffer, recomputing the softmax chunk by
chunk. Extra peak memory is therefore the gradient itself (unavoidable) plus one chunk. ``benchmarks/
bench_logprobs.py`` measures it against the naive recipe and TRL's ``selective_log_softmax``.

The one-token shift follows ``_get_batch_logps`` of the original DPO repository: ``logits[:, t]`` predicts
``labels[:, t + 1]``, positions whose label equals ``ignore_index`` count for nothing.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["token_logps", "sequence_logps", "pad_and_mask", "naive_sequence_logps", "saved_for_backward_bytes",
           "CHUNK_ELEMENTS"]

CHUNK_ELEMENTS = 1 << 23  # elements of logits processed at once (32 MB in fp32)


# The readable version first; the lean one (the same numbers, a fraction of the memory) after it.
def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The readable recipe, ``(B,)``: summed log-probs of the labelled tokens, ``log_softmax(logits).gather(labels)``.

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` with ``ignore_index`` on prompt and padding. ``logits[:, t]``
    predicts ``labels[:, t + 1]``. ``sequence_logps`` below computes the same numbers without this version's second
    ``(B, T-1, V)`` tensor, which autograd keeps for the backward pass (tests/test_logprobs.py checks they agree).
    """
    lab = labels[:, 1:]  # (B, T-1): the token each position predicts
    mask = lab != ignore_index  # (B, T-1): completion tokens only
    logp = torch.log_softmax(logits[:, :-1].float(), -1)  # (B, T-1, V): the copy the lean version avoids
    per_tok = logp.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1)  # (B, T-1)
    return (per_tok * mask).sum(-1)  # (B,)


def _rows_per_chunk(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // vocab)


class _LabelLogProb(torch.autograd.Function):
    """log p(target | row) for every row of a 2-D logits matrix.

    forward(logits (N, V), target (N,) int64, weight (N,) bool) -> (N,) fp32; rows with weight False give 0.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n, v = logits.shape
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        picked = logits.gather(1, target[:, None]).squeeze(1).float()  # (N,)
        step = _rows_per_chunk(v)
        for s in range(0, n, step):
            lse[s : s + step] = torch.logsumexp(logits[s : s + step].float(), dim=-1)
        out = torch.where(keep, picked - lse, torch.zeros_like(lse))
        ctx.save_for_backward(logits, target, keep, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, target, keep = ctx.saved_tensors[:3]
        lse = ctx.saved_tensors[3]
        n, v = logits.shape
        g = torch.where(keep, grad_out.float(), torch.zeros_like(grad_out, dtype=torch.float32))  # (N,)
        grad = torch.empty_like(logits)
        step = _rows_per_chunk(v)
        same_dtype = logits.dtype == torch.float32
        for s in range(0, n, step):
            e = min(s + step, n)
            if same_dtype:  # write softmax straight into the gradient buffer: no temporary
                chunk = grad[s:e]
                torch.sub(logits[s:e], lse[s:e, None], out=chunk)
                chunk.exp_().mul_(-g[s:e, None])
                chunk.scatter_add_(1, target[s:e, None], g[s:e, None])
            else:  # low precision in: compute this chunk in fp32, then cast
                chunk = (logits[s:e].float() - lse[s:e, None]).exp_().mul_(-g[s:e, None])
                chunk.scatter_add_(1, target[s:e, None], g[s:e, None])
                grad[s:e] = chunk.to(logits.dtype)
        return grad, None, None


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ValueError(f"logits must be a tensor of shape (B, T, V), got {getattr(logits, 'shape', logits)!r}")
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape (B, T) = {tuple(logits.shape[:2])}, got {getattr(labels, 'shape', labels)!r}"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16):
        raise ValueError(f"labels must be signed integer token ids (int64/int32/int16, so that ignore_index -100 "
                         f"fits), got dtype {labels.dtype}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be floating point, got dtype {logits.dtype}")


def token_logps(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Per-token log p(labels[:, t+1] | prefix up to t).

    Args:
        logits: ``(B, T, V)`` any float dtype (computed in fp32).
        labels: ``(B, T)`` token ids; ``ignore_index`` marks positions that do not count (prompt, padding).

    Returns:
        ``(B, T-1)`` fp32; entry t is log p(labels[:, t+1]) under ``logits[:, t]``, 0 where that label is ignored.
    """
    _check(logits, labels)
    b, t, v = logits.shape
    if t < 2:
        return logits.new_zeros((b, max(t - 1, 0)), dtype=torch.float32)
    # Shift by padding the targets, not by slicing the logits: logits[:, :-1] cannot be flattened without a copy.
    target = torch.full_like(labels, ignore_index)
    target[:, :-1] = labels[:, 1:]
    keep = target != ignore_index  # (B, T)
    if bool(((target < 0) | (target >= v))[keep].any()):
        raise ValueError(f"labels must be in [0, {v}) or equal ignore_index={ignore_index}")
    flat = logits if logits.is_contiguous() else logits.contiguous()
    out = _LabelLogProb.apply(
        flat.view(b * t, v), target.masked_fill(~keep, 0).reshape(-1), keep.reshape(-1)
    )  # (B*T,)
    return out.view(b, t)[:, :-1]


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100, average: bool = False
) -> torch.Tensor:
    """Sum (or mean) of the masked per-token log-probs of each sequence.

    Args:
        logits: ``(B, T, V)``.
        labels: ``(B, T)``; positions equal to ``ignore_index`` are excluded.
        average: divide by the number of counted tokens (rows with none give 0, not NaN).

    Returns:
        ``(B,)`` fp32.
    """
    per_token = token_logps(logits, labels, ignore_index=ignore_index)  # (B, T-1)
    total = per_token.sum(-1)
    if not average:
        return total
    count = (labels[:, 1:] != ignore_index).sum(-1).clamp(min=1)
    return total / count


def pad_and_mask(
    sequences: list[list[int]], prompt_lengths: list[int], pad_token_id: int, *, ignore_index: int = -100,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token sequences and build the labels that ``sequence_logps`` scores.

    Args:
        sequences: N lists of token ids (prompt followed by completion).
        prompt_lengths: N prompt lengths; prompt tokens and padding get ``ignore_index`` in the labels.
        max_length: keep only the first ``max_length`` tokens (TRL's ``truncation_mode="keep_start"``).

    Returns:
        ``(input_ids (N, T), attention_mask (N, T), labels (N, T))`` int64, T the longest kept sequence.
    """
    if len(sequences) != len(prompt_lengths) or not sequences:
        raise ValueError(f"sequences and prompt_lengths must be non-empty and of equal length, "
                         f"got {len(sequences)} and {len(prompt_lengths)}")
    for i, n in enumerate(prompt_lengths):
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
            raise ValueError(f"prompt_lengths[{i}] must be an int >= 0, got {n!r}")
    if max_length is not None and (not isinstance(max_length, numbers.Integral) or max_length < 1):
        raise ValueError(f"max_length must be None or an int >= 1, got {max_length!r}")
    kept = [ids[:max_length] if max_length is not None else ids for ids in sequences]
    width = max(map(len, kept))
    input_ids = torch.full((len(kept), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(kept), width), ignore_index, dtype=torch.long)
    attention_mask = torch.zeros((len(kept), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(zip(kept, prompt_lengths, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[i, n_prompt : len(ids)] = input_ids[i, n_prompt : len(ids)]
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask, labels


def saved_for_backward_bytes(fn, logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Bytes autograd keeps between forward and backward for ``fn(logits, labels)``, beyond the inputs themselves.

    Counts each storage once (via ``torch.autograd.graph.saved_tensors_hooks``) and leaves out the storages of
    ``logits`` and ``labels``, which exist anyway. This is the memory that a method adds for the backward pass,
    measured exactly and independently of the allocator; ``benchmarks/bench_logprobs.py`` measures peak RSS.
    """
    seen: dict[int, int] = {}
    inputs = {logits.untyped_storage().data_ptr(), labels.untyped_storage().data_ptr()}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        if st.data_ptr() not in inputs:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(logits, labels)
    return sum(seen.values())
