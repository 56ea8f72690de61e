"""``TransformerBlock``: multi-head self-attention and an MLP, each with a residual and a LayerNorm.

The block of "Attention Is All You Need" and of BERT (post-LN) or of GPT-2 and most
later models (pre-LN), with the semantics of ``torch.nn.TransformerEncoderLayer``::

    post-LN (norm_first=False)                 pre-LN (norm_first=True)
    x = norm1(x + dropout1(attention(x)))      x = x + dropout1(attention(norm1(x)))
    x = norm2(x + dropout2(ffn(x)))            x = x + dropout2(ffn(norm2(x)))

    ffn(x) = linear2(dropout(activation(linear1(x))))

Submodules (stable names; chapters 7 and 8 map checkpoints onto them):
    attention   mhalib.MultiHeadAttention(embed_dim, num_heads): q_proj, k_proj, v_proj, out_proj
    norm1       nn.LayerNorm(embed_dim) around the attention sub-layer
    ffn         FeedForward: linear1 (D -> ffn_dim), activation, dropout, linear2 (ffn_dim -> D)
    norm2       nn.LayerNorm(embed_dim) around the feed-forward sub-layer
    dropout1, dropout2   dropout on each sub-layer's output, before the residual sum

Shapes:
    B batch, L length, D = embed_dim, H heads, F = ffn_dim.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .functional import _check_floating, _check_tensor
from .modules import MultiHeadAttention

__all__ = ["FeedForward", "TransformerBlock"]

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _check_activation(activation: object) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} (as PyTorch names them), got {activation!r}")
    return activation


def _check_positive_int(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return n


def _check_dropout(dropout: object) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return float(dropout)


class FeedForward(nn.Module):
    """The position-wise MLP of a block: the same two-layer network on every token.

    ::

        out = linear2(dropout(activation(linear1(x))))     # (B, L, D) -> (B, L, F) -> (B, L, D)

    Shapes:
        x (..., D) -> (..., D); hidden width F = ffn_dim (usually 4 * D)
    """

    def __init__(self, embed_dim: int, ffn_dim: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        self.linear1 = nn.Linear(embed_dim, ffn_dim, bias=bias)  # (D -> F)
        self.dropout = nn.Dropout(_check_dropout(dropout))
        self.linear2 = nn.Linear(ffn_dim, embed_dim, bias=bias)  # (F -> D)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"

    def forward(self, x: Tensor) -> Tensor:
        hidden = ACTIVATIONS[self.activation](self.linear1(x))  # (..., D) -> (..., F)
        return self.linear2(self.dropout(hidden))  # (..., F) -> (..., D)


class TransformerBlock(nn.Module):
    """One transformer layer: self-attention and an MLP, each wrapped in a residual and a LayerNorm.

    ``norm_first=False`` (the default, as PyTorch and BERT) normalises *after* each residual
    sum (post-LN); ``norm_first=True`` normalises each sub-layer's *input* and leaves the
    residual path untouched (pre-LN). Defaults follow ``torch.nn.TransformerEncoderLayer``
    except ``dropout``, which is 0 here (PyTorch: 0.1) so that a block is deterministic
    unless you ask for dropout.

    Masks use the course's convention (True = may attend), see
    :class:`mhalib.MultiHeadAttention`: ``attn_mask`` (L, L) or (B, L, L),
    ``valid_lens`` (B,) padding lengths, ``is_causal=True`` for a decoder block (each token
    sees itself and the past only). They combine.

    Shapes:
        x (B, L, D) -> (B, L, D)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("embed_dim", embed_dim)
        _check_positive_int("ffn_dim", ffn_dim)
        dropout = _check_dropout(dropout)
        _check_activation(activation)
        if not isinstance(norm_first, bool):
            raise TypeError(f"norm_first must be a bool, got {type(norm_first).__name__}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.norm_first = norm_first
        self.attention = MultiHeadAttention(embed_dim, num_heads, dropout=dropout, bias=bias)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.ffn = FeedForward(embed_dim, ffn_dim, dropout=dropout, activation=activation, bias=bias)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.dropout2 = nn.Dropout(dropout)

    @property
    def activation(self) -> str:
        return self.ffn.activation

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        valid_lens: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        _check_tensor("x", x, ndim=3)
        _check_floating("x", x)
        if x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must have embed_dim={self.embed_dim} features (B, L, {self.embed_dim}), got shape {tuple(x.shape)}")
        if self.norm_first:  # pre-LN: the residual path x -> x + ... is never normalised
            x = x + self._attention_block(self.norm1(x), attn_mask, valid_lens, is_causal)  # (B, L, D)
            x = x + self.dropout2(self.ffn(self.norm2(x)))  # (B, L, D)
        else:  # post-LN: normalise after each residual sum
            x = self.norm1(x + self._attention_block(x, attn_mask, valid_lens, is_causal))  # (B, L, D)
            x = self.norm2(x + self.dropout2(self.ffn(x)))  # (B, L, D)
        return x

    def _attention_block(self, x: Tensor, attn_mask: Tensor | None, valid_lens: Tensor | None, is_causal: bool) -> Tensor:
        out, _ = self.attention(
            x, x, x, attn_mask=attn_mask, valid_lens=valid_lens, is_causal=is_causal, need_weights=False
        )  # (B, L, D) -> (B, L, D)
        return self.dropout1(out)

    # --- conversion to and from torch.nn.TransformerEncoderLayer --------------------------

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> TransformerBlock:
        """A copy of a ``torch.nn.TransformerEncoderLayer`` that gives the same outputs.

        PyTorch's ``linear1``/``linear2`` become ``ffn.linear1``/``ffn.linear2`` and its
        ``self_attn`` becomes ``attention`` (see ``MultiHeadAttention.from_torch``). Our block
        is batch first whatever ``layer.self_attn.batch_first`` says. Remember PyTorch's
        opposite boolean masks: its ``src_key_padding_mask`` is True at *padding*.
        """
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(f"layer must be a torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
        activation = _activation_name(layer.activation)
        weight = layer.linear1.weight
        has_bias = layer.linear1.bias is not None
        mine = cls(
            layer.self_attn.embed_dim,
            layer.self_attn.num_heads,
            layer.linear1.out_features,
            dropout=layer.dropout.p,
            activation=activation,
            norm_first=layer.norm_first,
            layer_norm_eps=layer.norm1.eps,
            bias=has_bias,
        ).to(device=weight.device, dtype=weight.dtype)
        mine.attention = MultiHeadAttention.from_torch(layer.self_attn)
        mine.ffn.linear1.load_state_dict(layer.linear1.state_dict())
        mine.ffn.linear2.load_state_dict(layer.linear2.state_dict())
        mine.norm1.load_state_dict(layer.norm1.state_dict())
        mine.norm2.load_state_dict(layer.norm2.state_dict())
        return mine.train(layer.training)

    def to_torch(self) -> nn.TransformerEncoderLayer:
        """A ``torch.nn.TransformerEncoderLayer(batch_first=True)`` with the same weights."""
        weight = self.ffn.linear1.weight
        theirs = nn.TransformerEncoderLayer(
            self.embed_dim,
            self.num_heads,
            self.ffn_dim,
            dropout=self.dropout1.p,
            activation=self.activation,
            layer_norm_eps=self.norm1.eps,
            batch_first=True,
            norm_first=self.norm_first,
            bias=self.ffn.linear1.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        theirs.self_attn = self.attention.to_torch()
        theirs.linear1.load_state_dict(self.ffn.linear1.state_dict())
        theirs.linear2.load_state_dict(self.ffn.linear2.state_dict())
        theirs.norm1.load_state_dict(self.norm1.state_dict())
        theirs.norm2.load_state_dict(self.norm2.state_dict())
        return theirs.train(self.training)


def _activation_name(activation: object) -> str:
    """PyTorch stores the activation as F.relu / F.gelu or as a module; name it."""
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is F.gelu or (isinstance(activation, nn.GELU) and activation.approximate == "none"):
        return "gelu"
    raise ValueError(f"layer.activation must be relu or gelu (exact), got {activation!r}")
