"""Image augmentation of the observation encoder: random crop and random shift."""

from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.encoders import ImageEncoder
import torch
import torch.nn.functional as F


def _encoder(**overrides) -> ImageEncoder:
    config = {'image_shape': (3, 16, 16), 'crop_shape': None, 'encoder': 'small_cnn',
              'image_feature_dim': 8}
    config.update(overrides)
    return ImageEncoder(PolicyConfig(**config))


def _distinct_images(n: int = 6) -> torch.Tensor:
    return torch.arange(n * 3 * 16 * 16, dtype=torch.float32).view(n, 3, 16, 16)


def test_random_shift_is_a_translation_with_replicated_edges():
    torch.manual_seed(0)
    encoder = _encoder(random_shift=3).train()
    images = _distinct_images()
    shifted = encoder.shift(images)
    assert shifted.shape == images.shape
    padded = F.pad(images, (3, 3, 3, 3), mode='replicate')
    offsets = set()
    for k in range(images.shape[0]):
        matches = [(t, s) for t in range(7) for s in range(7)
                   if torch.equal(shifted[k], padded[k, :, t:t + 16, s:s + 16])]
        assert len(matches) == 1, f'image {k} is no single shift of its input'
        offsets.add(matches[0])
    assert len(offsets) > 1, 'every image got the same offset'
    assert not torch.equal(shifted, images)


def test_random_shift_is_off_at_inference_and_by_default():
    images = _distinct_images()
    assert torch.equal(_encoder(random_shift=3).eval().shift(images), images)
    assert torch.equal(_encoder().train().shift(images), images)


def test_center_crop_at_inference_random_crop_in_training():
    torch.manual_seed(0)
    images = _distinct_images()
    encoder = _encoder(crop_shape=(12, 12))
    assert torch.equal(encoder.eval().crop(images), images[:, :, 2:14, 2:14])
    cropped = encoder.train().crop(images)
    assert cropped.shape == (6, 3, 12, 12)
    windows = {(t, s) for k in range(6) for t in range(5) for s in range(5)
               if torch.equal(cropped[k], images[k, :, t:t + 12, s:s + 12])}
    assert len(windows) > 1


def test_fine_small_cnn_keeps_twice_the_feature_resolution():
    images = torch.rand(2, 3, 84, 84) * 2 - 1
    coarse = ImageEncoder(PolicyConfig(encoder='small_cnn', crop_shape=None,
                                       image_shape=(3, 84, 84), image_feature_dim=8)).eval()
    fine = ImageEncoder(PolicyConfig(encoder='small_cnn_fine', crop_shape=None,
                                     image_shape=(3, 84, 84), image_feature_dim=8)).eval()
    with torch.no_grad():
        assert coarse.trunk(images).shape == (2, 64, 11, 11)
        assert fine.trunk(images).shape == (2, 64, 21, 21)
        assert fine(images).shape == (2, 8)
