"""Masked log-probs (helpers.logprobs) against the naive log_softmax recipe of the original DPO repo."""

import pytest
import torch

from helpers import logprobs
from helpers.logprobs import sequence_logps, token_logps


def naive_token_logps(logits, labels, ignore_index=-100):
    """_get_batch_logps of eric-mitchell/direct-preference-optimization, per token."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != ignore_index
    labels[~mask] = 0
    per_token = torch.gather(logits.float().log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return per_token * mask, mask


def _case(seed, b, t, v, p_mask, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, t, v, generator=g)).to(dtype).requires_grad_(True)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[torch.rand(b, t, generator=g) < p_mask] = -100
    return logits, labels


@pytest.mark.parametrize("seed", range(8))
def test_equals_naive_values_and_gradients(seed):
    g = torch.Generator().manual_seed(100 + seed)
    b, t, v = (int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 20, (1,), generator=g)),
               int(torch.randint(2, 300, (1,), generator=g)))
    logits, labels = _case(seed, b, t, v, p_mask=0.4)
    for average in (False, True):
        ours = sequence_logps(logits, labels, average=average)
        per_tok, mask = naive_token_logps(logits, labels)
        ref = per_tok.sum(-1) / (mask.sum(-1).clamp(min=1) if average else 1)
        assert ours.shape == (b,)
        assert (ours - ref).abs().max().item() < 1e-5
        w = torch.randn(b, generator=g)
        (g1,) = torch.autograd.grad((ours * w).sum(), logits)
        (g2,) = torch.autograd.grad((ref * w).sum(), logits)
        assert (g1 - g2).abs().max().item() < 1e-5


def test_chunking_across_many_rows_matches(monkeypatch):
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", 7 * 50)  # force 7-row chunks, remainder included
    logits, labels = _case(1, 3, 11, 50, p_mask=0.3)
    ours = token_logps(logits, labels)
    ref, _ = naive_token_logps(logits, labels)
    assert ours.shape == (3, 10)
    assert (ours - ref).abs().max().item() < 1e-5
    (g1,) = torch.autograd.grad(ours.sum(), logits)
    (g2,) = torch.autograd.grad(ref.sum(), logits)
    assert (g1 - g2).abs().max().item() < 1e-5


def test_all_masked_rows_give_zero_not_nan():
    logits, labels = _case(2, 3, 6, 20, p_mask=0.0)
    labels[1] = -100
    for average in (False, True):
        out = sequence_logps(logits, labels, average=average)
        assert out[1].item() == 0.0 and torch.isfinite(out).all()
        (g,) = torch.autograd.grad(out.sum(), logits)
        assert torch.all(g[1] == 0) and torch.isfinite(g).all()


def test_first_label_is_never_scored_and_masked_positions_are_zero():
    logits, labels = _case(3, 2, 5, 30, p_mask=0.0)
    per_tok = token_logps(logits, labels)
    labels2 = labels.clone()
    labels2[:, 0] = -100  # position 0 has no prefix: masking it changes nothing
    torch.testing.assert_close(token_logps(logits, labels2), per_tok)
    labels2[:, 3] = -100
    assert torch.all(token_logps(logits, labels2)[:, 2] == 0)


def test_shift_is_one_token():
    # logits that put all mass on token (position + 1): log p(label_t+1 | prefix) = 0 when labels follow it
    v, t = 10, 6
    logits = torch.full((1, t, v), -1e4)
    for i in range(t):
        logits[0, i, (i + 1) % v] = 0.0
    labels = torch.arange(t)[None] % v
    assert torch.allclose(token_logps(logits, labels), torch.zeros(1, t - 1), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_fp32(dtype):
    logits, labels = _case(4, 2, 9, 64, p_mask=0.3, dtype=dtype)
    ours = sequence_logps(logits, labels)
    assert ours.dtype == torch.float32
    per_tok, _ = naive_token_logps(logits.detach().float(), labels)  # same rounded inputs, fp32 math
    assert (ours - per_tok.sum(-1)).abs().max().item() < 1e-4
    (g,) = torch.autograd.grad(ours.sum(), logits)
    assert g.dtype == dtype and torch.isfinite(g.float()).all()


def test_non_contiguous_logits_are_handled():
    logits, labels = _case(5, 2, 7, 40, p_mask=0.2)
    wide = torch.cat([logits, logits], dim=-1)[..., :40]  # a non-contiguous view
    assert not wide.is_contiguous()
    torch.testing.assert_close(sequence_logps(wide, labels), sequence_logps(logits, labels))


def test_bad_inputs_raise():
    logits, labels = _case(6, 2, 5, 10, p_mask=0.0)
    with pytest.raises(ValueError, match="logits"):
        sequence_logps(logits[0], labels)
    with pytest.raises(ValueError, match="labels"):
        sequence_logps(logits, labels[:, :3])
    with pytest.raises(ValueError, match="labels"):
        sequence_logps(logits, labels.float())
    bad = labels.clone()
    bad[0, 2] = 10
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        sequence_logps(logits, bad)


def test_pad_and_mask_builds_the_labels_sequence_logps_scores():
    from helpers.logprobs import pad_and_mask

    ids, attn, labels = pad_and_mask([[5, 6, 7, 8], [5, 9]], [2, 1], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 9, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert labels.tolist() == [[-100, -100, 7, 8], [-100, 9, -100, -100]]
    ids, _, labels = pad_and_mask([[5, 6, 7, 8]], [2], pad_token_id=0, max_length=3)
    assert ids.tolist() == [[5, 6, 7]] and labels.tolist() == [[-100, -100, 7]]
    with pytest.raises(ValueError, match="prompt_lengths"):
        pad_and_mask([[1, 2]], [1, 1], pad_token_id=0)


def test_naive_recipe_agrees_and_keeps_a_full_copy_for_backward():
    from helpers.logprobs import naive_sequence_logps, saved_for_backward_bytes

    logits = torch.randn(4, 33, 2000, requires_grad=True)
    labels = torch.randint(0, 2000, (4, 33))
    labels[:, :7] = -100
    torch.testing.assert_close(naive_sequence_logps(logits, labels), sequence_logps(logits, labels),
                               rtol=1e-5, atol=1e-4)
    shifted = 4 * 32 * 2000 * 4  # bytes of the (B, T-1, V) fp32 log_softmax copy
    naive = saved_for_backward_bytes(naive_sequence_logps, logits, labels)
    ours = saved_for_backward_bytes(sequence_logps, logits, labels)
    assert naive >= shifted
    assert ours < shifted / 100  # per-row logsumexp and masks only
