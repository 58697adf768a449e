"""The two forms of a transformer block and the conversions between them.

open_clip's ``ResidualAttentionBlock`` keeps attention inside ``nn.MultiheadAttention``, whose head count
is tied to the residual width, so neither torch-pruning nor a runtime switch can drop heads from it.  We
re-pack each block into one of two forms that share the same maths (pre-norm attention + MLP, residual
width unchanged):

* :class:`DenseBlock` — a separate ``attn.qkv = Linear(d, 3d)`` laid out ``[q | k | v]`` and
  ``attn.proj = Linear(d, d)``, like timm's ViT.  torch-pruning understands this layout (it traces the
  reshape to heads), so it is the form used for dependency-aware importance scoring and for the
  physically pruned dense export.
* :class:`NestedBlock` — the runtime form.  Its qkv rows are interleaved *per head* (``[h0: q k v | h1: q
  k v | …]``), so the first ``h`` heads are one contiguous leading slice of the weight, and the MLP's
  hidden channels are the leading rows of ``c_fc`` / columns of ``c_proj``.  :meth:`NestedBlock.set_width`
  only stores two integers; ``forward`` uses tensor views (no copies) of the leading slices.  Weights are
  expected in importance order (see :mod:`models.ordering`) so that leading slices are the channels worth
  keeping.

Re-packing changes the attention arithmetic from ``nn.MultiheadAttention``'s fused kernel to
``scaled_dot_product_attention``; outputs agree to ~1e-6.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ModelError

__all__ = [
    "DenseAttention",
    "DenseBlock",
    "NestedBlock",
    "dense_from_nested",
    "dense_from_openclip",
    "nested_from_dense",
    "permute_dense_block",
]


class DenseAttention(nn.Module):
    """Multi-head self-attention with a ``[q | k | v]`` qkv projection (torch-pruning's expected layout)."""

    def __init__(
        self, d_model: int, n_heads: int, head_dim: int, bias: bool = True, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.num_heads = n_heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=bias, device=device)
        self.proj = nn.Linear(n_heads * head_dim, d_model, bias=bias, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over tokens of ``x`` [B, N, d]; ``num_heads`` is updated after head pruning."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class DenseBlock(nn.Module):
    """A pre-norm transformer block in torch-pruning-friendly form (see the module docstring)."""

    def __init__(
        self,
        ln_1: nn.Module,
        attn: DenseAttention,
        ls_1: nn.Module,
        ln_2: nn.Module,
        mlp: nn.Sequential,
        ls_2: nn.Module,
    ) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ls_1, self.ln_2, self.mlp, self.ls_2 = ln_1, attn, ls_1, ln_2, mlp, ls_2

    @property
    def c_fc(self) -> nn.Linear:
        """The MLP's first linear (hidden channels are its output rows)."""
        return cast(nn.Linear, self.mlp.c_fc)

    @property
    def c_proj(self) -> nn.Linear:
        """The MLP's second linear (hidden channels are its input columns)."""
        return cast(nn.Linear, self.mlp.c_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` (with optional layer scales)."""
        x = x + self.ls_1(self.attn(self.ln_1(x)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class NestedBlock(nn.Module):
    """A transformer block whose active head and MLP widths are switched without allocating.

    ``n_heads`` / ``mlp_hidden`` are the active widths (leading slices), ``n_heads_full`` / ``mlp_full`` the
    stored ones.  Parameters: ``qkv`` (per-head interleaved rows), ``proj``, ``c_fc``, ``c_proj``, the two
    LayerNorms and optional layer scales; gradients flow into the active slices only, which is what
    width-robust (sandwich) training needs.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int,
        mlp_hidden: int,
        *,
        ln_1: nn.Module,
        ln_2: nn.Module,
        act: nn.Module,
        ls_1: nn.Module,
        ls_2: nn.Module,
        bias: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.d_model, self.head_dim = d_model, head_dim
        self.n_heads_full, self.mlp_full = n_heads, mlp_hidden
        # Active widths live in a plain list so switching bypasses nn.Module.__setattr__ (~1.5 us a call).
        self.active: list[int] = [n_heads, mlp_hidden]
        self.ln_1, self.ln_2, self.act, self.ls_1, self.ls_2 = ln_1, ln_2, act, ls_1, ls_2
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=bias, device=device)
        self.proj = nn.Linear(n_heads * head_dim, d_model, bias=bias, device=device)
        self.c_fc = nn.Linear(d_model, mlp_hidden, bias=bias, device=device)
        self.c_proj = nn.Linear(mlp_hidden, d_model, bias=bias, device=device)

    @property
    def n_heads(self) -> int:
        """Active attention heads (the leading ones)."""
        return self.active[0]

    @property
    def mlp_hidden(self) -> int:
        """Active MLP hidden channels (the leading ones)."""
        return self.active[1]

    def set_width(self, n_heads: int, mlp_hidden: int) -> None:
        """Make the leading ``n_heads`` heads and ``mlp_hidden`` MLP channels active (stores two ints)."""
        if not (1 <= n_heads <= self.n_heads_full and 1 <= mlp_hidden <= self.mlp_full):
            raise ModelError(
                f"block width ({n_heads} heads, {mlp_hidden} MLP channels) outside "
                f"1..{self.n_heads_full} heads, 1..{self.mlp_full} channels"
            )
        active = self.active
        active[0], active[1] = n_heads, mlp_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block at its active widths, using views of the leading weight slices."""
        b, n, _ = x.shape
        h, m = self.active
        hd = self.head_dim
        rows = 3 * h * hd
        y = self.ln_1(x)
        qkv_bias = self.qkv.bias[:rows] if self.qkv.bias is not None else None
        qkv = F.linear(y, self.qkv.weight[:rows], qkv_bias).view(b, n, h, 3, hd).permute(3, 0, 2, 1, 4)
        q, k, v = qkv.unbind(0)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, h * hd)
        x = x + self.ls_1(F.linear(att, self.proj.weight[:, : h * hd], self.proj.bias))
        fc_bias = self.c_fc.bias[:m] if self.c_fc.bias is not None else None
        y = self.act(F.linear(self.ln_2(x), self.c_fc.weight[:m], fc_bias))
        return x + self.ls_2(F.linear(y, self.c_proj.weight[:, :m], self.c_proj.bias))


def _check_openclip_block(block: nn.Module) -> None:
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or not hasattr(block, "mlp") or hasattr(block, "ln_1_kv"):
        raise ModelError(
            f"{type(block).__name__}: only open_clip's default ResidualAttentionBlock (nn.MultiheadAttention, "
            "no qk-norm / scaled-cosine / cross attention) can be sliced and pruned"
        )
    if not attn.batch_first or not attn._qkv_same_embed_dim:
        raise ModelError("nn.MultiheadAttention must be batch_first with equal q/k/v widths to be re-packed")


def dense_from_openclip(oc_block: nn.Module) -> DenseBlock:
    """Re-pack an open_clip ``ResidualAttentionBlock`` into a :class:`DenseBlock` sharing its parameters."""
    _check_openclip_block(oc_block)
    block: Any = oc_block
    mha: nn.MultiheadAttention = block.attn  # type: ignore[assignment]
    d, h = mha.embed_dim, mha.num_heads
    attn = DenseAttention(d, h, d // h, bias=mha.in_proj_bias is not None, device="meta")  # tensors replaced below
    attn.qkv.weight = mha.in_proj_weight
    attn.proj.weight = mha.out_proj.weight
    if mha.in_proj_bias is not None:
        attn.qkv.bias = mha.in_proj_bias
        attn.proj.bias = mha.out_proj.bias
    mlp = nn.Sequential()
    mlp.add_module("c_fc", block.mlp.c_fc)
    mlp.add_module("gelu", block.mlp.gelu)
    mlp.add_module("c_proj", block.mlp.c_proj)
    return DenseBlock(block.ln_1, attn, block.ls_1, block.ln_2, mlp, block.ls_2)


def _qkv_dense_to_nested(t: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows ``[3, H, hd]`` → ``[H, 3, hd]`` (works for a weight [3d, d] and a bias [3d])."""
    rest = t.shape[1:]
    return t.reshape(3, n_heads, head_dim, *rest).transpose(0, 1).reshape(3 * n_heads * head_dim, *rest).contiguous()


def _qkv_nested_to_dense(t: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows ``[H, 3, hd]`` → ``[3, H, hd]`` (inverse of :func:`_qkv_dense_to_nested`)."""
    rest = t.shape[1:]
    return t.reshape(n_heads, 3, head_dim, *rest).transpose(0, 1).reshape(3 * n_heads * head_dim, *rest).contiguous()


def nested_from_dense(block: DenseBlock) -> NestedBlock:
    """Build the runtime :class:`NestedBlock`; qkv is re-packed per head, every other tensor is shared."""
    a = block.attn
    c_fc, c_proj = block.c_fc, block.c_proj
    d = a.qkv.in_features
    nested = NestedBlock(
        d,
        a.num_heads,
        a.head_dim,
        c_fc.out_features,
        ln_1=block.ln_1,
        ln_2=block.ln_2,
        act=cast(nn.Module, block.mlp.gelu),
        ls_1=block.ls_1,
        ls_2=block.ls_2,
        bias=a.qkv.bias is not None,
        device="meta",  # every tensor is replaced below: allocate nothing here
    )
    with torch.no_grad():
        nested.qkv.weight = nn.Parameter(_qkv_dense_to_nested(a.qkv.weight.detach(), a.num_heads, a.head_dim))
        if a.qkv.bias is not None:
            nested.qkv.bias = nn.Parameter(_qkv_dense_to_nested(a.qkv.bias.detach(), a.num_heads, a.head_dim))
    nested.proj, nested.c_fc, nested.c_proj = a.proj, c_fc, c_proj
    return nested


def dense_from_nested(block: NestedBlock) -> DenseBlock:
    """An independent full-width :class:`DenseBlock` copy of a nested block (export starts from this)."""
    h, hd, d = block.n_heads_full, block.head_dim, block.d_model
    attn = DenseAttention(d, h, hd, bias=block.qkv.bias is not None)
    with torch.no_grad():
        attn.qkv.weight.copy_(_qkv_nested_to_dense(block.qkv.weight, h, hd))
        if block.qkv.bias is not None and attn.qkv.bias is not None:
            attn.qkv.bias.copy_(_qkv_nested_to_dense(block.qkv.bias, h, hd))
    attn.proj = copy.deepcopy(block.proj)
    mlp = nn.Sequential()
    mlp.add_module("c_fc", copy.deepcopy(block.c_fc))
    mlp.add_module("gelu", copy.deepcopy(block.act))
    mlp.add_module("c_proj", copy.deepcopy(block.c_proj))
    return DenseBlock(
        copy.deepcopy(block.ln_1),
        attn,
        copy.deepcopy(block.ls_1),
        copy.deepcopy(block.ln_2),
        mlp,
        copy.deepcopy(block.ls_2),
    )


def permute_dense_block(block: DenseBlock, head_order: torch.Tensor, mlp_order: torch.Tensor) -> None:
    """Reorder heads and MLP channels in place: new position ``i`` holds old head/channel ``order[i]``.

    Coupled tensors move together (qkv rows of q, k and v with ``proj`` columns; ``c_fc`` rows and bias
    with ``c_proj`` columns), so the block computes exactly the same function afterwards.
    """
    a = block.attn
    h, hd = a.num_heads, a.head_dim
    rows = (head_order.view(h, 1) * hd + torch.arange(hd).view(1, hd)).reshape(-1)  # head dims, new order
    qkv_rows = torch.cat([rows + part * h * hd for part in range(3)])
    c_fc, c_proj = block.c_fc, block.c_proj
    with torch.no_grad():
        a.qkv.weight = nn.Parameter(a.qkv.weight.detach()[qkv_rows].contiguous())
        if a.qkv.bias is not None:
            a.qkv.bias = nn.Parameter(a.qkv.bias.detach()[qkv_rows].contiguous())
        a.proj.weight = nn.Parameter(a.proj.weight.detach()[:, rows].contiguous())
        c_fc.weight = nn.Parameter(c_fc.weight.detach()[mlp_order].contiguous())
        if c_fc.bias is not None:
            c_fc.bias = nn.Parameter(c_fc.bias.detach()[mlp_order].contiguous())
        c_proj.weight = nn.Parameter(c_proj.weight.detach()[:, mlp_order].contiguous())
