"""
The Diffusion Policy transformer (Chi et al.) with every residual branch addressable by index.

Each decoder layer is pre-norm with three residual branches, and the decoder is a flat list of
them: branch ``3 * layer + kind`` with kind in (SELF_ATTN, CROSS_ATTN, MLP). A branch maps the
residual stream ``h`` (B, T, E) to the delta that is added to it; the sparse sampler either calls
the branch or adds a cached delta instead, so skipped work is really skipped.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

from .config import PolicyConfig
from .frozen import attention_core, FrozenTransformer

SELF_ATTN = 0
CROSS_ATTN = 1
MLP = 2
BRANCH_KINDS = ('self_attn', 'cross_attn', 'mlp')


def branch_index(layer: int, kind: int) -> int:
    """Flat index of ``kind`` in decoder layer ``layer``."""
    return 3 * layer + kind


def branch_name(index: int) -> str:
    """Readable name, e.g. ``layer3.cross_attn``."""
    return f'layer{index // 3}.{BRANCH_KINDS[index % 3]}'


class SinusoidalTimeEmbedding(nn.Module):
    """Diffusion timestep -> sinusoidal features of width ``dim``."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        self.register_buffer('freqs', freqs, persistent=False)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        args = timesteps.float()[:, None] * self.freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)  # (N, dim)


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    """
    Boolean mask (True = attend) -> float mask, 0 where allowed and -inf elsewhere.

    What scaled_dot_product_attention makes of a boolean mask on every call; made once here
    (two ops fewer per attention call, ~5% of a 90%-sparse call on a CPU).
    """
    return torch.zeros(allowed.shape).masked_fill(~allowed, float('-inf'))


class Attention(nn.Module):
    """Multi-head attention with separate q / kv inputs and an additive float mask."""

    def __init__(self, n_emb: int, n_head: int, p_drop: float):
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(n_emb, n_emb)
        self.kv = nn.Linear(n_emb, 2 * n_emb)
        self.out = nn.Linear(n_emb, n_emb)
        self.p_drop = p_drop

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        return self.attend(self.project_query(x), context, mask)

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        """Query projection (B, T, E) -> (B, T, E): split out so a constant query is reused."""
        return self.q(x)

    def attend(self, q: torch.Tensor, context: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of projected queries ``q`` (B, T, E) to ``context`` (B, S, E)."""
        return self.attend_kv(q, self.kv(context), mask)

    def attend_kv(self, q: torch.Tensor, kv: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of projected queries (B, T, E) to projected keys/values ``kv`` (B, S, 2E)."""
        return attention_core(q, kv, mask, self.n_head, self.out.weight, self.out.bias,
                              self.p_drop if self.training else 0.0)


class SelfAttentionBranch(nn.Module):
    """LayerNorm then causal self-attention over the action horizon."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.n_emb)
        self.attn = Attention(config.n_emb, config.n_head, config.p_drop_attn)
        self.drop = nn.Dropout(config.p_drop_attn)
        mask = torch.tril(torch.ones(config.horizon, config.horizon, dtype=torch.bool))
        self.register_buffer('mask', additive_mask(mask), persistent=False)

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        y = self.norm(h)
        t = h.shape[1]
        out = self.attn(y, y, self.mask[:t, :t])
        return self.drop(out) if self.training else out


class CrossAttentionBranch(nn.Module):
    """LayerNorm then attention to [time token, observation tokens]."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.n_emb)
        self.attn = Attention(config.n_emb, config.n_head, config.p_drop_attn)
        self.drop = nn.Dropout(config.p_drop_attn)
        # Action t sees memory token s when t >= s - 1 (time token and first obs always).
        t_idx = torch.arange(config.horizon)[:, None]
        s_idx = torch.arange(config.memory_len)[None, :]
        self.register_buffer('mask', additive_mask(t_idx >= s_idx - 1), persistent=False)

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        t = h.shape[1]
        out = self.attn(self.norm(h), memory, self.mask[:t])
        return self.drop(out) if self.training else out

    def forward_kv(self, h: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """``forward`` with the memory's keys/values given: ``kv = self.attn.kv(memory)``."""
        t = h.shape[1]
        out = self.attn.attend_kv(self.attn.project_query(self.norm(h)), kv, self.mask[:t])
        return self.drop(out) if self.training else out


class MLPBranch(nn.Module):
    """LayerNorm then Linear-GELU-Linear."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.n_emb)
        self.fc1 = nn.Linear(config.n_emb, config.mlp_ratio * config.n_emb)
        self.fc2 = nn.Linear(config.mlp_ratio * config.n_emb, config.n_emb)
        self.drop = nn.Dropout(config.p_drop_attn)

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        out = self.fc2(F.gelu(self.fc1(self.norm(h))))
        return self.drop(out) if self.training else out


BRANCH_CLASSES = (SelfAttentionBranch, CrossAttentionBranch, MLPBranch)


class DiffusionTransformer(nn.Module):
    """Noise-prediction transformer: noisy actions + conditioning memory -> epsilon."""

    def __init__(self, config: PolicyConfig, obs_feature_dim: int):
        super().__init__()
        e = config.n_emb
        self.config = config
        self.input_emb = nn.Linear(config.action_dim, e)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.horizon, e))
        self.drop = nn.Dropout(config.p_drop_emb)
        self.time_emb = SinusoidalTimeEmbedding(e)
        self.cond_obs_emb = nn.Linear(obs_feature_dim, e)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, config.memory_len, e))
        self.cond_encoder = nn.Sequential(nn.Linear(e, 4 * e), nn.Mish(), nn.Linear(4 * e, e))
        self.branches = nn.ModuleList(
            BRANCH_CLASSES[kind](config)
            for _ in range(config.n_layer) for kind in range(3))
        self.ln_f = nn.LayerNorm(e)
        self.head = nn.Linear(e, config.action_dim)
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)
        self._frozen: FrozenTransformer | None = None

    def freeze(self, int8_linears: bool = False) -> None:
        """
        Serve eval-mode sampling calls from a ``FrozenTransformer``.

        The same ops on weights looked up once, without nn.Module's per-call overhead
        (bit-identical results); ``int8_linears``: the branches' linear layers as dynamic int8
        matmuls instead (CPU only, not bit-identical; see ``policy.frozen``).

        For frozen weights only (``SparsePolicy`` calls it after moving the model); ``train()``
        and device or dtype moves drop it, so training never sees a stale view.
        """
        if self.training:
            raise RuntimeError('freeze() is for eval mode: call eval() first')
        self._frozen = FrozenTransformer(self, int8_linears)

    def unfreeze(self) -> None:
        """Go back to the module calls (``freeze`` undone)."""
        self._frozen = None

    @property
    def frozen(self) -> bool:
        """Whether eval calls go through the frozen view."""
        return self._frozen is not None

    def __getstate__(self) -> dict:
        # The view's closures hold this instance's tensors: a copy or a pickle must not carry
        # them along (deepcopy would compute with the original's weights).
        state = dict(self.__dict__)
        state['_frozen'] = None
        return state

    def train(self, mode: bool = True) -> 'DiffusionTransformer':
        if mode:
            self._frozen = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._frozen = None  # .to() / .cuda() / .half() replace buffers (the masks)
        return super()._apply(fn, recurse)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def condition(self, obs_tokens: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Conditioning memory: obs tokens (N, n_obs, F) + timesteps (N,) -> (N, L, E)."""
        time_token = self.time_emb(timesteps)[:, None, :]  # (N, 1, E)
        tokens = torch.cat([time_token, self.cond_obs_emb(obs_tokens)], dim=1)  # (N, L, E)
        return self.cond_encoder(self.drop(tokens + self.cond_pos_emb))

    def condition_time(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Encode the time token of each timestep, (K,) -> (K, 1, E); depends on nothing else."""
        token = self.time_emb(timesteps)[:, None, :] + self.cond_pos_emb[:, :1]  # (K, 1, E)
        return self.cond_encoder(self.drop(token))

    def condition_steps(self, obs_tokens: torch.Tensor,
                        time_memory: torch.Tensor) -> torch.Tensor:
        """
        Conditioning memory for K timesteps at once: (B, n_obs, F), (K, 1, E) -> (K, B, L, E).

        ``time_memory`` is ``condition_time(timesteps)``. Same values as ``condition`` on all
        K * B (timestep, observation) pairs, but the conditioning encoder is token-wise and only
        the time token depends on the step, so the observation tokens are encoded once, not K
        times.
        """
        k = time_memory.shape[0]
        b, n_obs = obs_tokens.shape[:2]
        obs = self.cond_obs_emb(obs_tokens) + self.cond_pos_emb[:, 1:]  # (B, n_obs, E)
        obs = self.cond_encoder(self.drop(obs))
        e = obs.shape[-1]
        return torch.cat([time_memory[:, None].expand(k, b, 1, e),
                          obs[None].expand(k, b, n_obs, e)], dim=2)  # (K, B, L, E)

    def cross_kv_time(self, time_memory: torch.Tensor) -> list[torch.Tensor]:
        """
        Keys/values of the time tokens for every cross-attention branch: (K, 1, E) -> [(K, 1, 2E)].

        Like ``time_memory`` they depend on the weights and steps alone; with
        :meth:`cross_kv_steps` a call projects its observation tokens once per layer instead of
        the whole memory at every computed step.
        """
        return [self.branches[i].attn.kv(time_memory) for i in self.cross_branches]

    def cross_kv_steps(self, memory: torch.Tensor,
                       time_kv: list[torch.Tensor]) -> list[torch.Tensor]:
        """
        Keys/values of a ``condition_steps`` memory (K, B, L, E) -> [(K, B, L, 2E)] per branch.

        Only the time token varies with the step, so the observation tokens of step 0 are
        projected once and broadcast; ``time_kv`` comes from :meth:`cross_kv_time`.
        """
        k, b = memory.shape[:2]
        out = []
        for kv_time, i in zip(time_kv, self.cross_branches):
            kv_obs = self.branches[i].attn.kv(memory[0, :, 1:])  # (B, n_obs, 2E)
            out.append(torch.cat([kv_time[:, None].expand(k, b, 1, -1),
                                  kv_obs[None].expand(k, -1, -1, -1)], dim=2))
        return out

    @property
    def cross_branches(self) -> range:
        """Return the indices of the cross-attention branches."""
        return range(CROSS_ATTN, len(self.branches), 3)

    def embed_actions(self, x: torch.Tensor) -> torch.Tensor:
        """Noisy normalized actions (B, T, Da) -> residual stream (B, T, E)."""
        if self._frozen is not None:
            return self._frozen.embed_actions(x)
        t = x.shape[1]
        h = F.linear(x, self.input_emb.weight, self.input_emb.bias) + self.pos_emb[:, :t]
        # Dropout is the identity in eval mode; skipping its module call saves ~5% of a
        # 90%-sparse call on a CPU (one call per denoising step).
        return self.drop(h) if self.training else h

    def stream_offset(self, added: torch.Tensor) -> torch.Tensor:
        """
        Fold the embedding's constant terms into a residual delta: (B, T, E) -> (B, T, E).

        With ``c = stream_offset(d)``, ``embed_actions_plus(x, c)`` equals
        ``embed_actions(x) + d`` (eval mode, up to float rounding) in one fused op: the
        sampler's path for steps that reuse every branch, where ``d`` is the same each step.
        """
        if self._frozen is not None:
            return self._frozen.stream_offset(added)
        t = added.shape[1]
        return added + (self.input_emb.bias + self.pos_emb[:, :t])

    def embed_actions_plus(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``x @ W_in^T + offset`` for (B, T, Da) and an offset from :meth:`stream_offset`."""
        if self._frozen is not None:
            return self._frozen.embed_actions_plus(x, offset)
        if self.training:
            raise RuntimeError('embed_actions_plus skips dropout: use it in eval mode only')
        b = x.shape[0]
        weight = self.input_emb.weight.t().expand(b, -1, -1)  # (B, Da, E)
        return torch.baddbmm(offset.expand(b, -1, -1), x, weight)

    def branch(self, index: int, h: torch.Tensor, memory: torch.Tensor,
               cross_kv: list[torch.Tensor] | None = None, step: int = 0) -> torch.Tensor:
        """
        Residual delta of branch ``index`` for stream ``h`` (B, T, E).

        ``cross_kv`` (from :meth:`cross_kv_steps`) gives a cross-attention branch the keys and
        values of denoising step ``step`` instead of projecting ``memory`` again.
        """
        if self._frozen is not None:
            return self._frozen.branch(index, h, memory, cross_kv, step)
        if cross_kv is not None and index % 3 == CROSS_ATTN:
            return self.branches[index].forward_kv(h, cross_kv[index // 3][step])
        return self.branches[index](h, memory)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Residual stream -> predicted noise (B, T, Da)."""
        if self._frozen is not None:
            return self._frozen.output(h)
        y = F.layer_norm(h, self.ln_f.normalized_shape, self.ln_f.weight, self.ln_f.bias,
                         self.ln_f.eps)
        return F.linear(y, self.head.weight, self.head.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Dense forward: every branch computed. x (B, T, Da), memory (B, L, E)."""
        h = self.embed_actions(x)
        for index in range(len(self.branches)):
            h = h + self.branch(index, h, memory)
        return self.output(h)
