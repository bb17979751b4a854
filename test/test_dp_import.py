"""
import-dp-checkpoint: DP's checkpoint layout in, our model folder out, same samples.

The checkpoints are written here in Diffusion Policy's layout (its key names and shapes, our
tensors, ``torch.save``); the reference is a small re-statement of DP's equations: its
TransformerForDiffusion forward on torch.nn.TransformerDecoder layers, its LinearNormalizer
('limits') and diffusers' DDPM / DDIM steps with the network's own epsilon.
"""

import logging
import math
import os
import pickle

import numpy as np
import pytest
from sparse_policy_ros.policy.checkpoint import load_config, load_policy
from sparse_policy_ros.policy.dp_import import CheckpointError, import_checkpoint, main
from sparse_policy_ros.policy.sampler import condition_all_steps, sample_dense, SamplingNoise
from sparse_policy_ros.policy.scheduler import NoiseScheduler
import torch
from torch import nn

OBS_DIM, ACTION_DIM, HORIZON, N_OBS, N_LAYER, N_HEAD, N_EMB = 5, 3, 8, 2, 2, 2, 32
N_ACTION = 4
LOWDIM_TARGET = ('diffusion_policy.policy.diffusion_transformer_lowdim_policy.'
                 'DiffusionTransformerLowdimPolicy')
SIDE_EFFECTS = []


class DPTransformer(nn.Module):
    """DP's TransformerForDiffusion (obs_as_cond, causal, MLP cond encoder), by its names."""

    def __init__(self, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM):
        super().__init__()
        e, t_cond = N_EMB, 1 + N_OBS
        self._dummy_variable = nn.Parameter()
        self.input_emb = nn.Linear(action_dim, e)
        self.pos_emb = nn.Parameter(torch.zeros(1, HORIZON, e))
        self.drop = nn.Dropout(0.0)
        self.cond_obs_emb = nn.Linear(obs_dim, e)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, t_cond, e))
        self.encoder = nn.Sequential(nn.Linear(e, 4 * e), nn.Mish(), nn.Linear(4 * e, e))
        layer = nn.TransformerDecoderLayer(e, N_HEAD, 4 * e, 0.3, activation='gelu',
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, N_LAYER)
        allowed = torch.tril(torch.ones(HORIZON, HORIZON, dtype=torch.bool))
        self.register_buffer('mask', torch.zeros(HORIZON, HORIZON).masked_fill(
            ~allowed, float('-inf')))
        t, s = torch.meshgrid(torch.arange(HORIZON), torch.arange(t_cond), indexing='ij')
        self.register_buffer('memory_mask', torch.zeros(HORIZON, t_cond).masked_fill(
            ~(t >= s - 1), float('-inf')))
        self.ln_f = nn.LayerNorm(e)
        self.head = nn.Linear(e, action_dim)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        half = N_EMB // 2
        freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        args = timestep.expand(sample.shape[0])[:, None] * freqs[None]
        time = torch.cat([args.sin(), args.cos()], dim=-1)[:, None]  # (B, 1, E)
        tokens = torch.cat([time, self.cond_obs_emb(cond)], dim=1)
        memory = self.encoder(self.drop(tokens + self.cond_pos_emb[:, :tokens.shape[1]]))
        x = self.drop(self.input_emb(sample) + self.pos_emb[:, :sample.shape[1]])
        x = self.decoder(tgt=x, memory=memory, tgt_mask=self.mask,
                         memory_mask=self.memory_mask)
        return self.head(self.ln_f(x))


class DPNormalizer(nn.Module):
    """DP's LinearNormalizer after fit(mode='limits'): params_dict.<field>.scale/offset/..."""

    def __init__(self, data: dict[str, torch.Tensor]):
        super().__init__()
        self.params_dict = nn.ParameterDict()
        for name, x in data.items():
            lo, hi = x.min(dim=0).values, x.max(dim=0).values
            span = hi - lo
            constant = span < 1e-4
            span[constant] = 2.0
            scale = 2.0 / span
            offset = -1.0 - scale * lo
            offset[constant] = 0.0 - lo[constant]
            stats = nn.ParameterDict({'min': lo, 'max': hi, 'mean': x.mean(0), 'std': x.std(0)})
            self.params_dict[name] = nn.ParameterDict(
                {'scale': scale, 'offset': offset, 'input_stats': stats})
        self.params_dict.requires_grad_(False)

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x * self.params_dict[name]['scale'] + self.params_dict[name]['offset']

    def unnormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return (x - self.params_dict[name]['offset']) / self.params_dict[name]['scale']


class Marker(nn.Module):
    """A ModuleAttrMixin-style module: one empty parameter (DP's mask_generator)."""

    def __init__(self):
        super().__init__()
        self._dummy_variable = nn.Parameter()


class DPLowdimPolicy(nn.Module):
    """The modules of DP's DiffusionTransformerLowdimPolicy, so state_dict() has its keys."""

    def __init__(self, seed: int, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM,
                 action_low: float = 0.0, action_span: float = 4.0):
        super().__init__()
        torch.manual_seed(seed)
        self._dummy_variable = nn.Parameter()
        self.model = DPTransformer(obs_dim, action_dim)
        with torch.no_grad():
            for param in self.model.parameters():
                param.normal_(0.0, 0.3)  # large enough that x0 clipping is active
        self.mask_generator = Marker()
        obs = torch.randn(200, obs_dim) * 3.0 + 1.0
        obs[:, 2] = 0.25  # a constant dimension
        actions = action_low + torch.rand(200, action_dim) * action_span
        self.normalizer = DPNormalizer({'obs': obs, 'action': actions})
        self.eval()


def dp_cfg(scheduler: str = 'DDPMScheduler', steps: int = 100, obs_dim: int = OBS_DIM,
           action_dim: int = ACTION_DIM) -> dict:
    """Return the training config of DP (the lowdim transformer workspace), as plain data."""
    return {
        'horizon': HORIZON, 'n_obs_steps': N_OBS, 'n_action_steps': N_ACTION,
        'obs_dim': obs_dim, 'action_dim': action_dim, 'obs_as_cond': True, 'task_name': 'toy',
        'policy': {
            '_target_': LOWDIM_TARGET,
            'model': {'n_layer': N_LAYER, 'n_head': N_HEAD, 'n_emb': N_EMB, 'p_drop_emb': 0.0,
                      'p_drop_attn': 0.3, 'causal_attn': True, 'time_as_cond': True,
                      'obs_as_cond': '${obs_as_cond}', 'n_cond_layers': 0,
                      'input_dim': "${eval:'${action_dim} if ${obs_as_cond} else 0'}"},
            'noise_scheduler': {
                '_target_': f'diffusers.schedulers.scheduling_{scheduler[:4].lower()}.'
                            f'{scheduler}',
                'num_train_timesteps': 100, 'beta_start': 0.0001, 'beta_end': 0.02,
                'beta_schedule': 'squaredcos_cap_v2', 'clip_sample': True,
                'prediction_type': 'epsilon',
                **({'variance_type': 'fixed_small'} if scheduler == 'DDPMScheduler' else
                   {'set_alpha_to_one': True, 'steps_offset': 0})},
            'horizon': '${horizon}', 'obs_dim': '${obs_dim}', 'action_dim': '${action_dim}',
            'n_action_steps': '${n_action_steps}', 'n_obs_steps': '${n_obs_steps}',
            'num_inference_steps': steps, 'obs_as_cond': '${obs_as_cond}',
            'pred_action_steps_only': False}}


def write_ckpt(path, cfg=None, ema_seed: int | None = 1, drop=(), state_dicts=True,
               edit=None, **dims):
    """Write DP's payload layout with torch.save; return the raw and EMA policies."""
    raw = DPLowdimPolicy(seed=0, **dims)
    ema = DPLowdimPolicy(seed=ema_seed, **dims) if ema_seed is not None else None
    dicts = {'model': raw.state_dict(),
             'optimizer': torch.optim.AdamW(raw.parameters()).state_dict()}
    if ema is not None:
        dicts['ema_model'] = ema.state_dict()
    for key in drop:
        dicts.pop(key)
    if edit:
        edit(dicts)
    payload = {'pickles': {'_output_dir': pickle.dumps('/tmp/run')}}
    if state_dicts:
        payload['state_dicts'] = dicts
    if cfg is not None:
        payload['cfg'] = cfg
    torch.save(payload, path)
    return raw, ema


def diffusers_alphas_cumprod(n: int) -> torch.Tensor:
    """squaredcos_cap_v2 as diffusers computes it: betas and cumprod in float32."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999)
                          for i in range(n)], dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def diffusers_step(kind, eps, t, x, alphas_cumprod, step_ratio, noise):
    """One diffusers DDPM (fixed_small) or DDIM (eta 0) step, epsilon as the network gave it."""
    prev = t - step_ratio
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
    x0 = ((x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5).clamp(-1.0, 1.0)
    if kind == 'ddim':
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    beta = 1 - a_t / a_prev
    coef_x0 = a_prev ** 0.5 * beta / (1 - a_t)
    coef_x = (1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)
    out = coef_x0 * x0 + coef_x * x
    if t > 0:
        out = out + ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20) ** 0.5 * noise
    return out


@torch.no_grad()
def dp_predict(policy: DPLowdimPolicy, obs, kind, steps, initial, per_step):
    """Run predict_action of DP (obs_as_cond): normalized obs as cond, sample, unnormalize."""
    cond = policy.normalizer.normalize('obs', obs)[:, :N_OBS]
    return dp_sample(policy, cond, kind, steps, initial, per_step)


def dp_sample(policy, cond, kind, steps, initial, per_step):
    """Run DP's sampling loop (diffusers scheduler, strided timesteps) on the condition."""
    alphas_cumprod = diffusers_alphas_cumprod(100)
    ratio = 100 // steps
    x = initial.clone()
    for k, t in enumerate(range((steps - 1) * ratio, -1, -ratio)):
        eps = policy.model(x, torch.tensor(t), cond)
        x = diffusers_step(kind, eps, t, x, alphas_cumprod, ratio,
                           None if per_step is None else per_step[k])
    return policy.normalizer.unnormalize('action', x)


@torch.no_grad()
def our_predict(folder, obs, initial, per_step, **config_changes):
    model = load_policy(folder)
    for key, value in config_changes.items():
        setattr(model.config, key, value)
    scheduler = NoiseScheduler(model.config)
    memory = condition_all_steps(model, model.encode_observation({}, obs), scheduler)
    return sample_dense(model, memory, scheduler, SamplingNoise(initial, per_step))


def noise_for(kind, steps, batch=3, seed=7):
    gen = torch.Generator().manual_seed(seed)
    initial = torch.randn((batch, HORIZON, ACTION_DIM), generator=gen)
    per_step = (torch.randn((steps, batch, HORIZON, ACTION_DIM), generator=gen)
                if kind == 'ddpm' else None)
    return initial, per_step


@pytest.mark.parametrize('scheduler,steps', [('DDPMScheduler', 100), ('DDIMScheduler', 10),
                                             ('DDPMScheduler', 20)])
def test_imported_policy_samples_like_diffusion_policy(tmp_path, scheduler, steps):
    ckpt = tmp_path / 'latest.ckpt'
    _, ema = write_ckpt(ckpt, cfg=dp_cfg(scheduler, steps))
    out = import_checkpoint(ckpt, tmp_path / 'model')
    config = load_config(out)
    assert (config.horizon, config.n_obs_steps, config.n_action_steps, config.n_head) == (
        HORIZON, N_OBS, N_ACTION, N_HEAD)
    assert config.camera_names == () and config.state_encoder == 'identity'
    assert config.ddim_eps == 'raw' and config.num_inference_steps == steps
    kind = 'ddpm' if scheduler == 'DDPMScheduler' else 'ddim'
    assert config.scheduler == kind and config.extra['task'] == 'toy'
    obs = torch.randn(3, N_OBS, OBS_DIM) * 3.0 + 1.0
    obs[..., 2] = 0.25
    initial, per_step = noise_for(kind, steps)
    expected = dp_predict(ema, obs, kind, steps, initial, per_step)
    got = our_predict(out, obs, initial, per_step)
    torch.testing.assert_close(got, expected, rtol=0.0, atol=1e-4)
    assert expected.abs().max() > 0.5  # a real action chunk, not a degenerate zero
    if kind == 'ddim':
        # Our own DDIM convention gives other samples from the same weights: the option matters.
        ours = our_predict(out, obs, initial, per_step, ddim_eps='from_clipped_x0')
        assert (ours - expected).abs().max() > 1e-3


def test_transformer_forward_matches_dp_to_1e_7(tmp_path):
    ckpt = tmp_path / 'a.ckpt'
    _, ema = write_ckpt(ckpt, cfg=dp_cfg())
    model = load_policy(import_checkpoint(ckpt, tmp_path / 'model'))
    obs = torch.randn(2, N_OBS, OBS_DIM)
    x = torch.randn(2, HORIZON, ACTION_DIM)
    t = torch.tensor([37, 37])
    with torch.no_grad():
        expected = ema.model(x, torch.tensor(37), ema.normalizer.normalize('obs', obs))
        memory = model.transformer.condition(model.encode_observation({}, obs), t)
        torch.testing.assert_close(model.transformer(x, memory), expected, rtol=0, atol=1e-6)


def test_weights_default_to_ema_fall_back_to_raw_with_a_warning(tmp_path, caplog):
    ckpt = tmp_path / 'a.ckpt'
    raw, ema = write_ckpt(ckpt, cfg=dp_cfg())
    first = 'transformer.head.weight'
    got = load_policy(import_checkpoint(ckpt, tmp_path / 'ema')).state_dict()[first]
    assert torch.equal(got, ema.state_dict()['model.head.weight'])
    got = load_policy(import_checkpoint(ckpt, tmp_path / 'raw', weights='raw')).state_dict()
    assert torch.equal(got[first], raw.state_dict()['model.head.weight'])
    write_ckpt(ckpt, cfg=dp_cfg(), ema_seed=None)
    with caplog.at_level(logging.WARNING):
        got = load_policy(import_checkpoint(ckpt, tmp_path / 'fallback')).state_dict()
    assert torch.equal(got[first], raw.state_dict()['model.head.weight'])
    assert "no 'ema_model'" in caplog.text


class FakeDictConfig:
    """Stands in for OmegaConf's DictConfig: a class the allow-list does not know."""

    def __init__(self, data):
        self.data = data

    def __setstate__(self, state):
        SIDE_EFFECTS.append('DictConfig built')
        self.__dict__.update(state)


def test_pickled_cfg_object_is_not_read_and_the_config_comes_from_yaml(tmp_path, capsys):
    import yaml
    ckpt = tmp_path / 'a.ckpt'
    write_ckpt(ckpt, cfg=FakeDictConfig(dp_cfg()))
    SIDE_EFFECTS.clear()
    with pytest.raises(CheckpointError, match=r'n_head cannot be inferred .* no config gives '
                                              r'it \(the checkpoint cfg is a .*FakeDictConfig, '
                                              r'not read\); pass --config-yaml'):
        import_checkpoint(ckpt, tmp_path / 'model')
    assert SIDE_EFFECTS == []
    hydra = tmp_path / 'config.yaml'
    hydra.write_text(yaml.safe_dump(dp_cfg()))
    assert main([str(ckpt), '--out', str(tmp_path / 'model'), '--config-yaml',
                 str(hydra)]) == 0
    assert load_config(tmp_path / 'model').n_action_steps == N_ACTION
    # From the weights alone, given the two numbers they cannot tell.
    assert main([str(ckpt), '--out', str(tmp_path / 'bare'), '--n-head', '2',
                 '--n-action-steps', '4']) == 0
    assert main([str(ckpt), '--out', str(tmp_path / 'bare'), '--n-head', '2',
                 '--n-action-steps', '4']) == 1
    assert 'already holds a model' in capsys.readouterr().err
    assert SIDE_EFFECTS == []


class RunsShell:
    """Pickles to os.system(...): executing it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class LoudDict(dict):
    """A dict subclass whose item assignment has a side effect."""

    def __setitem__(self, key, value):
        SIDE_EFFECTS.append(key)
        super().__setitem__(key, value)


def test_foreign_globals_are_refused_by_name_and_never_run(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = tmp_path / 'evil.ckpt'
    torch.save({'cfg': {}, 'state_dicts': {'model': {'x': RunsShell(marker)}}}, ckpt)
    with pytest.raises(CheckpointError, match=r"refused global '(os|posix)\.system'.*allowed: "
                                              r'.*torch\._utils\._rebuild_tensor_v2'):
        import_checkpoint(ckpt, tmp_path / 'model')
    assert not marker.exists()
    torch.save(RunsShell(marker), ckpt)
    with pytest.raises(CheckpointError, match=r"refused global '(os|posix)\.system'"):
        import_checkpoint(ckpt, tmp_path / 'model')
    assert not marker.exists()
    loud = LoudDict(a=1)
    write_ckpt(ckpt, cfg=dp_cfg(), edit=lambda dicts: dicts.__setitem__('model', loud))
    SIDE_EFFECTS.clear()
    with pytest.raises(CheckpointError, match=r"refused global '[\w.]*LoudDict'"):
        import_checkpoint(ckpt, tmp_path / 'model')
    assert SIDE_EFFECTS == []


def test_truncated_and_malformed_checkpoints_are_named(tmp_path):
    ckpt = tmp_path / 'a.ckpt'
    write_ckpt(ckpt, cfg=dp_cfg())
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=rf'{ckpt}: .*zip-format .*truncated'):
        import_checkpoint(ckpt, tmp_path / 'model')
    write_ckpt(ckpt, cfg=dp_cfg(), state_dicts=False)
    with pytest.raises(CheckpointError, match=r'expected a Diffusion Policy checkpoint, a dict '
                                              r"with 'state_dicts'.*got \['cfg', 'pickles'\]"):
        import_checkpoint(ckpt, tmp_path / 'model')
    write_ckpt(ckpt, cfg=dp_cfg(), drop=('ema_model', 'model'))
    with pytest.raises(CheckpointError, match=r"state_dicts has no 'ema_model'"):
        import_checkpoint(ckpt, tmp_path / 'model')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        import_checkpoint(tmp_path / 'missing.ckpt', tmp_path / 'model')


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    key = 'model.decoder.layers.1.linear1.weight'

    def widen(dicts):
        dicts['ema_model'][key] = torch.zeros(4 * N_EMB, N_EMB + 1)
    ckpt = tmp_path / 'a.ckpt'
    write_ckpt(ckpt, cfg=dp_cfg(), edit=widen)
    with pytest.raises(CheckpointError) as info:
        import_checkpoint(ckpt, tmp_path / 'model')
    message = str(info.value)
    assert key in message and '(128, 33)' in message and '(128, 32)' in message, message


def test_image_policies_and_unsupported_variants_are_refused_naming_keys(tmp_path):
    image_key = 'obs_encoder.obs_nets.image.backbone.nets.0.weight'

    def add_image(dicts):
        dicts['ema_model'][image_key] = torch.zeros(64, 3, 7, 7)
    ckpt = tmp_path / 'a.ckpt'
    write_ckpt(ckpt, cfg=dp_cfg(), edit=add_image)
    with pytest.raises(CheckpointError, match=rf'names policy .*Lowdim.*, but the weights hold '
                                              rf'an image encoder .*{image_key}'):
        import_checkpoint(ckpt, tmp_path / 'model')
    cfg = dp_cfg()
    cfg['policy']['model']['n_head'] = 3
    write_ckpt(ckpt, cfg=cfg)
    with pytest.raises(CheckpointError, match='n_emb .* must be divisible by n_head'):
        import_checkpoint(ckpt, tmp_path / 'model')
    cfg = dp_cfg()
    cfg['horizon'] = 16
    write_ckpt(ckpt, cfg=cfg)
    with pytest.raises(CheckpointError, match=r'policy\.horizon=16 but the weights have '
                                              r'horizon=8'):
        import_checkpoint(ckpt, tmp_path / 'model')


def test_non_limits_normalizer_is_refused(tmp_path):
    def gaussian(dicts):
        dicts['ema_model']['normalizer.params_dict.action.scale'] *= 0.5
    ckpt = tmp_path / 'a.ckpt'
    write_ckpt(ckpt, cfg=dp_cfg(), edit=gaussian)
    with pytest.raises(CheckpointError, match=r"normalizer 'action' is not the min-max .*scale "
                                              r'differs in dims \[0, 1, 2\]'):
        import_checkpoint(ckpt, tmp_path / 'model')


def test_constant_state_dimension_normalizes_like_dp(tmp_path):
    ckpt = tmp_path / 'a.ckpt'
    _, ema = write_ckpt(ckpt, cfg=dp_cfg())
    model = load_policy(import_checkpoint(ckpt, tmp_path / 'model'))
    obs = torch.tensor(np.full((1, 1, OBS_DIM), 0.25, dtype=np.float32))
    ours = model.normalizer.normalize('state', obs)
    torch.testing.assert_close(ours, ema.normalizer.normalize('obs', obs), rtol=0, atol=1e-6)
    assert ours[0, 0, 2].item() == 0.0  # DP maps a constant dimension to 0, as we do
