"""
The image side of a Diffusion Policy (DP) import: robomimic's obs encoder onto ours.

DP's ``DiffusionTransformerHybridImagePolicy`` encodes observations with robomimic's
``ObservationEncoder``: for every obs key of ``shape_meta``, in its order, an rgb key goes
through a crop (center crop at eval with ``eval_fixed_crop``) and a ``VisualCore``, a low-dim
key passes through as the normalizer left it; the results are concatenated. A VisualCore is

* ``nets.0`` (also stored as ``backbone``): ResNet18Conv, whose ``nets`` are torchvision
  resnet18's children up to layer4 (0 conv1, 1 bn1, 2 relu, 3 maxpool, 4..7 layer1..4), with
  every BatchNorm2d replaced by GroupNorm(C // 16, C) under ``obs_encoder_group_norm``;
* ``nets.1`` (also ``pool``): SpatialSoftmax: a 1x1 keypoint conv (``nets``), softmax of the
  logits divided by ``temperature``, expected x and y on the ``pos_x`` / ``pos_y`` grid;
* ``nets.2`` Flatten and ``nets.3`` Linear to the feature size, then the encoder's ReLU.

Our :class:`ImageEncoder` ('resnet18_gn', :class:`SpatialSoftmax`, ``proj``, and
``image_feature_relu``) computes the same; the temperature is folded into the keypoint conv
(softmax(z / T) with z = Wx + b is softmax((W / T) x + b / T)). Our tokens put the cameras first
and the state after, so the columns of ``model.cond_obs_emb.weight`` are reordered from DP's key
order; several low-dim keys become one state, concatenated in DP's order.
"""

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

HYBRID_POLICY = 'DiffusionTransformerHybridImagePolicy'
ENCODER = 'obs_encoder.'
OBS_NETS = 'obs_encoder.obs_nets.'
# torchvision resnet18 layers (ResNet18Conv nets.4 .. nets.7): (channels, first stride).
RESNET_LAYERS = ((64, 1), (128, 2), (256, 2), (512, 2))
# The parts of a VisualCore that state_dict() lists twice (the same modules, two names).
ALIASES = (('nets.0.', 'backbone.'), ('nets.1.', 'pool.'))
BATCHNORM_SUFFIXES = ('.running_mean', '.running_var', '.num_batches_tracked')
MISSING = object()


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported; the message names the file and the cause."""


@dataclass(frozen=True)
class ImageLayout:
    """What DP's shape_meta says about the observation, in the obs encoder's order."""

    keys: tuple[str, ...]  # every obs key, in shape_meta (= feature) order
    cameras: tuple[str, ...]  # the rgb keys, in that order
    lowdim: tuple[tuple[str, int], ...]  # (low-dim key, size), in that order
    image_shape: tuple[int, int, int]  # (3, H, W), shared by the cameras
    action_dim: int | None  # shape_meta.action.shape[0], where given

    @property
    def state_dim(self) -> int:
        """Size of our state: the low-dim keys concatenated."""
        return sum(size for _, size in self.lowdim)


def is_image_policy(state: dict[str, torch.Tensor]) -> bool:
    """Whether the policy weights hold a robomimic obs encoder."""
    return any(key.startswith(ENCODER) for key in state)


def refuse_batchnorm(state: dict[str, torch.Tensor], ckpt: Path) -> None:
    """Refuse an encoder trained with BatchNorm (``obs_encoder_group_norm: false``)."""
    norms = sorted((BATCHNORM_SUFFIXES.index('.' + k.rsplit('.', 1)[1]), k) for k in state
                   if k.startswith(ENCODER) and k.endswith(BATCHNORM_SUFFIXES))
    if norms:
        raise CheckpointError(
            f'{ckpt}: the image encoder uses BatchNorm ({norms[0][1]!r}, {len(norms)} such keys; '
            f'obs_encoder_group_norm: false); only GroupNorm encoders '
            f'(obs_encoder_group_norm: true) map onto resnet18_gn')


def parse_shape_meta(shape_meta: Any, where: str, ckpt: Path) -> ImageLayout:
    """Read ``shape_meta.obs`` (key -> {shape, type}) into an :class:`ImageLayout`."""
    obs = shape_meta.get('obs') if isinstance(shape_meta, dict) else None
    if not isinstance(obs, dict) or not obs:
        raise CheckpointError(f'{ckpt}: {where}.obs must map obs keys to {{shape, type}}, got '
                              f'{obs!r}')
    cameras, lowdim, shapes = [], [], {}
    for key, attr in obs.items():
        shape = attr.get('shape') if isinstance(attr, dict) else None
        if not isinstance(shape, (list, tuple)) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise CheckpointError(f'{ckpt}: {where}.obs.{key}.shape must be a list of positive '
                                  f'ints, got {shape!r}')
        kind = attr.get('type', 'low_dim')
        if kind == 'rgb':
            if len(shape) != 3 or shape[0] != 3:
                raise CheckpointError(f'{ckpt}: {where}.obs.{key}.shape must be [3, H, W] for '
                                      f'an rgb key, got {list(shape)}')
            cameras.append(key)
            shapes[key] = tuple(shape)
        elif kind == 'low_dim':
            if len(shape) != 1:
                raise CheckpointError(f'{ckpt}: {where}.obs.{key}.shape is {list(shape)}; only '
                                      f'flat low_dim keys ([n]) map onto our state')
            lowdim.append((key, shape[0]))
        else:
            raise CheckpointError(f"{ckpt}: {where}.obs.{key}.type is {kind!r}; only 'rgb' and "
                                  f"'low_dim' are supported")
    if not cameras:
        raise CheckpointError(f'{ckpt}: {where}.obs has no rgb key, but the weights hold an '
                              f'image encoder')
    if not lowdim:
        raise CheckpointError(f'{ckpt}: {where}.obs has no low_dim key; our policy needs a '
                              f'state (rgb keys: {cameras})')
    if len(set(shapes.values())) > 1:
        raise CheckpointError(f'{ckpt}: the rgb keys have different shapes {shapes}; our policy '
                              f'takes one image_shape for all cameras')
    action = shape_meta.get('action')
    action_shape = action.get('shape') if isinstance(action, dict) else None
    if action is not None and not (isinstance(action_shape, (list, tuple)) and len(
            action_shape) == 1 and isinstance(action_shape[0], int)):
        raise CheckpointError(f'{ckpt}: {where}.action.shape must be [n], got {action_shape!r}')
    return ImageLayout(tuple(obs), tuple(cameras), tuple(lowdim), shapes[cameras[0]],
                       None if action is None else action_shape[0])


def check_encoder_keys(state: dict[str, torch.Tensor], layout: ImageLayout, where: str,
                       ckpt: Path) -> int:
    """Match the encoder's keys to shape_meta's rgb keys; return the per-camera feature size."""
    nets = sorted({k[len(OBS_NETS):].split('.', 1)[0] for k in state if k.startswith(OBS_NETS)})
    stray = sorted(k for k in state if k.startswith(ENCODER) and not k.startswith(OBS_NETS))
    if stray:
        raise CheckpointError(f'{ckpt}: unexpected obs encoder weights {stray[:4]} (only '
                              f'{OBS_NETS}<rgb key> is known)')
    unknown = sorted(set(nets) - set(layout.cameras))
    if unknown:
        raise CheckpointError(f'{ckpt}: the obs encoder has nets for {unknown}, which '
                              f'{where}.obs does not list as rgb keys (rgb: '
                              f'{list(layout.cameras)})')
    sizes = {}
    for camera in layout.cameras:
        key = f'{OBS_NETS}{camera}.nets.3.weight'
        if key not in state:
            raise CheckpointError(f'{ckpt}: the policy weights lack {key!r} (the feature '
                                  f'projection of rgb key {camera!r} in {where}.obs)')
        sizes[camera] = state[key].shape[0]
    if len(set(sizes.values())) > 1:
        raise CheckpointError(f'{ckpt}: the cameras have different feature sizes {sizes} '
                              f'({OBS_NETS}<key>.nets.3.weight); ours share image_feature_dim')
    return sizes[layout.cameras[0]]


def read_crop(value: Any, layout: ImageLayout, where: str, ckpt: Path) -> tuple | None:
    """Validate DP's ``crop_shape`` (None: no crop) against the image shape."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value):
        raise CheckpointError(f'{ckpt}: {where}crop_shape must be [h, w] or null, got '
                              f'{value!r}')
    _, h, w = layout.image_shape
    crop = tuple(value)
    if crop[0] >= h or crop[1] >= w:
        raise CheckpointError(f'{ckpt}: {where}crop_shape {list(crop)} must be smaller than the '
                              f'images {[h, w]} (DP asserts it)')
    odd = [axis for axis, margin in (('height', h - crop[0]), ('width', w - crop[1]))
           if margin % 2]
    if odd:
        raise CheckpointError(
            f'{ckpt}: {where}crop_shape {list(crop)} leaves an odd margin in {odd} of the '
            f'{[h, w]} images: torchvision center_crop and ours round its offset differently; '
            f'only even margins import')
    return crop


def encoder_key_pairs(camera: str) -> list[tuple[str, str]]:
    """(our key, DP key) for every weight of one camera's ResNet-18 and projection."""
    ours = f'obs_encoder.cameras.{camera}.'
    dp = f'{OBS_NETS}{camera}.nets.'
    pairs = [(f'{ours}trunk.stem.0.weight', f'{dp}0.nets.0.weight')]
    pairs += [(f'{ours}trunk.stem.1.{p}', f'{dp}0.nets.1.{p}') for p in ('weight', 'bias')]
    c_in = 64
    for index, (c_out, stride) in enumerate(RESNET_LAYERS):
        for block in (0, 1):
            mine = f'{ours}trunk.layers.{2 * index + block}.'
            theirs = f'{dp}0.nets.{4 + index}.{block}.'
            pairs += [(f'{mine}conv1.weight', f'{theirs}conv1.weight'),
                      (f'{mine}conv2.weight', f'{theirs}conv2.weight')]
            for p in ('weight', 'bias'):
                pairs += [(f'{mine}norm1.{p}', f'{theirs}bn1.{p}'),
                          (f'{mine}norm2.{p}', f'{theirs}bn2.{p}')]
            if block == 0 and (stride != 1 or c_in != c_out):
                pairs.append((f'{mine}shortcut.0.weight', f'{theirs}downsample.0.weight'))
                pairs += [(f'{mine}shortcut.1.{p}', f'{theirs}downsample.1.{p}')
                          for p in ('weight', 'bias')]
        c_in = c_out
    for p in ('weight', 'bias'):
        pairs += [(f'{ours}pool.keypoints.{p}', f'{dp}1.nets.{p}'),
                  (f'{ours}proj.{p}', f'{dp}3.{p}')]
    return pairs


def _alias(key: str, camera: str) -> str | None:
    """Return the second name state_dict() gives a VisualCore tensor (backbone., pool.)."""
    core = f'{OBS_NETS}{camera}.'
    rest = key[len(core):]
    for canonical, other in ALIASES:
        if rest.startswith(canonical):
            return core + other + rest[len(canonical):]
    return None


def fetch(state: dict[str, torch.Tensor], key: str, camera: str, used: set,
          ckpt: Path, what: str) -> torch.Tensor:
    """Return ``state[key]`` (or its alias), checking that both names hold the same tensor."""
    alias = _alias(key, camera)
    if key not in state and alias not in state:
        raise CheckpointError(f'{ckpt}: the policy weights lack {key!r} (for {what})')
    tensor = state[key] if key in state else state[alias]
    if key in state and alias in state and not torch.equal(state[key], state[alias]):
        raise CheckpointError(f'{ckpt}: {key} and {alias} name one module of the VisualCore '
                              f'but hold different tensors')
    used.update(k for k in (key, alias) if k in state)
    return tensor.float()


def spatial_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return robomimic SpatialSoftmax's pos_x, pos_y buffers for an (h, w) feature map."""
    pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
    return (torch.from_numpy(pos_x.reshape(1, h * w)).float(),
            torch.from_numpy(pos_y.reshape(1, h * w)).float())


def convert_encoder(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                    cameras: tuple[str, ...], feature_hw: tuple[int, int], used: set,
                    ckpt: Path) -> dict[str, torch.Tensor]:
    """DP obs-encoder tensors -> our ``obs_encoder.cameras.*`` tensors (temperature folded)."""
    out = {}
    for camera in cameras:
        pool = f'{OBS_NETS}{camera}.nets.1.'
        temperature = fetch(state, pool + 'temperature', camera, used, ckpt,
                            'the spatial-softmax temperature')
        if temperature.numel() != 1 or not (math.isfinite(temperature.item())
                                            and temperature.item() > 0):
            raise CheckpointError(f'{ckpt}: {pool}temperature must be one finite number > 0, '
                                  f'got {temperature.flatten()[:4].tolist()}')
        for name, expected in zip(('pos_x', 'pos_y'), spatial_grid(*feature_hw)):
            grid = fetch(state, pool + name, camera, used, ckpt, 'the spatial-softmax grid')
            if grid.shape != expected.shape or not torch.allclose(grid, expected, atol=1e-6):
                raise CheckpointError(
                    f'{ckpt}: {pool}{name} has shape {tuple(grid.shape)}, expected the '
                    f'robomimic linspace(-1, 1) grid {tuple(expected.shape)} of the '
                    f'{feature_hw[0]}x{feature_hw[1]} feature map of the (cropped) image')
        for ours, dp in encoder_key_pairs(camera):
            tensor = fetch(state, dp, camera, used, ckpt, ours)
            if ours.endswith(('pool.keypoints.weight', 'pool.keypoints.bias')):
                tensor = tensor / temperature.item()
            if tuple(tensor.shape) != tuple(own[ours].shape):
                raise CheckpointError(
                    f'{ckpt}: shape mismatch: {dp} gives {tuple(tensor.shape)} for {ours}, '
                    f'which has shape {tuple(own[ours].shape)} in the model built from the '
                    f'config (ResNet-18, 32 keypoints)')
            out[ours] = tensor.clone().contiguous()
    return out


def feature_hw(image_hw: tuple[int, int]) -> tuple[int, int]:
    """Return the ResNet-18 feature map size that robomimic assumes: ceil(size / 32)."""
    return math.ceil(image_hw[0] / 32), math.ceil(image_hw[1] / 32)


def cond_columns(layout: ImageLayout, feature_dim: int) -> list[int]:
    """Return DP's cond column for each of ours: cameras first, then the low-dim keys."""
    sizes = dict(layout.lowdim)
    starts, at = {}, 0
    for key in layout.keys:
        starts[key] = at
        at += feature_dim if key in layout.cameras else sizes[key]
    columns = [starts[c] + i for c in layout.cameras for i in range(feature_dim)]
    columns += [starts[k] + i for k, size in layout.lowdim for i in range(size)]
    return columns


def check_image_normalizer(state: dict[str, torch.Tensor], cameras: tuple[str, ...],
                           ckpt: Path) -> None:
    """Require DP's image range normalizer ([0, 1] -> [-1, 1]) for every rgb key."""
    for camera in cameras:
        base = f'normalizer.params_dict.{camera}.'
        for part, expected in (('scale', 2.0), ('offset', -1.0)):
            key = base + part
            if key not in state:
                raise CheckpointError(f'{ckpt}: the normalizer lacks {key!r} (rgb key '
                                      f'{camera!r}; DP uses get_image_range_normalizer)')
            values = state[key].float().flatten()
            if values.numel() == 0 or (values - expected).abs().max() > 1e-6:
                raise CheckpointError(
                    f'{ckpt}: {key} is {values[:4].tolist()}, expected {expected} (DP '
                    f'get_image_range_normalizer maps [0, 1] images to [-1, 1], as ours maps '
                    f'uint8 by x / 127.5 - 1); other image normalizers are not supported')
