"""
A frozen transformer for eval-mode sampling: the modules' ops on plain tensor references.

A 90%-sparse call on a CPU runs ~300 small kernels, and nn.Module's per-call machinery
(``__call__``, ``__getattr__`` for every submodule and parameter) cost about as much Python time
as a tenth of the call. ``FrozenTransformer`` looks every weight up once and runs the very same
functional ops in the same order (``policy.transformer`` uses the same ``attention_core``), so
its results are bit-identical to the modules'. ``DiffusionTransformer.freeze()`` builds one;
``train()`` and device or dtype moves drop it.

``int8_linears=True`` (CPU only) runs every branch's linear layers as dynamically quantized
int8 matmuls: weights per output channel, activations per call. Not bit-identical; worth it
for wide denoisers, whose computed steps are matmul-bound (width 256: 1.55x per 95%-sparse call
on a 2-core AMD EPYC, same closed-loop success; width 128 gains nothing:
docs/model_history.md). PyTorch has deprecated the quantized tensor type this builds on (a
warning says so once per process).
"""

from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

BranchFn = Callable[..., torch.Tensor]
LinearFn = Callable[[torch.Tensor], torch.Tensor]


@lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI int8 dot products (no 16-bit saturation in int8 matmuls)."""
    try:
        flags = Path('/proc/cpuinfo').read_text().split()
    except OSError:
        return False
    return 'avx512_vnni' in flags or 'avx_vnni' in flags


def int8_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> LinearFn:
    """
    ``F.linear(x, weight, bias)`` as a dynamically quantized int8 matmul (CPU).

    Weights are quantized once, symmetric per output channel; activations per call. Without VNNI,
    activations use 7 bits (``reduce_range``) so the AVX2 kernels cannot saturate.
    """
    if weight.device.type != 'cpu':
        raise ValueError(f'int8 linears run on the CPU only, got weights on {weight.device}')
    for what, value in (('weight', weight), ('bias', bias)):
        count = 0 if value is None else int((~torch.isfinite(value)).sum())
        if count:
            raise ValueError(f'int8 quantization needs finite weights, found {count} non-finite '
                             f'values (NaN or inf) in a {tuple(value.shape)} linear {what}')
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127.0).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    packed = torch.ops.quantized.linear_prepack(
        torch.quantize_per_channel(w, scale, zero, 0, torch.qint8),
        None if bias is None else bias.detach().float())
    reduce_range = not cpu_has_vnni()
    op = torch.ops.quantized.linear_dynamic

    def run(x: torch.Tensor) -> torch.Tensor:
        return op(x, packed, reduce_range)
    return run


def float_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> LinearFn:
    """``F.linear`` with its weights bound."""
    def run(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, bias)
    return run


def attention_core(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None, n_head: int,
                   out_weight: torch.Tensor, out_bias: torch.Tensor,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """Projected queries (B, T, E) attend to projected keys/values (B, S, 2E); output proj."""
    return F.linear(attend_heads(q, kv, mask, n_head, dropout_p), out_weight, out_bias)


def attend_heads(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None, n_head: int,
                 dropout_p: float = 0.0) -> torch.Tensor:
    """Multi-head attention before the output projection: (B, T, E), (B, S, 2E) -> (B, T, E)."""
    b, t, e = q.shape
    s = kv.shape[1]
    q = q.view(b, t, n_head, e // n_head).transpose(1, 2)  # (B, h, T, e/h)
    k, v = kv.view(b, s, 2, n_head, e // n_head).permute(2, 0, 3, 1, 4)  # (B, h, S, e/h)
    if mask is not None and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # bf16 under CUDA autocast; a no-op in float32
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return y.transpose(1, 2).reshape(b, t, e)


def _norm(module: torch.nn.LayerNorm) -> tuple:
    # torch.layer_norm's arguments as F.layer_norm passes them, without its Python checks.
    return (module.normalized_shape, module.weight, module.bias, module.eps,
            torch.backends.cudnn.enabled)


def _self_attention(branch, linear: Callable[..., LinearFn]) -> BranchFn:
    norm, attn = _norm(branch.norm), branch.attn
    q, kv, out = (linear(m.weight, m.bias) for m in (attn.q, attn.kv, attn.out))
    mask, n_head = branch.mask, attn.n_head

    def run(h: torch.Tensor, memory: torch.Tensor, kv_given: torch.Tensor | None = None):
        y = torch.layer_norm(h, *norm)
        t = h.shape[1]
        return out(attend_heads(q(y), kv(y), mask[:t, :t], n_head))
    return run


def _cross_attention(branch, linear: Callable[..., LinearFn]) -> BranchFn:
    norm, attn = _norm(branch.norm), branch.attn
    q, out = linear(attn.q.weight, attn.q.bias), linear(attn.out.weight, attn.out.bias)
    # Keys/values of the memory: a few tokens, computed once per call by the sampler
    # (``cross_kv_steps``); kept in float32 when projected here.
    kv_w, kv_b, mask, n_head = attn.kv.weight, attn.kv.bias, branch.mask, attn.n_head

    def run(h: torch.Tensor, memory: torch.Tensor, kv: torch.Tensor | None = None):
        query = q(torch.layer_norm(h, *norm))
        if kv is None:
            kv = F.linear(memory, kv_w, kv_b)
        return out(attend_heads(query, kv, mask[:h.shape[1]], n_head))
    return run


def _mlp(branch, linear: Callable[..., LinearFn]) -> BranchFn:
    norm = _norm(branch.norm)
    fc1 = linear(branch.fc1.weight, branch.fc1.bias)
    fc2 = linear(branch.fc2.weight, branch.fc2.bias)

    def run(h: torch.Tensor, memory: torch.Tensor, kv: torch.Tensor | None = None):
        return fc2(F.gelu(fc1(torch.layer_norm(h, *norm))))
    return run


def _require_finite_branches(net) -> None:
    """Name the branch parameters with NaN or inf values, which int8 cannot quantize."""
    bad = [f'transformer.branches.{name}: {count} of {param.numel()}'
           for name, param in net.branches.named_parameters()
           if (count := int((~torch.isfinite(param.detach())).sum()))]
    if bad:
        raise ValueError(
            f'int8_linears: found non-finite weights (NaN or inf) in {len(bad)} transformer '
            f'parameters: {", ".join(bad[:5])}{" ..." if len(bad) > 5 else ""}; expected finite '
            f'weights (did training diverge, or is the model file corrupt?)')


class FrozenTransformer:
    """Eval-mode branch, embedding and output calls of one ``DiffusionTransformer``."""

    def __init__(self, net, int8_linears: bool = False):
        makers = (_self_attention, _cross_attention, _mlp)
        linear = int8_linear if int8_linears else float_linear
        if int8_linears:
            _require_finite_branches(net)
        self.int8_linears = int8_linears
        self.branches = [makers[i % 3](branch, linear) for i, branch in enumerate(net.branches)]
        self.input_w, self.input_b = net.input_emb.weight, net.input_emb.bias
        self.input_w_t1 = self.input_w.t()[None]  # (1, Da, E), a view: batch-1 baddbmm operand
        self.pos = net.pos_emb
        self.ln_f = _norm(net.ln_f)
        self.head_w, self.head_b = net.head.weight, net.head.bias

    def branch(self, index: int, h: torch.Tensor, memory: torch.Tensor,
               cross_kv: list[torch.Tensor] | None, step: int) -> torch.Tensor:
        if cross_kv is not None and index % 3 == 1:
            return self.branches[index](h, memory, cross_kv[index // 3][step])
        return self.branches[index](h, memory)

    def embed_actions(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.input_w, self.input_b) + self.pos[:, :x.shape[1]]

    def stream_offset(self, added: torch.Tensor) -> torch.Tensor:
        return added + (self.input_b + self.pos[:, :added.shape[1]])

    def embed_actions_plus(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if b == 1 and offset.shape[0] == 1:  # the policy's case: no expand views to make
            return torch.baddbmm(offset, x, self.input_w_t1)
        return torch.baddbmm(offset.expand(b, -1, -1), x, self.input_w.t().expand(b, -1, -1))

    def output(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.layer_norm(h, *self.ln_f), self.head_w, self.head_b)
