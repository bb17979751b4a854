"""
import-dp-checkpoint of DP's hybrid image policy: robomimic's encoder in, the same samples out.

The checkpoints are written here in DP's layout: robomimic's ObservationEncoder names
(``obs_nets.<key>.nets.0`` ResNet18Conv over torchvision resnet18's children, ``nets.1``
SpatialSoftmax, ``nets.3`` Linear, and the ``backbone`` / ``pool`` aliases that state_dict()
lists too), our tensors, ``torch.save``. The reference re-states DP's and robomimic's equations on
those named tensors with torch.nn.functional (conv2d, group_norm, max_pool2d, softmax), then runs
DP's transformer and diffusers' steps as test_dp_import does.
"""

import logging

import numpy as np
import pytest
from sparse_policy_ros.policy.checkpoint import load_config, load_policy
from sparse_policy_ros.policy.dp_import import CheckpointError, import_checkpoint, main
from sparse_policy_ros.policy.sampler import condition_all_steps, sample_dense, SamplingNoise
from sparse_policy_ros.policy.scheduler import NoiseScheduler
from test_dp_import import (ACTION_DIM, dp_cfg, dp_sample, DPNormalizer, DPTransformer, Marker,
                            N_OBS, noise_for)
import torch
from torch import nn
import torch.nn.functional as F

HYBRID_TARGET = ('diffusion_policy.policy.diffusion_transformer_hybrid_image_policy.'
                 'DiffusionTransformerHybridImagePolicy')
IMAGE, CROP, FEATURES = (3, 72, 104), (64, 96), 16  # ResNet-18 maps the crop to 2x3
LOWDIM = {'eef_pos': 3, 'eef_quat': 4}
ONE_CAMERA = ('eef_pos', 'agentview_image', 'eef_quat')  # low-dim first: columns move
TWO_CAMERAS = ('agentview_image', 'eef_pos', 'wrist_image', 'eef_quat')


def group_norm(channels: int) -> nn.Module:
    """Build the GroupNorm that DP puts in place of BatchNorm2d (obs_encoder_group_norm)."""
    return nn.GroupNorm(channels // 16, channels)


class TorchvisionBasicBlock(nn.Module):
    """torchvision resnet's BasicBlock, by its attribute names."""

    def __init__(self, c_in, c_out, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            norm(c_out))


class RobomimicResNet18Conv(nn.Module):
    """ResNet18Conv: ``nets`` = resnet18's children without avgpool and fc."""

    def __init__(self, norm):
        super().__init__()
        children = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), norm(64), nn.ReLU(),
                    nn.MaxPool2d(3, 2, 1)]
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            children.append(nn.Sequential(TorchvisionBasicBlock(c_in, c_out, stride, norm),
                                          TorchvisionBasicBlock(c_out, c_out, 1, norm)))
            c_in = c_out
        self.nets = nn.Sequential(*children)


class RobomimicSpatialSoftmax(nn.Module):
    """SpatialSoftmax: keypoint conv ``nets``, ``temperature``, ``pos_x`` / ``pos_y``."""

    def __init__(self, h, w, temperature=1.0, learnable=False):
        super().__init__()
        self.nets = nn.Conv2d(512, 32, kernel_size=1)
        value = nn.Parameter(torch.ones(1) * temperature, requires_grad=learnable)
        if learnable:
            self.register_parameter('temperature', value)
        else:
            self.register_buffer('temperature', value)
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
        self.register_buffer('pos_x', torch.from_numpy(pos_x.reshape(1, h * w)).float())
        self.register_buffer('pos_y', torch.from_numpy(pos_y.reshape(1, h * w)).float())


class RobomimicVisualCore(nn.Module):
    """VisualCore: backbone and pool, then nets = (backbone, pool, Flatten, Linear)."""

    def __init__(self, feature_hw, norm, temperature, learnable):
        super().__init__()
        self.backbone = RobomimicResNet18Conv(norm)
        self.pool = RobomimicSpatialSoftmax(*feature_hw, temperature, learnable)
        self.nets = nn.Sequential(self.backbone, self.pool, nn.Flatten(1), nn.Linear(64, FEATURES))


class RobomimicObsEncoder(nn.Module):
    """ObservationEncoder: obs_nets per rgb key (low-dim keys have none), no-weight randomizers."""

    def __init__(self, cameras, feature_hw, norm, temperature, learnable):
        super().__init__()
        self.obs_nets = nn.ModuleDict({name: RobomimicVisualCore(feature_hw, norm, temperature,
                                                                 learnable)
                                       for name in cameras})
        self.obs_randomizers = nn.ModuleDict()
        self.activation = nn.ReLU()


class DPImagePolicy(nn.Module):
    """The modules of DP's DiffusionTransformerHybridImagePolicy, so state_dict() has its keys."""

    def __init__(self, seed, order, crop=CROP, norm=group_norm, temperature=1.0,
                 learnable=False):
        super().__init__()
        torch.manual_seed(seed)
        cameras = [k for k in order if k not in LOWDIM]
        size = crop or IMAGE[1:]
        feature_hw = (-(-size[0] // 32), -(-size[1] // 32))
        self._dummy_variable = nn.Parameter()
        self.obs_encoder = RobomimicObsEncoder(cameras, feature_hw, norm, temperature, learnable)
        with torch.no_grad():
            for name, param in self.obs_encoder.named_parameters():
                if name.endswith('temperature'):
                    continue
                if '.bn' in name or 'downsample.1' in name or name.endswith('nets.1.weight'):
                    param.copy_(1.0 + 0.2 * torch.randn_like(param) if name.endswith('weight')
                                else 0.2 * torch.randn_like(param))
                elif 'nets.1.nets.' in name:  # keypoint logits: peaked, not uniform
                    param.normal_(0.0, 0.1)
        features = FEATURES * len(cameras) + sum(LOWDIM.values())
        self.model = DPTransformer(features, ACTION_DIM)
        with torch.no_grad():
            for param in self.model.parameters():
                param.normal_(0.0, 0.3)
        self.mask_generator = Marker()
        pos = torch.randn(200, 3) * 0.2 + 0.5
        quat = torch.nn.functional.normalize(torch.randn(200, 4), dim=-1)
        self.normalizer = DPNormalizer({'eef_pos': pos, 'eef_quat': quat,
                                        'action': torch.rand(200, ACTION_DIM) * 4.0})
        with torch.no_grad():  # get_identity_normalizer_from_stat for quaternions
            self.normalizer.params_dict['eef_quat']['scale'].fill_(1.0)
            self.normalizer.params_dict['eef_quat']['offset'].fill_(0.0)
        for camera in cameras:  # get_image_range_normalizer
            one = torch.ones(1)
            self.normalizer.params_dict[camera] = nn.ParameterDict({
                'scale': 2 * one, 'offset': -one, 'input_stats': nn.ParameterDict({
                    'min': 0 * one, 'max': one, 'mean': 0.5 * one, 'std': one / 12 ** 0.5})})
        self.normalizer.requires_grad_(False)
        self.eval()


def image_cfg(order=ONE_CAMERA, crop=CROP, scheduler='DDIMScheduler', steps=10,
              shape_meta=True) -> dict:
    """Return DP's hybrid transformer workspace config as plain data."""
    cfg = dp_cfg(scheduler, steps)
    for node in (cfg, cfg['policy']):
        node.pop('obs_dim')
        node.pop('action_dim')
    cfg['policy']['model'].pop('input_dim')
    cfg['policy'].update({'_target_': HYBRID_TARGET, 'crop_shape': list(crop) if crop else None,
                          'obs_encoder_group_norm': True, 'eval_fixed_crop': True})
    if shape_meta:
        cfg['shape_meta'] = {
            'obs': {key: ({'shape': [LOWDIM[key]]} if key in LOWDIM else
                          {'shape': list(IMAGE), 'type': 'rgb'}) for key in order},
            'action': {'shape': [ACTION_DIM]}}
        cfg['policy']['shape_meta'] = '${shape_meta}'
    return cfg


def write_image_ckpt(path, cfg, edit=None, **policy_args):
    """Write DP's payload layout with torch.save; return the EMA policy."""
    raw = DPImagePolicy(0, **policy_args)
    ema = DPImagePolicy(1, **policy_args)
    dicts = {'model': raw.state_dict(), 'ema_model': ema.state_dict()}
    if edit:
        edit(dicts['ema_model'])
    torch.save({'cfg': cfg, 'state_dicts': dicts, 'pickles': {}}, path)
    return ema


def group_norm_ref(sd, key, x):
    """Apply GroupNorm as DP configured it: num_features // 16 groups, eps 1e-5."""
    weight = sd[key + '.weight']
    return F.group_norm(x, weight.numel() // 16, weight, sd[key + '.bias'], 1e-5)


def resnet18_ref(sd, p, x):
    """Run torchvision resnet18 up to layer4 on the tensors under prefix ``p``."""
    x = F.relu(group_norm_ref(sd, p + '1', F.conv2d(x, sd[p + '0.weight'], stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 1)
    for layer, stride in zip(range(4, 8), (1, 2, 2, 2)):
        for block in (0, 1):
            b = f'{p}{layer}.{block}.'
            s = stride if block == 0 else 1
            y = F.relu(group_norm_ref(sd, b + 'bn1',
                                      F.conv2d(x, sd[b + 'conv1.weight'], stride=s, padding=1)))
            y = group_norm_ref(sd, b + 'bn2', F.conv2d(y, sd[b + 'conv2.weight'], padding=1))
            if b + 'downsample.0.weight' in sd:
                x = group_norm_ref(sd, b + 'downsample.1',
                                   F.conv2d(x, sd[b + 'downsample.0.weight'], stride=s))
            x = F.relu(y + x)
    return x


def visual_core_ref(sd, camera, x):
    """Run a VisualCore and the encoder ReLU: ResNet, spatial softmax, flatten, linear."""
    c = f'obs_encoder.obs_nets.{camera}.nets.'
    logits = F.conv2d(resnet18_ref(sd, c + '0.nets.', x), sd[c + '1.nets.weight'],
                      sd[c + '1.nets.bias'])
    b, k, h, w = logits.shape
    attention = F.softmax(logits.reshape(-1, h * w) / sd[c + '1.temperature'], dim=-1)
    expected_x = torch.sum(sd[c + '1.pos_x'] * attention, dim=1, keepdim=True)
    expected_y = torch.sum(sd[c + '1.pos_y'] * attention, dim=1, keepdim=True)
    keypoints = torch.cat([expected_x, expected_y], 1).view(-1, k, 2).flatten(1)
    return F.relu(F.linear(keypoints, sd[c + '3.weight'], sd[c + '3.bias']))


@torch.no_grad()
def dp_image_predict(policy, order, images, lowdim, crop, kind, steps, initial, per_step):
    """DP predict_action: normalize, obs_encoder in shape_meta order, sample, unnormalize."""
    sd = policy.state_dict()
    b = initial.shape[0]
    features = []
    for key in order:
        if key in LOWDIM:
            features.append(policy.normalizer.normalize(key, lowdim[key][:, :N_OBS]))
            continue
        x = policy.normalizer.normalize(key, images[key][:, :N_OBS].flatten(0, 1) / 255.0)
        if crop is not None:  # torchvision center_crop (eval_fixed_crop)
            top = int(round((x.shape[-2] - crop[0]) / 2.0))
            left = int(round((x.shape[-1] - crop[1]) / 2.0))
            x = x[..., top:top + crop[0], left:left + crop[1]]
        features.append(visual_core_ref(sd, key, x).view(b, N_OBS, -1))
    return dp_sample(policy, torch.cat(features, dim=-1), kind, steps, initial, per_step)


@torch.no_grad()
def our_image_predict(folder, images, lowdim, initial, per_step):
    model = load_policy(folder)
    scheduler = NoiseScheduler(model.config)
    state = torch.cat([lowdim[key] for key in lowdim], dim=-1)  # DP's low-dim order
    memory = condition_all_steps(model, model.encode_observation(images, state), scheduler)
    return sample_dense(model, memory, scheduler, SamplingNoise(initial, per_step))


def observations(order, batch=2, seed=3):
    gen = torch.Generator().manual_seed(seed)
    images = {key: torch.randint(0, 256, (batch, N_OBS, *IMAGE), generator=gen,
                                 dtype=torch.uint8) for key in order if key not in LOWDIM}
    lowdim = {'eef_pos': torch.randn((batch, N_OBS, 3), generator=gen) * 0.2 + 0.5,
              'eef_quat': F.normalize(torch.randn((batch, N_OBS, 4), generator=gen), dim=-1)}
    return images, {key: lowdim[key] for key in order if key in LOWDIM}


@pytest.mark.parametrize('order,crop,scheduler,steps,temperature,learnable', [
    (ONE_CAMERA, CROP, 'DDPMScheduler', 20, 1.0, False),
    (TWO_CAMERAS, CROP, 'DDIMScheduler', 10, 0.5, True),
    (ONE_CAMERA, None, 'DDIMScheduler', 10, 2.0, False)])
def test_image_policy_samples_like_diffusion_policy(tmp_path, order, crop, scheduler, steps,
                                                    temperature, learnable):
    ckpt = tmp_path / 'latest.ckpt'
    ema = write_image_ckpt(ckpt, image_cfg(order, crop, scheduler, steps), order=order,
                           crop=crop, temperature=temperature, learnable=learnable)
    out = import_checkpoint(ckpt, tmp_path / 'model')
    config = load_config(out)
    cameras = tuple(k for k in order if k not in LOWDIM)
    assert config.camera_names == cameras and config.image_shape == IMAGE
    assert config.crop_shape == crop and config.encoder == 'resnet18_gn'
    assert config.image_feature_dim == FEATURES and config.image_feature_relu
    assert config.state_dim == 7 and config.state_encoder == 'identity'
    kind = 'ddpm' if scheduler == 'DDPMScheduler' else 'ddim'
    images, lowdim = observations(order)
    initial, per_step = noise_for(kind, steps, batch=2)
    expected = dp_image_predict(ema, order, images, lowdim, crop, kind, steps, initial,
                                per_step)
    got = our_image_predict(out, images, lowdim, initial, per_step)
    torch.testing.assert_close(got, expected, rtol=0.0, atol=1e-4)
    # The images matter: other pixels give other actions (the encoder is not degenerate).
    other = {key: 255 - value for key, value in images.items()}
    moved = dp_image_predict(ema, order, other, lowdim, crop, kind, steps, initial, per_step)
    assert (moved - expected).abs().max() > 1e-3


def test_batchnorm_encoder_is_refused_naming_the_key(tmp_path):
    ckpt = tmp_path / 'a.ckpt'
    write_image_ckpt(ckpt, image_cfg(), order=ONE_CAMERA, norm=nn.BatchNorm2d)
    with pytest.raises(CheckpointError, match=r"uses BatchNorm \('obs_encoder\.obs_nets\."
                                              r"agentview_image\..*\.running_mean'.*"
                                              r'obs_encoder_group_norm: true'):
        import_checkpoint(ckpt, tmp_path / 'model')


def test_missing_encoder_key_is_named(tmp_path):
    key = 'obs_encoder.obs_nets.agentview_image.nets.0.nets.5.0.downsample.0.weight'

    def drop(state):
        state.pop(key)
        state.pop(key.replace('.nets.0.nets.', '.backbone.nets.'))
    ckpt = tmp_path / 'a.ckpt'
    write_image_ckpt(ckpt, image_cfg(), edit=drop, order=ONE_CAMERA)
    with pytest.raises(CheckpointError, match=rf"lack '{key}' \(for obs_encoder\.cameras\."
                                              rf'agentview_image\.trunk\.layers\.2\.shortcut'):
        import_checkpoint(ckpt, tmp_path / 'model')


def test_bad_temperature_and_alias_mismatch_are_refused(tmp_path):
    ckpt = tmp_path / 'a.ckpt'
    write_image_ckpt(ckpt, image_cfg(), order=ONE_CAMERA, temperature=0.0)
    with pytest.raises(CheckpointError, match=r'nets\.1\.temperature must be one finite number '
                                              r'> 0, got \[0\.0\]'):
        import_checkpoint(ckpt, tmp_path / 'model')
    key = 'obs_encoder.obs_nets.agentview_image.nets.1.nets.weight'

    def split(state):
        state[key] = state[key] + 1.0  # pool.nets.weight keeps the saved keypoint conv
    write_image_ckpt(ckpt, image_cfg(), edit=split, order=ONE_CAMERA)
    with pytest.raises(CheckpointError, match=rf'{key} and .*\.pool\.nets\.weight name one '
                                              rf'module .* different tensors'):
        import_checkpoint(ckpt, tmp_path / 'model')


def test_missing_shape_meta_names_what_to_pass(tmp_path, capsys):
    import yaml
    ckpt = tmp_path / 'a.ckpt'
    write_image_ckpt(ckpt, image_cfg(shape_meta=False), order=ONE_CAMERA)
    with pytest.raises(CheckpointError, match=r'needs shape_meta .* the checkpoint cfg has no '
                                              r'policy\.shape_meta; pass --config-yaml'):
        import_checkpoint(ckpt, tmp_path / 'model')
    hydra = tmp_path / 'config.yaml'
    hydra.write_text(yaml.safe_dump(image_cfg(), sort_keys=False))
    assert main([str(ckpt), '--out', str(tmp_path / 'model'), '--config-yaml',
                 str(hydra)]) == 0
    assert load_config(tmp_path / 'model').camera_names == ('agentview_image',)


def test_shape_meta_and_normalizer_mismatches_are_named(tmp_path, caplog):
    ckpt = tmp_path / 'a.ckpt'
    cfg = image_cfg()
    cfg['shape_meta']['obs']['eef_pos']['shape'] = [5]
    write_image_ckpt(ckpt, cfg, order=ONE_CAMERA)
    with pytest.raises(CheckpointError, match=r'cond_obs_emb\.weight takes 23 features, but '
                                              r'shape_meta gives 25'):
        import_checkpoint(ckpt, tmp_path / 'model')
    key = 'normalizer.params_dict.agentview_image.scale'

    def unit_images(state):
        state[key] = torch.ones(1)
    write_image_ckpt(ckpt, image_cfg(), edit=unit_images, order=ONE_CAMERA)
    with pytest.raises(CheckpointError, match=rf'{key} is \[1\.0\], expected 2\.0'):
        import_checkpoint(ckpt, tmp_path / 'model')
    cfg = image_cfg()
    cfg['policy']['crop_shape'] = [63, 96]
    write_image_ckpt(ckpt, cfg, order=ONE_CAMERA)
    with pytest.raises(CheckpointError, match=r'crop_shape \[63, 96\] leaves an odd margin in '
                                              r"\['height'\]"):
        import_checkpoint(ckpt, tmp_path / 'model')
    cfg = image_cfg()
    cfg['policy']['eval_fixed_crop'] = False
    write_image_ckpt(ckpt, cfg, order=ONE_CAMERA)
    with caplog.at_level(logging.WARNING):
        import_checkpoint(ckpt, tmp_path / 'random_crop')
    assert 'DP crops at random at eval too' in caplog.text
