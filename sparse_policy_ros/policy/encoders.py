"""
Observation encoders: ResNet-18-GroupNorm or a small CNN per camera, an MLP for joints.

Image pipeline (robomimic / Diffusion Policy style): uint8 HWC -> float [-1, 1] CHW, random crop
in training and center crop at inference, conv trunk, spatial-softmax keypoints, linear head
(then a ReLU with ``image_feature_relu``, as robomimic's observation encoder applies).
Instead of (or beside) the crop, ``random_shift`` translates each training image by a few pixels
with replicated edges (DrQ-style pad and crop) and leaves the whole view to inference.
"""

import torch
from torch import nn
import torch.nn.functional as F

from .config import ENCODER_TYPES, PolicyConfig


def group_norm(channels: int) -> nn.GroupNorm:
    """Build a GroupNorm with 16 channels per group (BatchNorm breaks with EMA and batch 1)."""
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = group_norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), group_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18GN(nn.Module):
    """ResNet-18 trunk (no pooling / fc) with GroupNorm; output stride 32, 512 channels."""

    out_channels = 512

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), group_norm(64), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1))
        layers = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


class SmallCNN(nn.Module):
    """
    Four-conv trunk for CPU-sized models; 64 output channels.

    ``small_cnn``: output stride 8 (11x11 features from an 84x84 crop). ``small_cnn_fine``:
    output stride 4 and 64 channels from the second conv on (21x21 features), so that the
    spatial-softmax keypoints resolve a few-pixel object more finely; ~3.5x the conv MACs.
    """

    out_channels = 64

    def __init__(self, fine: bool = False):
        super().__init__()
        chans = (3, 32, 64, 64, 64) if fine else (3, 32, 32, 64, 64)
        strides = (2, 2, 1, 1) if fine else (2, 2, 2, 1)
        blocks = []
        for c_in, c_out, stride in zip(chans[:-1], chans[1:], strides):
            blocks += [nn.Conv2d(c_in, c_out, 3, stride, 1), group_norm(c_out), nn.ReLU()]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_trunk(encoder: str) -> nn.Module:
    """Build the conv trunk named by ``PolicyConfig.encoder``."""
    if encoder == 'resnet18_gn':
        return ResNet18GN()
    if encoder in ('small_cnn', 'small_cnn_fine'):
        return SmallCNN(fine=encoder == 'small_cnn_fine')
    raise ValueError(f'encoder must be one of {list(ENCODER_TYPES)}, got {encoder!r}')


class SpatialSoftmax(nn.Module):
    """Per-keypoint softmax over the feature map; returns expected (x, y) per keypoint."""

    def __init__(self, in_channels: int, num_keypoints: int = 32):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        logits = self.keypoints(features).flatten(2)  # (B, K, H*W)
        attention = logits.softmax(dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=features.device, dtype=features.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=features.device, dtype=features.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        grid = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)  # (H*W, 2)
        return (attention @ grid).reshape(b, 2 * self.num_keypoints)  # (B, 2K)


def random_windows(images: torch.Tensor, ch: int, cw: int) -> torch.Tensor:
    """Cut one (ch, cw) window at a random offset out of each image of (N, C, H, W)."""
    _, _, h, w = images.shape
    tops = torch.randint(0, h - ch + 1, (images.shape[0],)).tolist()
    lefts = torch.randint(0, w - cw + 1, (images.shape[0],)).tolist()
    return torch.stack([img[:, t:t + ch, s:s + cw] for img, t, s in zip(images, tops, lefts)])


class ImageEncoder(nn.Module):
    """One camera: crop, trunk, spatial softmax, projection to ``image_feature_dim``."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.crop_shape = config.crop_shape
        self.random_shift = config.random_shift
        self.trunk = make_trunk(config.encoder)
        self.pool = SpatialSoftmax(self.trunk.out_channels)
        self.proj = nn.Linear(2 * self.pool.num_keypoints, config.image_feature_dim)
        self.feature_relu = config.image_feature_relu

    def shift(self, images: torch.Tensor) -> torch.Tensor:
        """Translate each image by up to ``random_shift`` px in training; identity at inference."""
        pad = self.random_shift
        if not self.training or pad == 0:
            return images
        _, _, h, w = images.shape
        return random_windows(F.pad(images, (pad, pad, pad, pad), mode='replicate'), h, w)

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """Crop randomly in training (one offset per image), centrally at inference."""
        if self.crop_shape is None:
            return images
        ch, cw = self.crop_shape
        _, _, h, w = images.shape
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return images[:, :, top:top + ch, left:left + cw]
        return random_windows(images, ch, cw)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] -> (N, image_feature_dim)."""
        features = self.proj(self.pool(self.trunk(self.crop(self.shift(images)))))
        return F.relu(features) if self.feature_relu else features


class ObservationEncoder(nn.Module):
    """All cameras plus joint state at every observation step -> one token per step."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.camera_names = config.camera_names
        self.cameras = nn.ModuleDict({name: ImageEncoder(config) for name in config.camera_names})
        if config.state_encoder == 'identity':
            # Diffusion Policy's low-dim models condition on the normalized state itself.
            self.state_mlp = nn.Identity()
            state_features = config.state_dim
        else:
            self.state_mlp = nn.Sequential(
                nn.Linear(config.state_dim, 64), nn.Mish(), nn.Linear(64, 64))
            state_features = 64
        self.feature_dim = config.image_feature_dim * len(config.camera_names) + state_features

    def forward(self, images: dict[str, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        """Images: camera -> uint8 (B, T, 3, H, W); state normalized (B, T, D) -> (B, T, F)."""
        b, t = state.shape[:2]
        features = [self.image_features(name, images[name].flatten(0, 1)).view(b, t, -1)
                    for name in self.camera_names]
        return self.tokens(features, state)

    def image_features(self, name: str, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, 3, H, W) of camera ``name`` -> (N, image_feature_dim)."""
        return self.cameras[name](frames.float() / 127.5 - 1.0)

    def tokens(self, camera_features: list[torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        """Per-camera features (B, T, F_cam) in camera order + normalized state -> (B, T, F)."""
        return torch.cat([*camera_features, self.state_mlp(state)], dim=-1)
