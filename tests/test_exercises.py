"""Tests of the exercise checker ``mhalib.exercises``.

The wrong answers below are written the way learners write them, independently of the
checker's own catalogue of mistakes (``mhalib/exercises/ch*.py``), so these tests
show that the checker really recognises them. Run ``python tests/test_exercises.py`` for
the table: per exercise, how many wrong answers were caught with their targeted message.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

import mhalib
from mhalib.exercises import EXERCISES, CheckResult
from mhalib.exercises.ch02_scaled_dot_product import solution_scaled_dot_product_attention
from mhalib.exercises.ch03_splitting_heads import solution_split_heads
from mhalib.exercises.ch04_multi_head_attention import solution_multi_head_attention

NEG_INF = float("-inf")


def check(exercise_id: str, fn, **kwargs) -> CheckResult:
    return EXERCISES[exercise_id].check(fn, show=False, **kwargs)


def stub(*args):
    raise NotImplementedError("replace this line with your code")


# =============================================================================================
# Learner-style answers, right and wrong, per exercise
# =============================================================================================

# --- softmax_weights (chapter 1) -----------------------------------------------------------------


def sw_dim0(scores):
    return torch.softmax(scores, dim=0)


def sw_dim1(scores):
    return F.softmax(scores, dim=1)  # fine for (L, S), but there is no axis 1 in one query's (S,)


def sw_no_max_subtracted(scores):
    e = scores.exp()
    return e / e.sum(-1, keepdim=True)


def sw_divide_by_sum(scores):
    total = scores.sum(dim=-1, keepdim=True)
    return scores / total


def sw_exp_only(scores):
    return torch.exp(scores - scores.max(dim=-1, keepdim=True)[0])


def sw_sum_of_everything(scores):
    e = torch.exp(scores - scores.max())
    return e / torch.sum(e)


def sw_no_keepdim(scores):
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1)


def sw_log_softmax(scores):
    return F.log_softmax(scores, dim=-1)


def sw_shift_by_min(scores):
    # The answer of issue 9: shifted by each row's minimum (NaN for [[0., 100.]] in float32).
    e = torch.exp(scores - scores.min(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def sw_shift_by_mean(scores):
    centred = scores - scores.mean(-1, keepdim=True)
    return centred.exp() / centred.exp().sum(-1, keepdim=True)


def sw_right_functional(scores):
    return F.softmax(scores, dim=-1)


def sw_right_max_shift(scores):
    biggest, _ = scores.max(dim=-1, keepdim=True)
    e = (scores - biggest).exp()
    return e / e.sum(dim=-1, keepdim=True)


def sw_right_logsumexp(scores):
    return torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))


def sw_right_loop(scores):
    rows = scores.reshape(-1, scores.shape[-1])
    return torch.stack([row.softmax(dim=0) for row in rows]).reshape(scores.shape)


# --- soft_lookup (chapter 1) -----------------------------------------------------------------------


def sl_scaled_like_chapter_2(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def sl_softmax_over_queries(q, k, v):
    weights = torch.softmax(q @ k.transpose(1, 2), dim=1)
    return weights @ v, weights


def sl_values_times_weights(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return v @ weights, weights


def sl_bmm_transposed_weights(q, k, v):
    weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=2)
    return torch.bmm(weights.transpose(1, 2), v), weights


def sl_averages_keys(q, k, v):
    weights = torch.softmax(q @ k.mT, dim=-1)
    return weights @ k, weights


def sl_keys_not_transposed(q, k, v):
    weights = torch.softmax(q @ k, dim=-1)
    return weights @ v, weights


def sl_raw_scores(q, k, v):
    scores = q @ k.transpose(-2, -1)
    return scores @ v, scores


def sl_returns_weights(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1)


def sl_returns_out(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


def sl_weights_first(q, k, v):
    weights = torch.einsum("ble,bse->bls", q, k).softmax(-1)
    return weights, torch.einsum("bls,bsv->blv", weights, v)


def sl_own_softmax_no_shift(q, k, v):
    scores = q @ k.transpose(-2, -1)
    weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)
    return weights @ v, weights


def sl_weights_keys_by_queries(q, k, v):
    # scores laid out (B, S, L), softmax over the keys (dim=-2 there): out is right,
    # but the weights come back transposed
    weights = torch.softmax(k @ q.transpose(-2, -1), dim=-2)
    return weights.transpose(-2, -1) @ v, weights


def sl_right_einsum(q, k, v):
    weights = torch.einsum("ble,bse->bls", q, k).softmax(-1)
    return torch.einsum("bls,bsv->blv", weights, v), weights


def sl_right_bmm(q, k, v):
    weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=2)
    return torch.bmm(weights, v), weights


def sl_right_mhalib(q, k, v):
    return mhalib.scaled_dot_product_attention(q, k, v, scale=1.0)


def sl_right_loop(q, k, v):
    outs, all_weights = [], []
    for qb, kb, vb in zip(q, k, v):
        weights = torch.softmax(qb @ kb.T, dim=-1)
        outs.append(weights @ vb)
        all_weights.append(weights)
    return torch.stack(outs), torch.stack(all_weights)


# --- masked_softmax ------------------------------------------------------------------------


def _allowed(scores, valid_lens):
    """The (B, 1|L, S) mask most learners build."""
    S = scores.shape[-1]
    lens = valid_lens if valid_lens.dim() == 2 else valid_lens[:, None]
    return torch.arange(S)[None, None, :] < lens[:, :, None]


def _allowed_everywhere(scores, valid_lens):
    """(B, L, S): True = may attend, all True without lengths."""
    if valid_lens is None:
        return torch.ones_like(scores, dtype=torch.bool)
    return _allowed(scores, valid_lens).expand_as(scores)


def ms_wrong_axis(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=1)
    scores = scores.masked_fill(~_allowed(scores, valid_lens), -1e9)
    return torch.softmax(scores, dim=1)


def ms_d2l_minus_1e6(scores, valid_lens):
    # The classic: flatten, fill with -1e6. Empty rows come out uniform.
    if valid_lens is None:
        return F.softmax(scores, dim=-1)
    shape = scores.shape
    if valid_lens.dim() == 1:
        valid_lens = torch.repeat_interleave(valid_lens, shape[1])
    else:
        valid_lens = valid_lens.reshape(-1)
    X = scores.reshape(-1, shape[-1]).clone()
    mask = torch.arange(shape[-1])[None, :] < valid_lens[:, None]
    X[~mask] = -1e6
    return F.softmax(X.reshape(shape), dim=-1)


def ms_tiled_lengths(scores, valid_lens):
    # Same flattening, but `repeat` instead of `repeat_interleave` (and empty rows handled).
    if valid_lens is None:
        return F.softmax(scores, dim=-1)
    shape = scores.shape
    valid_lens = valid_lens.repeat(shape[1]) if valid_lens.dim() == 1 else valid_lens.reshape(-1)
    X = scores.reshape(-1, shape[-1])
    mask = torch.arange(shape[-1])[None, :] < valid_lens[:, None]
    weights = F.softmax(X.masked_fill(~mask, -1e9), dim=-1) * mask
    return weights.reshape(shape)


def ms_minus_inf_nan(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores.masked_fill(~_allowed(scores, valid_lens), NEG_INF), dim=-1)


def ms_inverted(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    S = scores.shape[-1]
    lens = valid_lens if valid_lens.dim() == 2 else valid_lens[:, None]
    padding = torch.arange(S)[None, None, :] < lens[:, :, None]  # "True = padding", but it is not
    return torch.nan_to_num(torch.softmax(scores.masked_fill(padding, NEG_INF), dim=-1))


def ms_off_by_one(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    S = scores.shape[-1]
    lens = valid_lens if valid_lens.dim() == 2 else valid_lens[:, None]
    allowed = torch.arange(S)[None, None, :] <= lens[:, :, None]
    return torch.softmax(scores.masked_fill(~allowed, -1e9), dim=-1)


def ms_mask_after_softmax(scores, valid_lens):
    weights = torch.softmax(scores, dim=-1)
    if valid_lens is None:
        return weights
    return weights * _allowed(scores, valid_lens)


def ms_zero_fill(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores * _allowed(scores, valid_lens), dim=-1)


def ms_max_over_all_keys(scores, valid_lens):
    # The answer of issue 9: the max over ALL keys (padded included), then times the mask;
    # empty rows guarded. All zeros for scores [[[0, 0, 200]]] with length 2 in float32.
    allowed = _allowed_everywhere(scores, valid_lens)
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values) * allowed
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


def ms_renormalised_after_softmax(scores, valid_lens):
    weights = F.softmax(scores, dim=-1)
    if valid_lens is None:
        return weights
    weights = weights * _allowed(scores, valid_lens)
    return weights / weights.sum(dim=-1, keepdim=True)


def ms_ignores_lengths(scores, valid_lens):
    return torch.softmax(scores, dim=-1)


def ms_mask_missing_query_axis(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    if valid_lens.dim() == 1:
        mask = torch.arange(scores.shape[-1]) < valid_lens[:, None]  # (B, S): no query axis
    else:
        mask = torch.arange(scores.shape[-1]) < valid_lens[:, :, None]
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def ms_right_loop(scores, valid_lens):
    B, L, S = scores.shape
    out = torch.zeros_like(scores)
    for b in range(B):
        for i in range(L):
            n = S if valid_lens is None else int(valid_lens[b] if valid_lens.dim() == 1 else valid_lens[b, i])
            if n > 0:
                out[b, i, :n] = torch.softmax(scores[b, i, :n], dim=0)
    return out


def ms_right_manual_softmax(scores, valid_lens):
    allowed = _allowed_everywhere(scores, valid_lens)
    # The largest score over the real keys only (a padded key may score far higher).
    biggest = scores.masked_fill(~allowed, NEG_INF).max(dim=-1, keepdim=True).values
    shifted = (scores - biggest.nan_to_num(neginf=0.0)).masked_fill(~allowed, NEG_INF)  # empty row: max -inf
    e = torch.exp(shifted)  # exp(-inf) = 0 at the padding
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


def ms_right_large_negative(scores, valid_lens):
    # -1e9 fill is fine here because the weights are multiplied by the mask afterwards.
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    allowed = _allowed(scores, valid_lens)
    return torch.softmax(scores.masked_fill(~allowed, -1e9), dim=-1) * allowed


def ms_right_nan_to_num(scores, valid_lens):
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    weights = torch.softmax(scores.masked_fill(~_allowed(scores, valid_lens), NEG_INF), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


# --- scaled_dot_product_attention --------------------------------------------------------------


def sdpa_no_scale(q, k, v, mask=None):
    scores = torch.bmm(q, k.transpose(1, 2))
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = torch.softmax(scores, dim=-1)
    return torch.bmm(weights, v), weights


def sdpa_scaled_by_d(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1]
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    weights = scores.softmax(-1)
    return weights @ v, weights


def sdpa_times_sqrt_d(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = scores.softmax(-1)
    return weights @ v, weights


def sdpa_scaled_by_value_size(q, k, v, mask=None):
    d = v.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = scores.softmax(-1)
    return weights @ v, weights


def sdpa_wrong_axis(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    weights = torch.softmax(scores, dim=1)
    return weights @ v, weights


def sdpa_inverted_mask(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, -1e9)  # as if True meant "masked"
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_bool_mask_added(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask.float()
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_masked_after_softmax(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


def sdpa_scaled_by_query_length(q, k, v, mask=None):
    B, L, E = q.shape
    scores = q @ k.transpose(1, 2) / math.sqrt(L)  # L where E was meant
    if mask is not None:
        scores = scores.masked_fill(mask == 0, NEG_INF)
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def sdpa_scaled_by_key_count(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / k.shape[1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_zero_fill(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores * mask  # masked scores become 0
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_renormalised(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v, weights


def sdpa_only_out(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    return torch.softmax(scores, dim=-1) @ v


def sdpa_swapped(q, k, v, mask=None):
    out, weights = solution_scaled_dot_product_attention(q, k, v, mask)
    return weights, out


def sdpa_right_einsum(q, k, v, mask=None):
    scores = torch.einsum("ble,bse->bls", q, k) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(-1e9, dtype=scores.dtype))
    weights = scores.softmax(dim=-1)
    return torch.einsum("bls,bsv->blv", weights, v), weights


def sdpa_right_float_mask(q, k, v, mask=None):
    scores = q @ k.mT / math.sqrt(q.size(-1))
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, NEG_INF)
        scores = scores + bias
    weights = F.softmax(scores, dim=-1)
    return weights @ v, weights


# --- causal_mask -------------------------------------------------------------------------------


def causal_diagonal_excluded(L):
    return torch.tril(torch.ones(L, L, dtype=torch.bool), diagonal=-1)


def causal_triu(L):
    return torch.triu(torch.ones(L, L)).bool()


def causal_inverted(L):
    return ~torch.tril(torch.ones(L, L)).bool()


def causal_float(L):
    return torch.tril(torch.ones(L, L))


def causal_int(L):
    return torch.tril(torch.ones(L, L, dtype=torch.long))


def causal_additive(L):
    return torch.triu(torch.full((L, L), float("-inf")), diagonal=1)


def causal_loop_strict(L):
    mask = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(L):
            mask[i, j] = j < i
    return mask


def causal_right_tril_ones(L):
    return torch.tril(torch.ones(L, L)).bool()


def causal_right_arange(L):
    i = torch.arange(L)
    return i[:, None] >= i[None, :]


def causal_right_loop(L):
    mask = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        mask[i, : i + 1] = True
    return mask


# --- split_heads / merge_heads ------------------------------------------------------------------


def split_view_no_transpose(x, num_heads):
    B, L, D = x.shape
    return x.view(B, num_heads, L, D // num_heads)


def split_transpose_first(x, num_heads):
    B, L, D = x.shape
    return x.transpose(1, 2).reshape(B, num_heads, L, D // num_heads)


def split_strided(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, D // num_heads, num_heads).permute(0, 3, 1, 2)


def split_forgot_transpose(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, num_heads, D // num_heads)


def split_wrong_axes(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, num_heads, -1).permute(0, 1, 3, 2)


def split_h_dh_swapped(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, -1, num_heads).transpose(1, 2)


def split_right_permute(x, num_heads):
    B, L, D = x.shape
    return x.view(B, L, num_heads, D // num_heads).permute(0, 2, 1, 3)


def split_right_chunks(x, num_heads):
    return torch.stack(x.chunk(num_heads, dim=-1), dim=1)


def split_right_loop(x, num_heads):
    Dh = x.shape[-1] // num_heads
    return torch.stack([x[:, :, h * Dh : (h + 1) * Dh] for h in range(num_heads)], dim=1)


def merge_no_transpose(x):
    B, H, L, Dh = x.shape
    return x.reshape(B, L, H * Dh)


def merge_view_after_transpose(x):
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).view(B, L, H * Dh)


def merge_strided(x):
    B, H, L, Dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, L, -1)


def merge_not_flattened(x):
    return x.permute(0, 2, 1, 3)


def merge_cat_tokens(x):
    return torch.cat(x.unbind(dim=1), dim=1)


def merge_wrong_axes(x):
    B, H, L, Dh = x.shape
    return x.transpose(-1, -2).reshape(B, L, -1)


def merge_right_cat(x):
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)


def merge_right_contiguous_view(x):
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).contiguous().view(B, L, H * Dh)


def merge_right_flatten(x):
    return x.permute(0, 2, 1, 3).flatten(2)


# --- transpose_qkv / transpose_output -----------------------------------------------------------


def tqkv_no_transpose(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B * num_heads, L, D // num_heads)


def tqkv_split_cat(x, num_heads):
    # A popular one-liner; it orders the rows head-major (h*B + b).
    return torch.cat(torch.split(x, x.shape[-1] // num_heads, dim=-1), dim=0)


def tqkv_view_after_transpose(x, num_heads):
    B, L, D = x.shape
    x = x.view(B, L, num_heads, D // num_heads).transpose(1, 2)
    return x.view(B * num_heads, L, D // num_heads)


def tqkv_strided(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, -1, num_heads).permute(0, 3, 1, 2).reshape(B * num_heads, L, -1)


def tqkv_not_folded(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, num_heads, -1).transpose(1, 2)


def tqkv_transpose_first(x, num_heads):
    B, L, D = x.shape
    return x.permute(0, 2, 1).reshape(B * num_heads, L, -1)


def tqkv_right_split_heads(x, num_heads):
    return mhalib.split_heads(x, num_heads).flatten(0, 1)


def tqkv_right_loop(x, num_heads):
    Dh = x.shape[-1] // num_heads
    rows = [x[b, :, h * Dh : (h + 1) * Dh] for b in range(x.shape[0]) for h in range(num_heads)]
    return torch.stack(rows)


def tout_no_transpose(x, num_heads):
    BH, L, Dh = x.shape
    return x.reshape(BH // num_heads, L, num_heads * Dh)


def tout_split_cat(x, num_heads):
    # Inverse of the split/cat one-liner: assumes rows h*B + b.
    B = x.shape[0] // num_heads
    return torch.cat(torch.split(x, B, dim=0), dim=-1)


def tout_view_after_transpose(x, num_heads):
    BH, L, Dh = x.shape
    x = x.view(-1, num_heads, L, Dh).transpose(1, 2)
    return x.view(BH // num_heads, L, -1)


def tout_strided(x, num_heads):
    BH, L, Dh = x.shape
    return x.reshape(-1, num_heads, L, Dh).permute(0, 2, 3, 1).reshape(BH // num_heads, L, -1)


def tout_not_flattened(x, num_heads):
    BH, L, Dh = x.shape
    return x.reshape(-1, num_heads, L, Dh).permute(0, 2, 1, 3)


def tout_wrong_axes(x, num_heads):
    BH, L, Dh = x.shape
    return x.reshape(-1, num_heads, L, Dh).transpose(2, 3).reshape(BH // num_heads, L, -1)


def tout_right_loop(x, num_heads):
    B = x.shape[0] // num_heads
    return torch.stack([torch.cat([x[b * num_heads + h] for h in range(num_heads)], dim=-1) for b in range(B)])


def tout_right_merge(x, num_heads):
    BH, L, Dh = x.shape
    return mhalib.merge_heads(x.unflatten(0, (BH // num_heads, num_heads)))


# --- repeat_valid_lens ---------------------------------------------------------------------------


def rvl_repeat(valid_lens, num_heads):
    return valid_lens.repeat(num_heads) if valid_lens.dim() == 1 else valid_lens.repeat(num_heads, 1)


def rvl_cat_copies(valid_lens, num_heads):
    return torch.cat([valid_lens] * num_heads, dim=0)


def rvl_no_dim(valid_lens, num_heads):
    return valid_lens.repeat_interleave(num_heads)


def rvl_last_dim(valid_lens, num_heads):
    return torch.repeat_interleave(valid_lens, num_heads, dim=-1)


def rvl_multiplied(valid_lens, num_heads):
    return valid_lens * num_heads


def rvl_unchanged(valid_lens, num_heads):
    return valid_lens


def rvl_float(valid_lens, num_heads):
    return valid_lens.float().repeat_interleave(num_heads, dim=0)


def rvl_right_expand(valid_lens, num_heads):
    B = valid_lens.shape[0]
    return valid_lens.unsqueeze(1).expand(B, num_heads, *valid_lens.shape[1:]).reshape(B * num_heads, *valid_lens.shape[1:])


def rvl_right_loop(valid_lens, num_heads):
    return torch.stack([row for row in valid_lens for _ in range(num_heads)])


# --- multi_head_attention ------------------------------------------------------------------------


def _heads(x, H):
    B, n, D = x.shape
    return x.reshape(B, n, H, D // H).transpose(1, 2)  # (B, H, n, Dh)


def _mha(query, key, value, W_q, W_k, W_v, W_o, H, valid_lens, *, proj=None, scale=None, use_wo=True,
         split=_heads, lens_rows=None, dim=-1, ignore_lens=False):
    """A d2l-style multi-head attention in which each keyword makes one slip."""
    proj = proj or (lambda x, W: x @ W.T)
    B, L, D = query.shape
    S = key.shape[1]
    q, k, v = split(proj(query, W_q), H), split(proj(key, W_k), H), split(proj(value, W_v), H)  # (B, H, n, Dh)
    scores = q @ k.transpose(-2, -1) / (scale if scale is not None else math.sqrt(D // H))
    scores = scores.reshape(B * H, L, S)  # fold the heads into the batch: row b*H + h
    if valid_lens is not None and not ignore_lens:
        lens = (lens_rows or (lambda v: v.repeat_interleave(H, dim=0)))(valid_lens)  # (B*H,) or (B*H, L)
        per_query = lens[:, None] if lens.dim() == 1 else lens
        scores = scores.masked_fill(~(torch.arange(S) < per_query[:, :, None]), -1e9)
    weights = torch.softmax(scores, dim=dim).reshape(B, H, L, S)
    out = weights @ v  # (B, H, L, Dh)
    out = out.transpose(1, 2).reshape(B, L, D) if split is _heads else out.reshape(B, L, D)
    return proj(out, W_o) if use_wo else out


def mha_x_at_w(*a):
    return _mha(*a, proj=lambda x, W: x @ W)


def mha_forgot_wo(*a):
    return _mha(*a, use_wo=False)


def mha_scaled_sqrt_d(query, *a):
    return _mha(query, *a, scale=math.sqrt(query.shape[-1]))


def mha_no_scale(*a):
    return _mha(*a, scale=1.0)


def mha_interleaved(*a):
    return _mha(*a, split=lambda x, H: x.reshape(x.shape[0], H, x.shape[1], -1))


def mha_repeat_lengths(query, key, value, W_q, W_k, W_v, W_o, H, valid_lens=None):
    return _mha(query, key, value, W_q, W_k, W_v, W_o, H, valid_lens,
                lens_rows=lambda v: v.repeat(H) if v.dim() == 1 else v.repeat(H, 1))


def mha_ignores_lengths(*a):
    return _mha(*a, ignore_lens=True)


def mha_wrong_axis(*a):
    return _mha(*a, dim=-2)


def _qkv(query, key, value, W_q, W_k, W_v, H):
    """The right projections and head split, (B, H, n, Dh) each: the slips below come after."""
    return _heads(query @ W_q.T, H), _heads(key @ W_k.T, H), _heads(value @ W_v.T, H)


def _merge(out, W_o):
    B, H, L, Dh = out.shape
    return out.transpose(1, 2).reshape(B, L, H * Dh) @ W_o.T


def _lens_mask(valid_lens, S):
    """(B, 1, 1|L, S) True = may attend, from (B,) or (B, L) lengths."""
    lens = valid_lens[:, None] if valid_lens.dim() == 1 else valid_lens
    return torch.arange(S) < lens[:, None, :, None]


def mha_mask_after_softmax(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if valid_lens is not None:
        weights = weights * _lens_mask(valid_lens, key.shape[1])  # zeroed after the softmax
    return _merge(weights @ v, W_o)


def mha_zero_fill(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if valid_lens is not None:
        scores = scores.masked_fill(~_lens_mask(valid_lens, key.shape[1]), 0.0)
    return _merge(scores.softmax(-1) @ v, W_o)


def mha_keys_values_swapped(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    B, L, D = query.shape
    q, v, k = _qkv(query, key, value, W_q, W_k, W_v, num_heads)  # unpacked in the wrong order
    mask = None if valid_lens is None else mhalib.padding_mask(valid_lens, key.shape[1])
    out, _ = mhalib.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(B, L, D) @ W_o.T


def mha_wo_untransposed(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    mask = None if valid_lens is None else mhalib.padding_mask(valid_lens, key.shape[1])
    out, _ = mhalib.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    B, H, L, Dh = out.shape
    return out.transpose(1, 2).reshape(B, L, H * Dh) @ W_o  # the other three were W.T


def mha_scale_after_softmax(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1)
    if valid_lens is not None:
        scores = scores.masked_fill(~_lens_mask(valid_lens, key.shape[1]), -1e9)
    weights = scores.softmax(dim=-1) / math.sqrt(q.shape[-1])  # scaled too late
    if valid_lens is not None:
        weights = weights * _lens_mask(valid_lens, key.shape[1])
    return _merge(weights @ v, W_o)


def mha_transposed_mask(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    S = key.shape[1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, L, S)
    if valid_lens is not None:
        if valid_lens.dim() == 1:
            mask = (torch.arange(S)[None, :] < valid_lens[:, None])[:, None, None, :]
        else:
            mask = (torch.arange(S)[:, None] < valid_lens[:, None, :])[:, None]  # (B, 1, S, L)
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = torch.nan_to_num(scores.softmax(-1))
    return _merge(weights @ v, W_o)


def mha_scaled_by_query_length(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(query.shape[1])  # L, not Dh
    weights = mhalib.masked_softmax(scores.flatten(0, 1), None if valid_lens is None
                                    else torch.repeat_interleave(valid_lens, num_heads, dim=0))
    return _merge(weights.reshape(scores.shape) @ v, W_o)


def mha_no_empty_row_guard(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    # The chapter 4 solution before issue 9: -inf fill, no care for a query of length 0.
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if valid_lens is not None:
        scores = scores.masked_fill(~_lens_mask(valid_lens, key.shape[1]), float("-inf"))
    return _merge(torch.softmax(scores, dim=-1) @ v, W_o)


def mha_minus_1e9_fill(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if valid_lens is not None:
        scores = scores.masked_fill(~_lens_mask(valid_lens, key.shape[1]), -1e9)
    return _merge(torch.softmax(scores, dim=-1) @ v, W_o)


def mha_max_over_padding(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    if valid_lens is not None:
        e = e * _lens_mask(valid_lens, key.shape[1])
    weights = e / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return _merge(weights @ v, W_o)


def mha_inverted_mask(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q, k, v = _qkv(query, key, value, W_q, W_k, W_v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if valid_lens is not None:
        scores = scores.masked_fill(_lens_mask(valid_lens, key.shape[1]), -1e9)  # masks the real keys
    return _merge(torch.softmax(scores, dim=-1) @ v, W_o)


def mha_right_d2l(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    q = mhalib.transpose_qkv(query @ W_q.T, num_heads)  # (B*H, L, Dh)
    k = mhalib.transpose_qkv(key @ W_k.T, num_heads)
    v = mhalib.transpose_qkv(value @ W_v.T, num_heads)
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    lens = None if valid_lens is None else torch.repeat_interleave(valid_lens, num_heads, dim=0)
    out = mhalib.masked_softmax(scores, lens) @ v
    return F.linear(mhalib.transpose_output(out, num_heads), W_o)


def mha_right_loop_heads(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    D = query.shape[-1]
    Dh = D // num_heads
    mask = None if valid_lens is None else mhalib.padding_mask(valid_lens, key.shape[1])[:, 0]  # (B, 1|L, S)
    outs = []
    for h in range(num_heads):
        rows = slice(h * Dh, (h + 1) * Dh)  # head h's rows of each W (out, in)
        q, k, v = query @ W_q[rows].T, key @ W_k[rows].T, value @ W_v[rows].T
        scores = torch.einsum("bld,bsd->bls", q, k) / math.sqrt(Dh)
        weights = scores.masked_fill(~mask, -1e9).softmax(-1) if mask is not None else scores.softmax(-1)
        if mask is not None:
            weights = weights * mask  # a query with length 0 (uniform after -1e9) attends to nothing
        outs.append(weights @ v)
    return torch.cat(outs, dim=-1) @ W_o.T


def mha_right_torch_module(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    D = query.shape[-1]
    m = mhalib.MultiHeadAttention(D, num_heads, bias=False).to(query.dtype)
    with torch.no_grad():
        for proj, W in zip((m.q_proj, m.k_proj, m.v_proj, m.out_proj), (W_q, W_k, W_v, W_o)):
            proj.weight.copy_(W)
    return m(query, key, value, valid_lens=valid_lens, need_weights=False)[0].detach()


# --- padding_mask ---------------------------------------------------------------------------------


def pm_torch_style(valid_lens, S):
    # What nn.MultiheadAttention wants, not what the course's attention wants.
    positions = torch.arange(S).expand(len(valid_lens), S)
    return positions >= valid_lens.unsqueeze(1)


def pm_inverted(valid_lens, S):
    is_pad = torch.arange(S)[None, :] >= valid_lens[:, None]
    return is_pad.view(-1, 1, 1, S)


def pm_off_by_one_loop(valid_lens, S):
    mask = torch.zeros(len(valid_lens), 1, 1, S, dtype=torch.bool)
    for b, n in enumerate(valid_lens.tolist()):
        for j in range(S):
            mask[b, 0, 0, j] = j <= n
    return mask


def pm_no_head_axes(valid_lens, S):
    return torch.arange(S)[None, :] < valid_lens[:, None]  # (B, S)


def pm_one_axis_added(valid_lens, S):
    return (torch.arange(S) < valid_lens[:, None]).unsqueeze(1)  # (B, 1, S)


def pm_keys_first(valid_lens, S):
    mask = torch.arange(S)[None, :] < valid_lens[:, None]
    return mask[:, :, None, None]  # (B, S, 1, 1)


def pm_keys_on_query_axis(valid_lens, S):
    return (torch.arange(S)[None, :, None] < valid_lens[:, None, None]).unsqueeze(1)  # (B, 1, S, 1)


def pm_float(valid_lens, S):
    return (torch.arange(S) < valid_lens[:, None]).float()[:, None, None, :]


def pm_int(valid_lens, S):
    return (torch.arange(S)[None, :] < valid_lens[:, None]).long().reshape(-1, 1, 1, S)


def pm_additive(valid_lens, S):
    allowed = torch.arange(S)[None, :] < valid_lens[:, None]
    bias = torch.zeros(len(valid_lens), S).masked_fill(~allowed, float("-inf"))
    return bias[:, None, None, :]


def pm_compared_directly(valid_lens, S):
    return (torch.arange(S) < valid_lens).reshape(-1, 1, 1, S)


def pm_right_unsqueeze(valid_lens, S):
    return (torch.arange(S)[None, :] < valid_lens[:, None]).unsqueeze(1).unsqueeze(1)


def pm_right_reshape(valid_lens, S):
    return (torch.arange(S)[None, :] < valid_lens[:, None]).reshape(len(valid_lens), 1, 1, S)


def pm_right_none_indexing(valid_lens, S):
    return torch.arange(S) < valid_lens[:, None, None, None]


def pm_right_loop(valid_lens, S):
    mask = torch.zeros(valid_lens.shape[0], 1, 1, S, dtype=torch.bool)
    for b in range(valid_lens.shape[0]):
        mask[b, :, :, : int(valid_lens[b])] = True
    return mask


def pm_right_negated_padding(valid_lens, S):
    is_pad = torch.arange(S).expand(len(valid_lens), S) >= valid_lens.unsqueeze(-1)
    return torch.logical_not(is_pad)[:, None, None]


# --- torch_key_padding_mask --------------------------------------------------------------------

NUM_HEADS = 4  # a notebook global a learner might reach for


def kpm_course_convention(valid_lens, S):
    return torch.arange(S)[None, :] < valid_lens[:, None]


def kpm_mhalib_unchanged(valid_lens, S):
    return mhalib.padding_mask(valid_lens, S)


def kpm_off_by_one(valid_lens, S):
    return torch.arange(S)[None, :] > valid_lens[:, None]


def kpm_four_dims(valid_lens, S):
    return ~mhalib.padding_mask(valid_lens, S)  # (B, 1, 1, S)


def kpm_float(valid_lens, S):
    return (torch.arange(S)[None, :] >= valid_lens[:, None]).float()


def kpm_int(valid_lens, S):
    return (torch.arange(S)[None, :] >= valid_lens[:, None]).to(torch.uint8)


def kpm_additive(valid_lens, S):
    is_pad = torch.arange(S)[None, :] >= valid_lens[:, None]
    return torch.zeros(is_pad.shape).masked_fill(is_pad, float("-inf"))


def kpm_repeated_over_heads(valid_lens, S):
    is_pad = torch.arange(S)[None, :] >= valid_lens[:, None]
    return is_pad.repeat_interleave(NUM_HEADS, dim=0)  # (B*H, S), like the lengths of chapter 3


def kpm_compared_directly(valid_lens, S):
    return torch.arange(S) >= valid_lens


def kpm_right_ge(valid_lens, S):
    return torch.arange(S)[None, :] >= valid_lens[:, None]


def kpm_right_negate_course_mask(valid_lens, S):
    return ~mhalib.padding_mask(valid_lens, S).squeeze(1).squeeze(1)


def kpm_right_logical_not_reshape(valid_lens, S):
    allowed = torch.arange(S).unsqueeze(0) < valid_lens.unsqueeze(1)
    return torch.logical_not(allowed).reshape(len(valid_lens), S)


def kpm_right_loop(valid_lens, S):
    mask = torch.ones(len(valid_lens), S, dtype=torch.bool)
    for b, n in enumerate(valid_lens.tolist()):
        mask[b, :n] = False
    return mask


# =============================================================================================
# The tables: wrong answers with the phrase their feedback must contain; right answers
# =============================================================================================

WRONG = {
    "softmax_weights": [
        (sw_dim0, "softmax over the wrong axis"),
        (sw_dim1, "softmax over the wrong axis", "error"),
        (sw_no_max_subtracted, "large scores gave NaN"),
        (sw_shift_by_min, "subtracted each row's smallest score instead of its largest"),
        (sw_shift_by_mean, "subtracted each row's mean score"),
        (sw_divide_by_sum, "without exponentiating"),
        (sw_exp_only, "do not sum to 1"),
        (sw_sum_of_everything, "sum of the whole tensor"),
        (sw_no_keepdim, "keepdim=True"),
        (sw_log_softmax, "log-probabilities"),
    ],
    "soft_lookup": [
        (sl_scaled_like_chapter_2, "belongs to the next chapter"),
        (sl_own_softmax_no_shift, "large scores gave NaN"),
        (sl_softmax_over_queries, "softmax over the wrong axis"),
        (sl_values_times_weights, "multiplies the wrong way round"),
        (sl_bmm_transposed_weights, "multiplies the wrong way round"),
        (sl_averages_keys, "averaged the keys instead of the values"),
        (sl_keys_not_transposed, "q @ k multiplies the wrong axes"),
        (sl_raw_scores, "averaged with the raw scores"),
        (sl_returns_weights, "returned only the weights"),
        (sl_returns_out, "returned only `out`"),
        (sl_weights_first, "return (out, weights), in that order"),
        (sl_weights_keys_by_queries, "the weights you returned are transposed"),
    ],
    "masked_softmax": [
        (ms_wrong_axis, "softmax over the wrong axis"),
        (ms_d2l_minus_1e6, "came out uniform"),
        (ms_tiled_lengths, "repeat_interleave"),
        (ms_minus_inf_nan, "came out NaN"),
        (ms_inverted, "the mask is inverted"),
        (ms_off_by_one, "off by one"),
        (ms_mask_after_softmax, "after the softmax"),
        (ms_max_over_all_keys, "largest score over ALL keys, padded ones included"),
        (ms_renormalised_after_softmax, "largest score over ALL keys, padded ones included"),
        (ms_zero_fill, "exp(0) = 1"),
        (ms_ignores_lengths, "ignore valid_lens"),
        (ms_mask_missing_query_axis, "applied along the query axis"),
    ],
    "scaled_dot_product_attention": [
        (sdpa_no_scale, "did you forget the scale"),
        (sdpa_scaled_by_d, "divided the scores by E instead of sqrt(E)"),
        (sdpa_times_sqrt_d, "multiplied by sqrt(E)"),
        (sdpa_scaled_by_value_size, "value size sqrt(Ev)"),
        (sdpa_wrong_axis, "softmax over the wrong axis"),
        (sdpa_inverted_mask, "mask polarity is inverted"),
        (sdpa_bool_mask_added, "added the boolean mask"),
        (sdpa_masked_after_softmax, "after the softmax"),
        (sdpa_scaled_by_query_length, "divided the scores by sqrt(L), the query length, instead of sqrt(E)"),
        (sdpa_scaled_by_key_count, "sqrt(S), the number of keys"),
        (sdpa_zero_fill, "exp(0) = 1"),
        (sdpa_renormalised, "largest score over ALL keys, masked ones included"),
        (sdpa_only_out, "returned only `out`"),
        (sdpa_swapped, "return (out, weights), in that order"),
    ],
    "causal_mask": [
        (causal_diagonal_excluded, "the diagonal is False"),
        (causal_loop_strict, "the diagonal is False"),
        (causal_triu, "allowed the future"),
        (causal_inverted, "True marks the future"),
        (causal_float, "as float numbers"),
        (causal_int, "as integers"),
        (causal_additive, "additive float mask"),
    ],
    "split_heads": [
        (split_view_no_transpose, "heads look interleaved"),
        (split_transpose_first, "transposed before reshaping"),
        (split_strided, "strided cut"),
        (split_forgot_transpose, "you returned (B, L, H, Dh)"),
        (split_wrong_axes, "wrong pair of axes"),
        (split_h_dh_swapped, "Dh groups of H"),
    ],
    "merge_heads": [
        (merge_no_transpose, "heads look interleaved"),
        (merge_view_after_transpose, "`view` cannot flatten a transposed tensor", "error"),
        (merge_strided, "ordered (Dh, H)"),
        (merge_not_flattened, "4-D (B, L, H, Dh)"),
        (merge_cat_tokens, "along the token axis"),
        (merge_wrong_axes, "wrong pair of axes"),
    ],
    "transpose_qkv": [
        (tqkv_no_transpose, "heads look interleaved"),
        (tqkv_split_cat, "head-major"),
        (tqkv_view_after_transpose, "`view` cannot flatten a transposed tensor", "error"),
        (tqkv_strided, "strided cut"),
        (tqkv_not_folded, "fold the heads into the batch"),
        (tqkv_transpose_first, "transposed before reshaping"),
    ],
    "transpose_output": [
        (tout_no_transpose, "heads look interleaved"),
        (tout_split_cat, "head-major"),
        (tout_view_after_transpose, "`view` cannot flatten a transposed tensor", "error"),
        (tout_strided, "ordered (Dh, H)"),
        (tout_not_flattened, "4-D (B, L, H, Dh)"),
        (tout_wrong_axes, "wrong pair of axes"),
    ],
    "repeat_valid_lens": [
        (rvl_repeat, "so use `repeat_interleave`"),
        (rvl_cat_copies, "so use `repeat_interleave`"),
        (rvl_no_dim, "Pass dim=0"),
        (rvl_last_dim, "wrong axis"),
        (rvl_multiplied, "multiplied the lengths"),
        (rvl_unchanged, "lengths unchanged"),
        (rvl_float, "must stay integers"),
    ],
    "multi_head_attention": [
        (mha_x_at_w, "x @ W.T"),
        (mha_forgot_wo, "output projection is missing"),
        (mha_scaled_sqrt_d, "scale by sqrt(Dh)"),
        (mha_no_scale, "did you forget the scale"),
        (mha_interleaved, "heads look interleaved"),
        (mha_repeat_lengths, "use `repeat_interleave`"),
        (mha_ignores_lengths, "ignores valid_lens"),
        (mha_wrong_axis, "softmax over the wrong axis"),
        (mha_mask_after_softmax, "weights after the softmax"),
        (mha_zero_fill, "exp(0) = 1"),
        (mha_keys_values_swapped, "keys and values are swapped"),
        (mha_wo_untransposed, "applied as out @ W_o"),
        (mha_scale_after_softmax, "scale after the softmax"),
        (mha_transposed_mask, "your (B, L) mask is transposed"),
        (mha_scaled_by_query_length, "divided the scores by sqrt(L), the query length, instead of sqrt(Dh)"),
        (mha_no_empty_row_guard, "a row with valid length 0 came out NaN"),
        (mha_minus_1e9_fill, "a row with valid length 0 came out uniform"),
        (mha_max_over_padding, "largest score over ALL keys, padded ones included"),
        (mha_inverted_mask, "the mask is inverted"),
    ],
    "padding_mask": [
        (pm_torch_style, "PyTorch's `key_padding_mask`"),
        (pm_inverted, "the polarity is inverted"),
        (pm_off_by_one_loop, "off by one"),
        (pm_no_head_axes, "lacks the head and query axes"),
        (pm_one_axis_added, "lacks the head and query axes"),
        (pm_keys_first, "the key axis is not last"),
        (pm_keys_on_query_axis, "the key axis is not last"),
        (pm_float, "as float numbers"),
        (pm_int, "as integers"),
        (pm_additive, "additive float mask"),
        (pm_compared_directly, "a broadcasting error", "error"),
    ],
    "torch_key_padding_mask": [
        (kpm_course_convention, "this course's convention"),
        (kpm_mhalib_unchanged, "course's padding mask unchanged"),
        (kpm_off_by_one, "off by one"),
        (kpm_four_dims, "Drop the extra axes"),
        (kpm_float, "as float numbers"),
        (kpm_int, "as integers"),
        (kpm_additive, "additive float form"),
        (kpm_repeated_over_heads, "repeats it over the heads itself"),
        (kpm_compared_directly, "a broadcasting error", "error"),
    ],
}

RIGHT = {
    "softmax_weights": [sw_right_functional, sw_right_max_shift, sw_right_logsumexp, sw_right_loop],
    "soft_lookup": [sl_right_einsum, sl_right_bmm, sl_right_mhalib, sl_right_loop],
    "masked_softmax": [ms_right_loop, ms_right_large_negative, ms_right_nan_to_num, ms_right_manual_softmax],
    "scaled_dot_product_attention": [sdpa_right_einsum, sdpa_right_float_mask],
    "causal_mask": [causal_right_tril_ones, causal_right_arange, causal_right_loop],
    "split_heads": [split_right_permute, split_right_chunks, split_right_loop],
    "merge_heads": [merge_right_cat, merge_right_contiguous_view, merge_right_flatten],
    "transpose_qkv": [tqkv_right_split_heads, tqkv_right_loop],
    "transpose_output": [tout_right_loop, tout_right_merge],
    "repeat_valid_lens": [rvl_right_expand, rvl_right_loop],
    "multi_head_attention": [mha_right_d2l, mha_right_loop_heads, mha_right_torch_module],
    "padding_mask": [pm_right_unsqueeze, pm_right_reshape, pm_right_none_indexing, pm_right_loop, pm_right_negated_padding],
    "torch_key_padding_mask": [kpm_right_ge, kpm_right_negate_course_mask, kpm_right_logical_not_reshape, kpm_right_loop],
}

REQUIRED_IDS = {
    "softmax_weights",
    "soft_lookup",
    "masked_softmax",
    "scaled_dot_product_attention",
    "causal_mask",
    "split_heads",
    "merge_heads",
    "transpose_qkv",
    "transpose_output",
    "repeat_valid_lens",
    "multi_head_attention",
    "padding_mask",
    "torch_key_padding_mask",
}


def _wrong_cases():
    for exercise_id, entries in WRONG.items():
        for entry in entries:
            fn, phrase = entry[:2]
            status = entry[2] if len(entry) > 2 else "failed"
            yield pytest.param(exercise_id, fn, phrase, status, id=f"{exercise_id}-{fn.__name__}")


def _right_cases():
    for exercise_id, fns in RIGHT.items():
        for fn in fns:
            yield pytest.param(exercise_id, fn, id=f"{exercise_id}-{fn.__name__}")


# =============================================================================================
# The tests
# =============================================================================================


def test_every_required_exercise_exists():
    # Chapters 1-4 are tested here; later chapters test theirs in tests/test_exercises_chNN.py.
    assert REQUIRED_IDS <= set(EXERCISES)
    assert set(WRONG) == REQUIRED_IDS == set(RIGHT)


def test_every_chapter_module_is_registered_once():
    """Each mhalib/exercises/chNN_*.py is in EXERCISES, and no id is defined twice."""
    import importlib
    from pathlib import Path

    import mhalib.exercises as package

    files = sorted(Path(package.__file__).parent.glob("ch[0-9][0-9]_*.py"))
    assert len(files) >= 4
    modules = [importlib.import_module(f"mhalib.exercises.{f.stem}") for f in files]
    assert [m.__name__ for m in package._CHAPTERS] == [m.__name__ for m in modules]  # in course order
    ids = [exercise.id for m in modules for exercise in m.ALL]
    assert len(ids) == len(set(ids)) and set(ids) == set(EXERCISES)


@pytest.mark.parametrize("exercise_id", sorted(REQUIRED_IDS))
def test_reference_and_solution_pass(exercise_id):
    exercise = EXERCISES[exercise_id]
    for fn in (exercise.reference, exercise.solution_function):
        result = check(exercise_id, fn)
        assert result.status == "passed", result.message
        assert bool(result) is True
        assert result.message.startswith("✅")


@pytest.mark.parametrize("exercise_id", sorted(REQUIRED_IDS))
def test_stub_is_not_attempted(exercise_id):
    result = check(exercise_id, stub)
    assert result.status == "not_attempted"
    assert not result
    assert "not attempted" in result.message
    assert "Traceback" not in result.message


@pytest.mark.parametrize("exercise_id", sorted(REQUIRED_IDS))
def test_catalogue_has_five_wrong_answers(exercise_id):
    assert len(WRONG[exercise_id]) >= 5


@pytest.mark.parametrize("exercise_id, fn, phrase, status", list(_wrong_cases()))
def test_wrong_answer_gets_targeted_message(exercise_id, fn, phrase, status):
    result = check(exercise_id, fn)
    assert result.status == status, result.message
    assert not result
    assert phrase in result.message, result.message
    assert "Likely mistake:" in result.message


@pytest.mark.parametrize("exercise_id, fn", list(_right_cases()))
def test_right_answer_written_differently_passes(exercise_id, fn):
    result = check(exercise_id, fn)
    assert result.status == "passed", result.message


def test_module_catalogue_variants_are_recognised_as_themselves():
    for exercise in EXERCISES.values():
        for mistake in exercise.mistakes:
            for variant in mistake.variants:
                result = exercise.check(variant, show=False)
                assert mistake.key in result.mistakes, (exercise.id, mistake.key, result.message)


def test_padding_mask_reference_matches_mhalib_and_torch_module():
    """The two masks do what the exercises say: ours in mhalib's attention, PyTorch's in its module."""
    torch.manual_seed(0)
    B, S, D, H = 3, 5, 8, 2
    valid_lens = torch.tensor([5, 2, 3])  # >= 1: a fully padded row is NaN in PyTorch's module
    x = torch.randn(B, S, D)
    theirs = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    mine = mhalib.MultiHeadAttention.from_torch(theirs).eval()
    key_padding_mask = EXERCISES["torch_key_padding_mask"].solution_function(valid_lens, S)
    out_theirs, _ = theirs(x, x, x, key_padding_mask=key_padding_mask)
    out_mine, _ = mine(x, x, x, valid_lens=valid_lens)
    torch.testing.assert_close(out_mine, out_theirs)
    q = k = v = torch.randn(B, H, S, D // H)
    mask = EXERCISES["padding_mask"].solution_function(valid_lens, S)  # (B, 1, 1, S)
    torch.testing.assert_close(
        mhalib.scaled_dot_product_attention(q, k, v, attn_mask=mask)[0],
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    )
    # A (B, S) mask lines up as (1, 1, B, S) against (B, H, L, S): an error when B != L ...
    with pytest.raises(RuntimeError):
        torch.broadcast_shapes(pm_no_head_axes(valid_lens, S).shape, (B, H, S, S))
    # ... and silently wrong when B == L: query b of every sequence gets sequence b's length.
    L = S = B
    wrong = pm_no_head_axes(valid_lens, S).expand(B, H, L, S)
    right = EXERCISES["padding_mask"].solution_function(valid_lens, S).expand(B, H, L, S)
    assert not torch.equal(wrong, right)
    torch.testing.assert_close(wrong[0, 0], right[:, 0, 0])  # row i of sequence 0 = sequence i's mask


# --- robustness: whatever the learner's function does, the check answers ----------------------


def test_other_exception_is_an_error_with_type_message_and_line():
    def my_causal_mask(L):
        size = L + 1
        raise ValueError(f"something off with {size}")

    result = check("causal_mask", my_causal_mask)
    assert result.status == "error"
    assert "ValueError: something off with 2" in result.message
    assert 'line 3 of your function: raise ValueError(f"something off with {size}")' in result.message
    assert "Traceback" not in result.message


def test_error_inside_torch_points_at_the_learners_line():
    def my_split_heads(x, num_heads):
        B, L, D = x.shape
        return x.reshape(B, L, num_heads, D)  # wrong size: reshape raises

    result = check("split_heads", my_split_heads)
    assert result.status == "error"
    assert "RuntimeError" in result.message
    assert "line 3 of your function: return x.reshape(B, L, num_heads, D)" in result.message


def test_wrong_shape_is_failed_with_shapes():
    result = check("causal_mask", lambda L: torch.ones(L, L + 1, dtype=torch.bool).tril())
    assert result.status == "failed"
    assert "Expected mask of shape (1, 1), got shape (1, 2)" in result.message


def test_nan_output_is_failed_with_location():
    result = check("split_heads", lambda x, H: solution_split_heads(x, H) * float("nan"))
    assert result.status == "failed"
    assert "contains NaN (first at index (0, 0, 0, 0))" in result.message


def test_in_place_modification_of_an_input_is_failed():
    def my_masked_softmax(scores, valid_lens):
        if valid_lens is not None:
            allowed = _allowed(scores, valid_lens)
            scores.masked_fill_(~allowed, -1e9)  # changes the caller's scores
            return torch.softmax(scores, dim=-1) * allowed
        return torch.softmax(scores, dim=-1)

    result = check("masked_softmax", my_masked_softmax)
    assert result.status == "failed"
    assert "changed its input `scores` in place" in result.message


def test_hang_is_stopped_by_the_timeout():
    release = threading.Event()

    def my_causal_mask(L):
        release.wait(30)  # "hangs" until the test releases it
        return causal_right_loop(L)

    try:
        result = check("causal_mask", my_causal_mask, timeout=0.2)
    finally:
        release.set()
    assert result.status == "error"
    assert "did not return within 0.2 s" in result.message


def test_package_timeout_is_the_default(monkeypatch):
    import mhalib.exercises

    assert mhalib.exercises.TIMEOUT == 5.0
    monkeypatch.setattr(mhalib.exercises, "TIMEOUT", 0.2)
    release = threading.Event()
    try:
        result = check("causal_mask", lambda L: release.wait(30))
    finally:
        release.set()
    assert "did not return within 0.2 s" in result.message


def test_stored_notebook_outputs_keep_their_text():
    # Chapters store these outputs and nbval compares them: changing this text means
    # re-executing every chapter with exercises.
    assert check("causal_mask", stub).message == (
        "✏️ `causal_mask`: not attempted yet.\n"
        "Replace the line `raise NotImplementedError(...)` with your code and run the cell again.\n"
        'Run `EXERCISES["causal_mask"].hint()` for a hint.'
    )
    not_attempted_html = check("causal_mask", stub)._repr_html_()
    assert "`" not in not_attempted_html  # code is shown as <code>, not as raw backticks
    assert "<code>raise NotImplementedError(...)</code>" in not_attempted_html
    passed = check("causal_mask", causal_right_loop)
    assert passed.message == "✅ `causal_mask`: passed all 4 cases (L = 1; L = 2; L = 3; L = 5)."
    assert passed._repr_html_() == (
        '<div class="mhalib-check mhalib-check-passed" style="border-left: 5px solid #2e7d32; '
        'padding: 0.4em 0.8em; margin: 0.3em 0;"><strong style="color: #2e7d32;">✅ <code>causal_mask</code>: '
        "passed all 4 cases (L = 1; L = 2; L = 3; L = 5).</strong></div>"
    )


def test_an_answer_the_checker_cannot_handle_is_an_error_not_a_crash():
    class Odd(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            raise RuntimeError("odd tensor")

    result = check("causal_mask", lambda L: torch.ones(L, L, dtype=torch.bool).tril().as_subclass(Odd))
    assert result.status == "error"
    assert "could not compare your answer (RuntimeError: odd tensor)" in result.message


def test_list_instead_of_tensor_is_failed():
    result = check("causal_mask", lambda L: [[j <= i for j in range(L)] for i in range(L)])
    assert result.status == "failed"
    assert "Expected mask to be a torch.Tensor, got a list" in result.message


def test_forgotten_return_is_named():
    def my_merge_heads(x):
        x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)

    result = check("merge_heads", my_merge_heads)
    assert result.status == "failed"
    assert "did you forget the `return` statement?" in result.message


def test_float32_input_must_give_float32_output():
    result = check("split_heads", lambda x, H: solution_split_heads(x, H).double())
    assert result.status == "failed"
    assert "float32 input" in result.message
    assert "Expected output of dtype torch.float32, got dtype torch.float64" in result.message


def test_tuple_of_wrong_length():
    result = check("scaled_dot_product_attention", lambda q, k, v, m=None: (*solution_scaled_dot_product_attention(q, k, v, m), None))
    assert result.status == "failed"
    assert "Expected a tuple of 2 values, got a tuple of 3" in result.message


def test_wrong_signature_is_an_error_that_shows_the_expected_call():
    result = check("scaled_dot_product_attention", lambda q, k, v: solution_scaled_dot_product_attention(q, k, v))
    assert result.status == "error"
    assert "TypeError" in result.message
    assert "calls your function as scaled_dot_product_attention(q, k, v, mask=None)" in result.message


def test_partly_written_function_is_not_finished():
    def my_masked_softmax(scores, valid_lens):
        if valid_lens is None:
            return torch.softmax(scores, dim=-1)
        raise NotImplementedError("lengths: to do")

    result = check("masked_softmax", my_masked_softmax)
    assert result.status == "not_attempted"
    assert "not finished: your function raised NotImplementedError on case 2 of 8" in result.message


def test_two_slips_on_the_same_inputs_are_not_misattributed():
    def my_attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / q.shape[-1]  # scaled by E ...
        if mask is not None:
            scores = scores.masked_fill(~mask, NEG_INF)
        weights = scores.softmax(dim=-1)
        return weights, weights @ v  # ... and the outputs swapped

    result = check("scaled_dot_product_attention", my_attention)
    assert result.status == "failed"
    assert result.mistakes == ()
    assert "Likely mistake" not in result.message
    assert 'Case 1 of 7, "one query, no mask"' in result.message
    assert "Expected out of shape (1, 1, 2), got shape (1, 1, 3)" in result.message and "hint()" in result.message


def test_two_slips_on_different_inputs_are_named_one_at_a_time():
    def my_attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1)  # no scale (seen on the first case) ...
        if mask is not None:
            scores = scores.masked_fill(mask, -1e9)  # ... and the mask inverted (seen once fixed)
        weights = scores.softmax(-1)
        return weights @ v, weights

    result = check("scaled_dot_product_attention", my_attention)
    assert result.mistakes == ("no_scale",)

    def my_attention_fixed_scale(q, k, v, mask=None):
        return my_attention(q / math.sqrt(q.shape[-1]), k, v, mask)

    result = check("scaled_dot_product_attention", my_attention_fixed_scale)
    assert result.mistakes == ("inverted_mask",)


def test_unknown_slip_in_multi_head_attention_shows_expected_and_got():
    def my_mha(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
        return solution_multi_head_attention(query, key, value, W_q, W_q, W_v, W_o, num_heads, valid_lens)

    result = check("multi_head_attention", my_mha)
    assert result.status == "failed" and result.mistakes == ()
    assert "First difference at index (0, 0, 0)." in result.message


def test_small_inputs_are_written_out():
    result = check("split_heads", split_view_no_transpose)
    assert "x =\n  [[[ 0.0000,  1.0000,  2.0000,  3.0000]\n    [ 4.0000,  5.0000,  6.0000,  7.0000]]]" in result.message


def test_calling_instead_of_passing_the_function():
    result = check("causal_mask", causal_right_loop(3))
    assert result.status == "error"
    assert "expects your function itself" in result.message


def test_unrecognised_wrong_values_show_smallest_case_expected_and_got():
    result = check("causal_mask", lambda L: torch.eye(L, dtype=torch.bool) | (torch.arange(L)[:, None] == L - 1))
    assert result.status == "failed"
    assert result.mistake is None
    assert 'Case 3 of 4, "L = 3"' in result.message  # L = 1 and 2 happen to pass
    assert "Expected mask:" in result.message and "Got:" in result.message
    assert "hint()" in result.message


# --- determinism, RNG, display -----------------------------------------------------------------


def test_check_leaves_the_global_rng_alone_and_is_deterministic():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = check("masked_softmax", ms_d2l_minus_1e6).message
    assert torch.equal(torch.get_rng_state(), state)
    assert check("masked_softmax", ms_d2l_minus_1e6).message == first
    assert "0x" not in first and "/" not in first.split("Likely mistake")[0]


def test_result_repr_is_short_and_plain_text_printed_outside_ipython(capsys):
    result = EXERCISES["causal_mask"].check(causal_right_loop)
    assert repr(result) == "<CheckResult causal_mask: passed>"
    out = capsys.readouterr().out
    assert out.strip() == result.message
    assert "✅" in result._repr_html_()


def test_feedback_is_displayed_exactly_once_in_ipython():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    try:
        shell.user_ns["causal_triu"] = causal_triu
        shell.run_cell("from mhalib.exercises import EXERCISES", store_history=False)
        with capture_output() as captured:
            shell.run_cell('EXERCISES["causal_mask"].check(causal_triu)', store_history=False)
        assert len(captured.outputs) == 1
        bundle = captured.outputs[0].data
        assert "allowed the future" in bundle["text/plain"]
        assert "allowed the future" in bundle["text/html"]
        assert "CheckResult" not in captured.stdout and "allowed the future" not in captured.stdout
        # Assigned, it is shown once by check(); shown again in a later cell, it displays itself.
        with capture_output() as captured:
            shell.run_cell('r = EXERCISES["causal_mask"].check(causal_triu)', store_history=False)
        assert len(captured.outputs) == 1
        with capture_output() as captured:
            shell.run_cell("r", store_history=False)
        assert len(captured.outputs) == 1 and "allowed the future" in captured.outputs[0].data["text/plain"]
    finally:
        InteractiveShell.clear_instance()


def test_hints_are_progressive_and_run_out(capsys):
    exercise = EXERCISES["split_heads"]
    exercise.reset_hints()
    try:
        for i in range(1, len(exercise.hints) + 1):
            exercise.hint()
            assert capsys.readouterr().out.startswith(f"Hint {i} of {len(exercise.hints)}:")
        exercise.hint()
        assert "No more hints" in capsys.readouterr().out
    finally:
        exercise.reset_hints()


def test_solution_shows_readable_source(capsys):
    EXERCISES["repeat_valid_lens"].solution()
    out = capsys.readouterr().out
    assert "def solution_repeat_valid_lens(valid_lens" in out
    assert "torch.repeat_interleave(valid_lens, num_heads, dim=0)" in out


def test_shortcuts_and_unknown_id():
    import mhalib.exercises as ex

    assert ex.check("causal_mask", causal_right_arange, show=False).status == "passed"
    with pytest.raises(KeyError, match="no exercise 'causal'; the exercises are: softmax_weights, soft_lookup, masked_softmax"):
        ex.hint("causal")


def test_import_mhalib_is_lazy_and_exercises_need_no_matplotlib():
    code = (
        "import sys, mhalib\n"
        "assert 'mhalib.exercises' not in sys.modules\n"
        "mhalib.exercises.EXERCISES\n"
        "assert 'mhalib.exercises' in sys.modules\n"
        "assert 'matplotlib' not in sys.modules\n"
        "assert 'IPython' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# =============================================================================================
# The table of the report
# =============================================================================================


def catalogue_table() -> list[tuple[str, int, int]]:
    rows = []
    for exercise_id, entries in WRONG.items():
        caught = 0
        for entry in entries:
            fn, phrase = entry[:2]
            result = check(exercise_id, fn)
            caught += (not result) and phrase in result.message
        rows.append((exercise_id, len(entries), caught))
    return rows


if __name__ == "__main__":
    rows = catalogue_table()
    print(f"| {'exercise':30} | wrong answers | caught with targeted message |")
    print(f"|{'-' * 32}|---------------|------------------------------|")
    for exercise_id, n, caught in rows:
        print(f"| {exercise_id:30} | {n:13} | {caught:28} |")
    print(f"| {'total':30} | {sum(r[1] for r in rows):13} | {sum(r[2] for r in rows):28} |")


def test_subtracting_the_global_max_is_named():
    def global_max_softmax(scores):
        exps = torch.exp(scores - scores.max())  # one max for the whole tensor
        return exps / exps.sum(dim=-1, keepdim=True)

    result = check("softmax_weights", global_max_softmax)
    assert result.status == "failed"
    assert "each row's own" in result.message


def test_integer_lengths_of_another_integer_dtype_pass():
    # int32 lengths returned as int64 are still the right lengths.
    result = check("repeat_valid_lens", lambda lens, h: torch.repeat_interleave(lens, h, dim=0).long())
    assert result.status == "passed", result.message


def test_float64_result_for_float32_input_is_told_to_keep_the_dtype():
    result = check("softmax_weights", lambda scores: torch.softmax(scores.double(), dim=-1))
    assert result.status == "failed"
    assert "Keep the input's dtype" in result.message


# --- issue 9: the gaps the checker closed ----------------------------------------------------


def test_issue_9_softmax_shifted_by_the_minimum_is_rejected_and_named():
    assert torch.isnan(sw_shift_by_min(torch.tensor([[0.0, 100.0]]))).any()  # the answer the issue quotes
    result = check("softmax_weights", sw_shift_by_min)
    assert result.status == "failed" and result.mistakes == ("min_shift",), result.message
    assert "instead of its largest" in result.message


def test_issue_9_masked_softmax_with_the_max_over_padded_keys_is_rejected_and_named():
    weights = ms_max_over_all_keys(torch.tensor([[[0.0, 0.0, 200.0]]]), torch.tensor([2]))
    assert torch.equal(weights, torch.zeros(1, 1, 3))  # all zeros, as the issue found
    result = check("masked_softmax", ms_max_over_all_keys)
    assert result.status == "failed" and result.mistakes == ("max_over_padding",), result.message
    assert "padded ones included" in result.message


def test_softmax_cases_span_more_than_exp_can_take_in_float32():
    # A float32 row wider than 2 * 88.7 overflows every shift but the row's maximum
    # (the minimum, the mean, nothing); the +-1000 rows alone span only 3-4.
    wide = [
        row
        for case in EXERCISES["softmax_weights"].cases()
        if case.args[0].dtype == torch.float32
        for row in case.args[0].reshape(-1, case.args[0].shape[-1])
    ]
    assert any(float(row.max() - row.mean()) > 89 for row in wide)
    assert any(float(row.min()) > -89 and float(row.max() - row.min()) > 89 for row in wide)


@pytest.mark.parametrize("exercise_id, fn", [
    ("scaled_dot_product_attention", sdpa_scaled_by_query_length),
    ("multi_head_attention", mha_scaled_by_query_length),
])
def test_dividing_by_sqrt_of_the_query_length_is_not_a_forgotten_scale(exercise_id, fn):
    result = check(exercise_id, fn)
    assert result.mistakes == ("scaled_by_sqrt_L",), result.message
    assert "forget the scale" not in result.message
    # Some case has L = 1 (where sqrt(L) = 1 looks like no scale); another one separates them.
    lengths = {case.args[0].shape[-2] for case in EXERCISES[exercise_id].cases()}
    assert lengths - {1}


def test_multi_head_cases_have_a_sequence_and_a_query_of_length_0():
    lens = [case.args[-1] for case in EXERCISES["multi_head_attention"].cases() if case.args[-1] is not None]
    assert any(v.dim() == 1 and bool((v == 0).any()) for v in lens)
    assert any(v.dim() == 2 and bool((v == 0).any()) for v in lens)


def test_multi_head_names_the_single_head_slips():
    keys = {m.key for m in EXERCISES["multi_head_attention"].mistakes}
    assert {
        "masked_after_softmax", "zero_fill", "keys_values_swapped", "only_wo_untransposed",
        "scale_after_softmax", "mask_transposed", "nan_empty_rows", "uniform_empty_rows",
    } <= keys


@pytest.mark.parametrize("exercise_id", sorted(REQUIRED_IDS))
def test_solutions_are_device_safe(exercise_id):
    """Run each solution on the "meta" device: a tensor built on the CPU next to it (e.g.
    torch.arange(S) without device=) raises, as it would on a GPU."""
    exercise = EXERCISES[exercise_id]
    for case in exercise.cases():
        args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in case.args)
        out = exercise.solution_function(*args)
        for t in out if isinstance(out, tuple) else (out,):
            if any(isinstance(a, torch.Tensor) for a in case.args):  # causal_mask(L) names no device
                assert t.device.type == "meta", (exercise_id, case.name)


def test_a_cpu_only_construction_fails_the_device_check():
    def cpu_only_padding_mask(valid_lens, S):
        return (torch.arange(S)[None, :] < valid_lens[:, None])[:, None, None, :]

    with pytest.raises(RuntimeError, match="device"):
        cpu_only_padding_mask(torch.tensor([1, 2], device="meta"), 3)
