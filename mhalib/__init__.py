"""mhalib: the tested multi-head attention library of the course "Multi-Head Attention, Hands On".

Shape legend, used in every docstring and shape comment of the library and the book:

    B   batch size                      H   number of heads
    L   query length                    S   key/value length
    D   model width (embed_dim)         Dh  head width, D // H (head_dim)
    E   query/key feature size          Ev  value feature size

Mask convention (PyTorch's ``scaled_dot_product_attention``): a boolean mask is True where
a query **may attend**; a float mask is added to the scores. A query that may attend to
nothing gets zero weights and a zero output.

Submodules loaded on demand: ``mhalib.plot`` (matplotlib figures), ``mhalib.exercises``
(the exercise checker), ``mhalib.pretrained`` (real models rebuilt from mhalib parts) and
``mhalib.parallel`` (heads split across processes with torch.distributed).
``import mhalib`` itself imports only torch.
"""

from .functional import (
    causal_mask,
    masked_softmax,
    merge_heads,
    padding_mask,
    repeat_kv,
    scaled_dot_product_attention,
    split_heads,
    transpose_output,
    transpose_qkv,
)
from .kv_cache import KVCache
from .modules import MultiHeadAttention
from .positional import (
    LearnedPositions,
    apply_rope,
    apply_rope_interleaved,
    rope_angles,
    rotate_half,
    sinusoidal_positions,
)
from .blocks import FeedForward, TransformerBlock
from .decoder import Decoder, DecoderBlock, RMSNorm, SwiGLU
from .tiled import causal_block_kind, tiled_attention

__version__ = "0.1.0"

__all__ = [
    "Decoder",
    "DecoderBlock",
    "FeedForward",
    "KVCache",
    "LearnedPositions",
    "MultiHeadAttention",
    "RMSNorm",
    "SwiGLU",
    "TransformerBlock",
    "apply_rope",
    "apply_rope_interleaved",
    "causal_block_kind",
    "causal_mask",
    "masked_softmax",
    "merge_heads",
    "padding_mask",
    "repeat_kv",
    "rope_angles",
    "rotate_half",
    "scaled_dot_product_attention",
    "sinusoidal_positions",
    "split_heads",
    "transpose_output",
    "transpose_qkv",
    "tiled_attention",
]


def __getattr__(name: str):
    # `mhalib.plot`, `mhalib.exercises`, `mhalib.pretrained`, `mhalib.parallel`: loaded on first use,
    # not by `import mhalib`.
    if name in ("plot", "exercises", "pretrained", "parallel"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mhalib' has no attribute {name!r}")
