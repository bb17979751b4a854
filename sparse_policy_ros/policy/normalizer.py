"""Min-max normalization of low-dimensional arrays to [-1, 1], with stats kept as buffers."""

import numpy as np
import torch
from torch import nn

# Ranges narrower than this are treated as constant: mapped to 0 instead of dividing by ~0.
RANGE_EPS = 1e-4

STATS_KEYS = ('min', 'max')


class MinMaxNormalizer(nn.Module):
    """Maps each field's [min, max] to [-1, 1] per dimension; constant dims map to 0."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        self.fields = tuple(sorted(dims))
        for name, dim in dims.items():
            self.register_buffer(f'{name}_scale', torch.ones(dim))
            self.register_buffer(f'{name}_offset', torch.zeros(dim))
            self.register_buffer(f'{name}_min', torch.full((dim,), -1.0))
            self.register_buffer(f'{name}_max', torch.ones(dim))
        self.fitted = False

    def set_stats(self, stats: dict[str, dict[str, np.ndarray]]) -> None:
        """Set per-field ``{'min': (D,), 'max': (D,)}`` statistics."""
        for name in self.fields:
            if name not in stats:
                raise ValueError(
                    f'normalization stats are missing field {name!r}; expected {list(self.fields)}'
                    f', got {sorted(stats)}')
            lo = torch.as_tensor(np.asarray(stats[name]['min']), dtype=torch.float32)
            hi = torch.as_tensor(np.asarray(stats[name]['max']), dtype=torch.float32)
            dim = getattr(self, f'{name}_min').shape
            if lo.shape != dim or hi.shape != dim:
                raise ValueError(
                    f'stats for {name!r} must have shape {tuple(dim)}, got min {tuple(lo.shape)} '
                    f'and max {tuple(hi.shape)}')
            if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
                raise ValueError(f'stats for {name!r} must be finite, got min {lo} max {hi}')
            span = hi - lo
            constant = span < RANGE_EPS
            scale = torch.where(constant, torch.ones_like(span), 2.0 / span.clamp_min(RANGE_EPS))
            offset = torch.where(constant, -lo, -1.0 - lo * scale)
            getattr(self, f'{name}_scale').copy_(scale)
            getattr(self, f'{name}_offset').copy_(offset)
            getattr(self, f'{name}_min').copy_(lo)
            getattr(self, f'{name}_max').copy_(hi)
        self.fitted = True

    def stats_tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``{'<field>.min': tensor, ...}`` for safetensors."""
        out = {}
        for name in self.fields:
            for key in STATS_KEYS:
                out[f'{name}.{key}'] = getattr(self, f'{name}_{key}').detach().cpu().contiguous()
        return out

    def load_stats_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`stats_tensors`."""
        stats = {}
        for name in self.fields:
            stats[name] = {}
            for key in STATS_KEYS:
                flat = f'{name}.{key}'
                if flat not in tensors:
                    raise ValueError(
                        f'normalization stats file lacks {flat!r}; has {sorted(tensors)}')
                stats[name][key] = tensors[flat].detach().cpu().float().numpy()
        self.set_stats(stats)

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Raw values -> [-1, 1] along the last dim."""
        return x * getattr(self, f'{name}_scale') + getattr(self, f'{name}_offset')

    def unnormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> raw values along the last dim."""
        return (x - getattr(self, f'{name}_offset')) / getattr(self, f'{name}_scale')
