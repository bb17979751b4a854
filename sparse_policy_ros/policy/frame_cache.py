"""
Image features of recent camera frames, so that each frame is encoded once.

With ``n_obs_steps = 2`` every call sees the newest frame and the one the previous call saw as
newest: re-encoding that one is pure waste (the image encoder is a large part of a sparse call).
Frames are keyed by camera and a digest of their pixels, not by the message stamp: a driver
that stamps every frame alike (or a replayed bag) cannot make the policy reuse stale features.
Every frame is encoded on its own (batch 1), cached or not, so a reused feature is bit for bit
what re-encoding it gives.
"""

from collections import OrderedDict
import hashlib

import numpy as np
import torch

from .encoders import ObservationEncoder


def frame_key(frame: np.ndarray) -> tuple:
    """Shape and a 128-bit digest of the pixels of one (H, W, 3) uint8 frame."""
    data = np.ascontiguousarray(frame)
    return data.shape, hashlib.blake2b(data.data, digest_size=16).digest()


class FrameFeatureCache:
    """Least-recently-used features of up to ``capacity`` frames per camera."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self._features: dict[str, OrderedDict] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Forget every frame (the counters are kept)."""
        self._features.clear()

    def encode(self, encoder: ObservationEncoder, camera: str, frames: np.ndarray,
               device: torch.device) -> tuple[torch.Tensor, int]:
        """
        Features (T, F) of ``frames`` (T, H, W, 3) uint8; returns them and how many were encoded.

        Frames seen before (same camera, same pixels) are read from the cache.
        """
        entries = self._features.setdefault(camera, OrderedDict())
        out, encoded = [], 0
        for frame in frames:
            key = frame_key(frame)
            feature = entries.get(key)
            if feature is None:
                pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(
                    device, non_blocking=True).permute(2, 0, 1)[None]
                feature = encoder.image_features(camera, pixels)[0]
                entries[key] = feature
                encoded += 1
                self.misses += 1
                while len(entries) > self.capacity:
                    entries.popitem(last=False)
            else:
                entries.move_to_end(key)
                self.hits += 1
            out.append(feature)
        return torch.stack(out), encoded
