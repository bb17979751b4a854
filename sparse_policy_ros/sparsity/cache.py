"""RolloutCache: computed branch outputs per (denoising step, branch), kept across calls."""

import numpy as np
import torch


class RolloutCache:
    """
    Preallocated store of branch deltas ``[K, n_branches, B, T, E]`` on the policy's device.

    Only computed values are written (a reused value never overwrites the entry it came from).
    The cache invalidates itself when steps, branches, batch, horizon, width, dtype or device
    change, so a stale entry is never read: after an invalidation a call computes what it
    would have read from the cache.
    """

    def __init__(self):
        self._store: torch.Tensor | None = None
        # (K, nb) on the host, numpy: set ~100 times per call, a torch index costs ~20x more.
        self._filled: np.ndarray | None = None
        # One view per (step, branch), made once per layout: indexing the store twice per
        # write cost ~2 us, ~120 writes per 90%-sparse call.
        self._slots: list[list[torch.Tensor]] = []
        self._key: tuple | None = None
        self.invalidations = 0

    def reset(self) -> None:
        """Forget every entry and free the memory."""
        self._store = None
        self._filled = None
        self._slots = []
        self._key = None

    def prepare(self, steps: int, n_branches: int, shape: tuple[int, int, int],
                dtype: torch.dtype, device: torch.device) -> bool:
        """Make room for a call; returns True when every entry is present for rollout reuse."""
        key = (steps, n_branches, tuple(shape), dtype, torch.device(device))
        if key != self._key:
            if self._key is not None:
                self.invalidations += 1
            self._store = torch.zeros((steps, n_branches, *shape), dtype=dtype, device=device)
            self._filled = np.zeros((steps, n_branches), dtype=bool)
            self._slots = [list(step.unbind(0)) for step in self._store.unbind(0)]
            self._key = key
            return False
        return bool(self._filled.all())

    def store(self, step: int, branch: int, value: torch.Tensor) -> None:
        """Copy a freshly computed branch output into its slot."""
        self._slots[step][branch].copy_(value)
        self._filled[step, branch] = True

    def rollout(self, step: int, branch: int) -> torch.Tensor:
        """Return this branch's value at this step when last computed (a view; do not modify)."""
        if not self._filled[step, branch]:
            raise RuntimeError(f'rollout cache has no entry for step {step}, branch {branch}')
        return self._slots[step][branch]

    def shift(self, steps: int) -> None:
        """
        Move every entry ``steps`` action tokens earlier (the calls are ``steps`` apart).

        Consecutive calls of a streaming policy answer observations ``steps`` control steps
        apart, so token ``r`` of this call plans the step that token ``r + steps`` of the last
        call planned: entry rows ``steps ..`` move to ``0 ..``. The last ``steps`` rows, which
        the last call never planned, repeat its final row. ``steps = 0`` changes nothing;
        ``steps >= T`` leaves every row a copy of the final one. Which entries hold values is
        unchanged (a shifted entry is still the last computed value, moved).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f'cache shift must be an int >= 0 (control steps), got {steps!r}')
        if steps == 0 or self._store is None:
            return
        tokens = self._store.shape[3]
        moved = min(steps, tokens - 1)
        self._store[:, :, :, :tokens - moved] = self._store[:, :, :, moved:].clone()
        self._store[:, :, :, tokens - moved:] = self._store[:, :, :, tokens - 1:].clone()

    def mark_computed(self, computed: torch.Tensor) -> None:
        """Record entries written on the device without ``store`` (a CUDA graph replay)."""
        self._filled |= computed.numpy().astype(bool)

    @property
    def storage_key(self) -> tuple | None:
        """Identity of the device storage (address and layout): what a CUDA graph wrote into."""
        if self._store is None:
            return None
        return (self._store.data_ptr(), self._key)

    @property
    def filled(self) -> np.ndarray | bool:
        """``[K, n_branches]`` mask of the entries holding a computed value (False if none)."""
        return False if self._filled is None else self._filled.copy()

    @property
    def ready(self) -> bool:
        """Whether every (step, branch) entry holds a computed value."""
        return self._filled is not None and bool(self._filled.all())

    @property
    def nbytes(self) -> int:
        """Device memory held by the store."""
        return 0 if self._store is None else self._store.numel() * self._store.element_size()
