"""
A frozen transformer for eval-mode sampling: the modules' ops on plain tensor references.

A 90%-sparse call on a CPU runs ~300 small kernels, and nn.Module's per-call machinery
(``__call__``, ``__getattr__`` for every submodule and parameter) cost about as much Python time
as a tenth of the call. ``FrozenTransformer`` looks every weight up once and runs the very same
functional ops in the same order (``policy.transformer`` uses the same ``attention_core``), so
its results are bit-identical to the modules'. ``DiffusionTransformer.freeze()`` builds one;
``train()`` and device or dtype moves drop it.
"""

from typing import Callable

import torch
import torch.nn.functional as F

BranchFn = Callable[..., torch.Tensor]


def attention_core(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None, n_head: int,
                   out_weight: torch.Tensor, out_bias: torch.Tensor,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """Projected queries (B, T, E) attend to projected keys/values (B, S, 2E); output proj."""
    b, t, e = q.shape
    s = kv.shape[1]
    q = q.view(b, t, n_head, e // n_head).transpose(1, 2)  # (B, h, T, e/h)
    k, v = kv.view(b, s, 2, n_head, e // n_head).permute(2, 0, 3, 1, 4)  # (B, h, S, e/h)
    if mask is not None and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # bf16 under CUDA autocast; a no-op in float32
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return F.linear(y.transpose(1, 2).reshape(b, t, e), out_weight, out_bias)  # (B, T, E)


def _norm(module: torch.nn.LayerNorm) -> tuple:
    # torch.layer_norm's arguments as F.layer_norm passes them, without its Python checks.
    return (module.normalized_shape, module.weight, module.bias, module.eps,
            torch.backends.cudnn.enabled)


def _self_attention(branch) -> BranchFn:
    norm, attn = _norm(branch.norm), branch.attn
    q_w, q_b, kv_w, kv_b = attn.q.weight, attn.q.bias, attn.kv.weight, attn.kv.bias
    out_w, out_b, mask, n_head = attn.out.weight, attn.out.bias, branch.mask, attn.n_head

    def run(h: torch.Tensor, memory: torch.Tensor, kv: torch.Tensor | None = None):
        y = torch.layer_norm(h, *norm)
        t = h.shape[1]
        return attention_core(F.linear(y, q_w, q_b), F.linear(y, kv_w, kv_b), mask[:t, :t],
                              n_head, out_w, out_b)
    return run


def _cross_attention(branch) -> BranchFn:
    norm, attn = _norm(branch.norm), branch.attn
    q_w, q_b, kv_w, kv_b = attn.q.weight, attn.q.bias, attn.kv.weight, attn.kv.bias
    out_w, out_b, mask, n_head = attn.out.weight, attn.out.bias, branch.mask, attn.n_head

    def run(h: torch.Tensor, memory: torch.Tensor, kv: torch.Tensor | None = None):
        q = F.linear(torch.layer_norm(h, *norm), q_w, q_b)
        if kv is None:
            kv = F.linear(memory, kv_w, kv_b)
        return attention_core(q, kv, mask[:h.shape[1]], n_head, out_w, out_b)
    return run


def _mlp(branch) -> BranchFn:
    norm = _norm(branch.norm)
    w1, b1, w2, b2 = branch.fc1.weight, branch.fc1.bias, branch.fc2.weight, branch.fc2.bias

    def run(h: torch.Tensor, memory: torch.Tensor, kv: torch.Tensor | None = None):
        return F.linear(F.gelu(F.linear(torch.layer_norm(h, *norm), w1, b1)), w2, b2)
    return run


class FrozenTransformer:
    """Eval-mode branch, embedding and output calls of one ``DiffusionTransformer``."""

    def __init__(self, net):
        makers = (_self_attention, _cross_attention, _mlp)
        self.branches = [makers[i % 3](branch) for i, branch in enumerate(net.branches)]
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
