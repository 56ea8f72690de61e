"""Tensor-parallel multi-head attention: whole heads per process, one all-reduce.

Megatron-LM's split (Shoeybi et al. 2019) of one attention layer over P processes:
rank r owns heads ``r*H/P .. (r+1)*H/P - 1``, that is

    rows    r*D/P:(r+1)*D/P  of W_q, W_k, W_v (and of their biases)   (D/P, D)
    columns r*D/P:(r+1)*D/P  of W_o                                   (D, D/P)

It computes its heads alone and multiplies them by its columns of W_o, which gives a
*partial* (B, L, D) output; the sum of the P partial outputs (one all-reduce) is the
output of the whole layer. ``out_proj``'s bias is held by rank 0 only, so the sum adds
it exactly once, bit for bit, and its gradient lands on one parameter (a bias divided
by P on every rank would be rounded and would take P optimizer steps per step).

Gradients, the Megatron "f / g" pair (``_ReduceForward`` / ``_ReduceBackward``):

    g  at the output: forward all-reduce (sum of partials), backward identity. The loss
       is computed from the same replicated output on every rank, so every rank already
       holds the full dL/d(out); summing it again over ranks would multiply it by P. That
       is what ``torch.distributed.nn.functional.all_reduce`` does (its backward is an
       all-reduce too), and why it doubled the gradients with P = 2.
    f  at the input: forward identity, backward all-reduce. query, key and value are
       replicated; each rank's dL/d(query) covers only its own heads, so the full input
       gradient is the sum over ranks.

``spawn(fn, world_size, *args)`` runs ``fn(rank, world_size, *args)`` in fresh processes
(start method "spawn", gloo on 127.0.0.1, a free port) and returns rank 0's result. ``fn``
must be importable (defined in a module, not in a notebook cell): "spawn" starts a new
interpreter that finds ``fn`` by its module and name. Children's output goes to log
files, shown only when a rank fails, so the parent's output stays deterministic.

Shapes:
    B batch, H heads, L query length, S key/value length, D = embed_dim, Dh = D // H,
    P = world_size processes, each owning H/P heads.
"""

from __future__ import annotations

import datetime
import io
import os
import queue as queue_module
import socket
import tempfile
import time
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import check_attention_inputs, combined_mask, merge_heads, scaled_dot_product_attention, split_heads
from .modules import MultiHeadAttention

__all__ = [
    "ShardedHeads",
    "all_reduce_sum",
    "copy_to_ranks",
    "head_slice",
    "shard_heads",
    "spawn",
]


# --- the two autograd-correct collectives ----------------------------------------------


class _ReduceForward(torch.autograd.Function):
    """Megatron's g: forward all-reduce (sum), backward identity."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Every rank computed the loss from the same summed output,
        # so `grad` is already dL/d(partial_r) = dL/d(out): keep it.
        return grad


class _ReduceBackward(torch.autograd.Function):
    """Megatron's f: forward identity, backward all-reduce (sum)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # sum of every rank's heads' share
        return grad


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over the default process group; the gradient passes through unchanged."""
    return _ReduceForward.apply(x)


def copy_to_ranks(x: Tensor) -> Tensor:
    """``x`` unchanged; its gradient is summed over the default process group."""
    return _ReduceBackward.apply(x)


# --- sharding the weights --------------------------------------------------------------


def head_slice(num_heads: int, head_dim: int, rank: int, world_size: int) -> slice:
    """The features ``rank`` owns: its H/P whole heads, ``head_dim`` features each.

    Raises ``ValueError`` when ``world_size`` does not divide ``num_heads`` (a cut inside
    a head would give each rank part of its query-key dot products: a wrong result).
    """
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if num_heads % world_size != 0:
        raise ValueError(
            f"num_heads ({num_heads}) must be divisible by world_size ({world_size}): "
            "each rank must own whole heads"
        )
    per_rank = num_heads // world_size * head_dim
    return slice(rank * per_rank, (rank + 1) * per_rank)


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` (out, in) and ``bias``."""
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class ShardedHeads(nn.Module):
    """The part of a ``MultiHeadAttention`` that one rank owns; built by :func:`shard_heads`.

    Shapes:
        q_proj (D, D) -> (D/P, D), k_proj (D, kdim) -> (D/P, kdim), v_proj likewise,
        out_proj (D, D) -> (D, D/P), out_proj.bias (D,) on rank 0, None elsewhere.
        forward: query (B, L, D), key (B, S, kdim), value (B, S, vdim)
        -> out (B, L, D), the full output (summed over ranks).
    """

    def __init__(self, mha: MultiHeadAttention, rank: int, world_size: int) -> None:
        super().__init__()
        rows = head_slice(mha.num_heads, mha.head_dim, rank, world_size)
        self.rank = rank
        self.world_size = world_size
        self.embed_dim = mha.embed_dim
        self.kdim, self.vdim = mha.kdim, mha.vdim
        self.num_heads = mha.num_heads  # of the whole layer
        self.local_heads = mha.num_heads // world_size  # H/P, owned here
        self.head_dim = mha.head_dim
        self.head_offset = rank * self.local_heads  # first head owned here
        self.dropout = mha.dropout
        self.features = rows
        w = {name: getattr(mha, name).weight.detach() for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
        b = {name: getattr(mha, name).bias for name in w}
        b = {name: None if t is None else t.detach() for name, t in b.items()}
        # Rows of W_q, W_k, W_v: the output features of this rank's heads.
        self.q_proj = _linear(w["q_proj"][rows], None if b["q_proj"] is None else b["q_proj"][rows])
        self.k_proj = _linear(w["k_proj"][rows], None if b["k_proj"] is None else b["k_proj"][rows])
        self.v_proj = _linear(w["v_proj"][rows], None if b["v_proj"] is None else b["v_proj"][rows])
        # Columns of W_o: the input features that come from this rank's heads.
        out_bias = b["out_proj"] if rank == 0 else None
        self.out_proj = _linear(w["out_proj"][:, rows], out_bias)
        self.train(mha.training)

    def extra_repr(self) -> str:
        heads = f"{self.head_offset}..{self.head_offset + self.local_heads - 1}"
        return f"rank={self.rank}, world_size={self.world_size}, heads={heads} of {self.num_heads}"

    def partial(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """This rank's heads through its columns of W_o: a (B, L, D) partial output.

        No communication: the sum of the P partials is the layer's output.
        """
        # The whole layer's checks: they read embed_dim, kdim, vdim, which a shard keeps.
        check_attention_inputs(query, key, value, self.embed_dim, self.kdim, self.vdim)
        B, L, _ = query.shape
        S = key.shape[1]
        Hp = self.local_heads
        q = split_heads(self.q_proj(query), Hp)  # (B, L, D) -> (B, L, D/P) -> (B, H/P, L, Dh)
        k = split_heads(self.k_proj(key), Hp)  # (B, S, kdim) -> (B, S, D/P) -> (B, H/P, S, Dh)
        v = split_heads(self.v_proj(value), Hp)  # (B, S, vdim) -> (B, S, D/P) -> (B, H/P, S, Dh)
        mask = self._local_mask(attn_mask, is_causal, B, L, S, q.dtype, q.device)
        dropout_p = self.dropout if self.training else 0.0
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)
        else:
            out, _ = scaled_dot_product_attention(q, k, v, mask, dropout_p)
        return self.out_proj(merge_heads(out))  # (B, H/P, L, Dh) -> (B, L, D/P) -> (B, L, D)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """The full (B, L, D) output: the partials summed by one all-reduce.

        Needs an initialised default process group of ``world_size`` ranks.
        """
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ShardedHeads.forward needs torch.distributed.init_process_group() first")
        if dist.get_world_size() != self.world_size:
            raise ValueError(
                f"the process group has {dist.get_world_size()} ranks, this shard was cut for world_size={self.world_size}"
            )
        # f: replicated inputs, gradients summed over ranks (once per distinct tensor).
        inputs: dict[int, Tensor] = {}
        query, key, value = (inputs.setdefault(id(x), copy_to_ranks(x)) for x in (query, key, value))
        partial = self.partial(query, key, value, attn_mask, is_causal)  # (B, L, D), this rank's share
        return all_reduce_sum(partial)  # g: (B, L, D) summed over ranks

    # --- helpers ------------------------------------------------------------------------

    def _local_mask(
        self,
        attn_mask: Tensor | None,
        is_causal: bool,
        B: int,
        L: int,
        S: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor | None:
        """The mask for this rank's heads, broadcastable to (B, H/P, L, S), or None.

        Accepts what ``MultiHeadAttention`` accepts for the whole layer ((L, S), (B, L, S),
        (B*H, L, S), anything broadcasting to (B, H, L, S)), built by the same code with
        the whole layer's H; a per-head mask is then cut to this rank's heads.
        """
        mask = combined_mask(
            attn_mask, None, is_causal, num_heads=self.num_heads, batch=B, L=L, S=S, dtype=dtype, device=device
        )  # None, or broadcastable to (B, H, L, S); no cache, so top-left causal
        if mask is not None and mask.dim() == 4 and mask.shape[1] == self.num_heads > 1:
            first = self.head_offset
            mask = mask[:, first : first + self.local_heads]  # (B, H, L, S) -> (B, H/P, L, S)
        return mask


def shard_heads(mha: MultiHeadAttention, rank: int, world_size: int) -> ShardedHeads:
    """The part of ``mha`` that rank ``rank`` of ``world_size`` owns (copies of its weights).

    Rank r gets heads r*H/P .. (r+1)*H/P - 1: those rows of ``q_proj``, ``k_proj``,
    ``v_proj``, those columns of ``out_proj``, and ``out_proj``'s bias on rank 0 only
    (added once by the all-reduce). Its ``forward(query, key, value, attn_mask=None,
    is_causal=False)`` returns the full (B, L, D) output; ``.partial(...)`` returns this
    rank's share without communicating.

    Raises ``ValueError`` when ``world_size`` does not divide ``mha.num_heads``.

    Shapes:
        weights (D, D) -> rows (D/P, D) for q/k/v, columns (D, D/P) for out_proj
    """
    if not isinstance(mha, MultiHeadAttention):
        raise TypeError(f"mha must be a mhalib.MultiHeadAttention, got {type(mha).__name__}")
    if getattr(mha, "num_kv_heads", mha.num_heads) != mha.num_heads:
        raise ValueError(
            f"shard_heads handles plain multi-head attention; got num_kv_heads={mha.num_kv_heads} "
            f"!= num_heads={mha.num_heads}"
        )
    return ShardedHeads(mha, rank, world_size)


# --- launching processes ----------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int,
    world_size: int,
    port: int,
    timeout: float,
    threads: int,
    log_dir: str,
    results: Any,
    fn: Callable,
    args: tuple,
) -> None:
    """Runs in a child: quiet output, join the gloo group, call fn, send back rank 0's result."""
    log = open(os.path.join(log_dir, f"rank{rank}.log"), "w")
    os.dup2(log.fileno(), 1)  # the child's stdout and stderr go to its log file,
    os.dup2(log.fileno(), 2)  # never into the parent's (notebook's) output
    try:
        torch.set_num_threads(threads)
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        try:
            result = fn(rank, world_size, *args)
            dist.barrier()
        finally:
            dist.destroy_process_group()
        if rank == 0:
            buffer = io.BytesIO()
            torch.save(result, buffer)  # by value: no shared memory outliving the child
            results.put(("ok", rank, buffer.getvalue()))
    except BaseException:
        results.put(("error", rank, traceback.format_exc()))
    finally:
        log.flush()


def spawn(
    fn: Callable,
    world_size: int,
    *args: Any,
    timeout: float = 60.0,
    threads: int | None = None,
) -> Any:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; rank 0's result.

    ``fn`` must be defined in an importable module (the children are fresh interpreters,
    start method "spawn"; a function from a notebook cell cannot be found by them).
    Each child uses ``threads`` torch threads (default: the cores divided by the ranks).
    A rank that fails raises ``RuntimeError`` with its traceback; ranks still running
    after ``timeout`` seconds are killed and ``TimeoutError`` is raised. Children print to
    log files, which a failure quotes; nothing they print reaches this process's output.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if getattr(fn, "__module__", None) == "__main__" or "<locals>" in getattr(fn, "__qualname__", ""):
        raise ValueError(
            f"fn ({getattr(fn, '__qualname__', fn)!r}) must be importable by the child processes: "
            "define it at the top of a module (e.g. in mhalib), not in a notebook cell or inside a function"
        )
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // world_size)
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mhalib-spawn-") as log_dir:
        procs = [
            ctx.Process(
                target=_worker,
                args=(rank, world_size, port, timeout, threads, log_dir, results, fn, args),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        try:
            status, rank, payload = _first_result(results, procs, deadline)
            if status == "error":
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{payload}{_logs(log_dir, world_size)}")
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
            if any(p.is_alive() for p in procs):
                raise TimeoutError(f"a rank did not exit within timeout={timeout} s{_logs(log_dir, world_size)}")
            return torch.load(io.BytesIO(payload), weights_only=False)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join(5)
            results.close()


def _first_result(results: Any, procs: list, deadline: float) -> tuple[str, int, Any]:
    """Wait for rank 0's result or any rank's error, until ``deadline``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("spawn: no result before the timeout (a rank hung or is too slow)")
        try:
            return results.get(timeout=min(left, 0.5))
        except queue_module.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead:
                time.sleep(0.5)  # give its error message a moment to arrive
                try:
                    return results.get(timeout=0.1)
                except queue_module.Empty:
                    return ("error", dead[0], f"exit code {procs[dead[0]].exitcode}\n")


def _logs(log_dir: str, world_size: int) -> str:
    parts = []
    for rank in range(world_size):
        path = os.path.join(log_dir, f"rank{rank}.log")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()[-2000:]
            if text.strip():
                parts.append(f"\n--- output of rank {rank} ---\n{text}")
    return "".join(parts)


# --- workers for the chapter and the tests (importable, so spawn can find them) --------


def _setup(seed: int, embed_dim: int, num_heads: int, batch: int, length: int, dtype: torch.dtype):
    """The same full module and inputs on every rank (same seed); inputs need grad."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mha = MultiHeadAttention(embed_dim, num_heads).to(dtype)
    with torch.no_grad():  # non-zero biases, so that "bias added once" is tested
        for proj in (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj):
            proj.bias.copy_(torch.randn(proj.bias.shape, generator=gen, dtype=dtype))
    x = torch.randn(batch, length, embed_dim, generator=gen, dtype=dtype)
    kv = torch.randn(batch, length + 1, embed_dim, generator=gen, dtype=dtype)
    target = torch.randn(batch, length, embed_dim, generator=gen, dtype=dtype)
    return mha, x, kv, target


def _max_over_ranks(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def compare_with_single_process(
    rank: int,
    world_size: int,
    seed: int = 0,
    embed_dim: int = 16,
    num_heads: int = 4,
    batch: int = 2,
    length: int = 5,
    mask: str = "none",
    reduce: str = "mhalib",
    dtype: torch.dtype = torch.float64,
) -> dict[str, float]:
    """Sharded forward and backward against the full module, on every rank.

    ``mask``: "none", "causal" (is_causal=True), "bool" (a random (B, L, S) mask) or
    "cross" (key/value of length L+1, a float (L, S) mask). ``reduce``: "mhalib" (the
    f/g pair here) or "torch" (``torch.distributed.nn.functional.all_reduce`` for g).
    Returns the largest |difference| over all ranks for the output, the input gradients
    and every weight gradient against its slice of the full one, and the ratio of the
    sharded to the full q_proj weight gradient (1.0 when right, P with "torch"), with the
    smallest and largest such ratio over every gradient that is not zero in theory.
    """
    mha, x, kv, target = _setup(seed, embed_dim, num_heads, batch, length, dtype)
    query = x.clone().requires_grad_()
    if mask == "cross":
        key = value = kv.clone().requires_grad_()
    else:
        key = value = query
    S = key.shape[1]
    gen = torch.Generator().manual_seed(seed + 1)
    attn_mask, is_causal = None, False
    if mask == "causal":
        is_causal = True
    elif mask == "bool":
        attn_mask = torch.rand(batch, length, S, generator=gen) < 0.6
    elif mask == "cross":
        attn_mask = torch.randn(length, S, generator=gen, dtype=dtype)
    elif mask != "none":
        raise ValueError(f"mask must be 'none', 'causal', 'bool' or 'cross', got {mask!r}")

    # The reference: the whole layer in this process.
    ref_query = x.clone().requires_grad_()
    ref_key = ref_value = ref_query if mask != "cross" else kv.clone().requires_grad_()
    ref, _ = mha(ref_query, ref_key, ref_value, attn_mask=attn_mask, is_causal=is_causal, need_weights=False)
    ((ref - target) ** 2).sum().backward()

    shard = shard_heads(mha, rank, world_size)
    if reduce == "mhalib":
        out = shard(query, key, value, attn_mask=attn_mask, is_causal=is_causal)
    elif reduce == "torch":
        import torch.distributed.nn.functional as dist_fn

        # f once per distinct input, as ShardedHeads.forward does: a self-attention input
        # reaches the heads as query, key and value, and all three paths' gradients are summed
        inputs: dict[int, Tensor] = {}
        q, k, v = (inputs.setdefault(id(x), copy_to_ranks(x)) for x in (query, key, value))
        partial = shard.partial(q, k, v, attn_mask, is_causal)
        out = dist_fn.all_reduce(partial)
    else:
        raise ValueError(f"reduce must be 'mhalib' or 'torch', got {reduce!r}")
    ((out - target) ** 2).sum().backward()

    rows = shard.features
    diffs = {"output": (out - ref).abs().max().item(), "query.grad": (query.grad - ref_query.grad).abs().max().item()}
    if mask == "cross":
        diffs["key.grad"] = (key.grad - ref_key.grad).abs().max().item()
    for name in ("q_proj", "k_proj", "v_proj"):
        full, mine = getattr(mha, name), getattr(shard, name)
        diffs[f"{name}.weight.grad"] = (mine.weight.grad - full.weight.grad[rows]).abs().max().item()
        diffs[f"{name}.bias.grad"] = (mine.bias.grad - full.bias.grad[rows]).abs().max().item()
    diffs["out_proj.weight.grad"] = (shard.out_proj.weight.grad - mha.out_proj.weight.grad[:, rows]).abs().max().item()
    if rank == 0:
        diffs["out_proj.bias.grad"] = (shard.out_proj.bias.grad - mha.out_proj.bias.grad).abs().max().item()
    else:  # the bias lives on rank 0 only
        diffs["out_proj.bias.grad"] = 0.0 if shard.out_proj.bias is None else float("inf")
    diffs = {name: _max_over_ranks(v) for name, v in sorted(diffs.items())}
    ratio = shard.q_proj.weight.grad.norm() / mha.q_proj.weight.grad[rows].norm()
    diffs["q_proj.weight.grad ratio"] = _max_over_ranks(ratio.item())
    # The same ratio for every gradient whose true value is not (numerically) zero: the
    # key bias's gradient is exactly zero in theory (softmax ignores a shift of every score).
    pairs = [(query.grad, ref_query.grad), (shard.out_proj.weight.grad, mha.out_proj.weight.grad[:, rows])]
    if mask == "cross":
        pairs.append((key.grad, ref_key.grad))
    for name in ("q_proj", "k_proj", "v_proj"):
        full, mine = getattr(mha, name), getattr(shard, name)
        pairs += [(mine.weight.grad, full.weight.grad[rows]), (mine.bias.grad, full.bias.grad[rows])]
    if rank == 0:
        pairs.append((shard.out_proj.bias.grad, mha.out_proj.bias.grad))
    ratios = [(mine.norm() / true.norm()).item() for mine, true in pairs if true.norm() > 1e-8]
    diffs["smallest gradient ratio"] = -_max_over_ranks(-min(ratios))
    diffs["largest gradient ratio"] = _max_over_ranks(max(ratios))
    diffs["bytes all-reduced"] = float(out.numel() * out.element_size())
    return diffs


def sleep_on_rank(rank: int, world_size: int, sleeper: int, seconds: float) -> int:
    """A rank that hangs (for the timeout test): ``sleeper`` sleeps, then all meet."""
    if rank == sleeper:
        time.sleep(seconds)
    dist.barrier()
    return rank


def run_cases(rank: int, world_size: int, cases: list[tuple[Callable, dict]]) -> list[Any]:
    """``fn(rank, world_size, **kwargs)`` for each ``(fn, kwargs)``: many checks, one launch."""
    return [fn(rank, world_size, **kwargs) for fn, kwargs in cases]


def dtensor_compare(
    rank: int,
    world_size: int,
    seed: int = 0,
    embed_dim: int = 16,
    num_heads: int = 4,
    batch: int = 2,
    length: int = 5,
    fix_num_heads: bool = True,
) -> dict[str, float]:
    """PyTorch's own tensor parallelism on an unmodified ``MultiHeadAttention``.

    ``parallelize_module`` shards q/k/v_proj by output features (``ColwiseParallel``:
    their rows) and out_proj by input features (``RowwiseParallel``: its columns, with
    the all-reduce). The module still splits its projections with ``self.num_heads``
    heads, but each rank now sees D/P features: with ``fix_num_heads`` it is set to H/P
    (right); without, it stays H and every rank cuts its D/P features into H heads of
    Dh/P features (it runs, and is wrong). Returns the largest |difference| over ranks
    of the output and of each weight gradient against its slice of the full one.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mha, x, _, target = _setup(seed, embed_dim, num_heads, batch, length, torch.float64)
    ref_query = x.clone().requires_grad_()
    ref, _ = mha(ref_query, ref_query, ref_query, need_weights=False)
    ((ref - target) ** 2).sum().backward()

    torch.manual_seed(seed)
    tp = MultiHeadAttention(embed_dim, num_heads).to(torch.float64)
    tp.load_state_dict(mha.state_dict())  # the same weights, then sharded in place
    mesh = init_device_mesh("cpu", (world_size,))
    plan = {
        "q_proj": ColwiseParallel(),  # rows of W_q: whole heads per rank
        "k_proj": ColwiseParallel(),
        "v_proj": ColwiseParallel(),
        "out_proj": RowwiseParallel(),  # columns of W_o, then all-reduce
    }
    parallelize_module(tp, mesh, plan)
    if fix_num_heads:
        # both head counts: of the queries, and of the keys and values
        tp.num_heads = num_heads // world_size
        tp.num_kv_heads = tp.num_kv_heads // world_size
    query = x.clone().requires_grad_()
    out, _ = tp(query, query, query, need_weights=False)
    out = out.full_tensor() if isinstance(out, DTensor) else out
    ((out - target) ** 2).sum().backward()

    rows = head_slice(num_heads, embed_dim // num_heads, rank, world_size)
    diffs = {"output": (out - ref).abs().max().item()}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        grad = getattr(tp, name).weight.grad.to_local()  # this rank's shard of the gradient
        full = getattr(mha, name).weight.grad
        full = full[:, rows] if name == "out_proj" else full[rows]
        diffs[f"{name}.weight.grad"] = (grad - full).abs().max().item()
    return {name: _max_over_ranks(v) for name, v in diffs.items()}


def time_forward(
    rank: int,
    world_size: int,
    embed_dim: int = 256,
    num_heads: int = 8,
    batch: int = 4,
    length: int = 256,
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Best-of-``repeats`` seconds of one sharded forward pass, and of its all-reduce alone.

    The ranks meet at a barrier before each repeat; the slowest rank's time counts.
    """
    mha, _, _, _ = _setup(seed, embed_dim, num_heads, 1, 1, torch.float32)
    shard = shard_heads(mha, rank, world_size)
    x = torch.randn(batch, length, embed_dim, generator=torch.Generator().manual_seed(seed))
    buffer = torch.empty(batch, length, embed_dim)

    def best(fn: Callable[[], object]) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(_max_over_ranks(t) for t in times)

    with torch.inference_mode():
        forward = best(lambda: shard(x, x, x))
        reduce = best(lambda: dist.all_reduce(buffer))
    return {"forward": forward, "all_reduce": reduce, "threads": float(torch.get_num_threads())}
