"""
Filmstrips of closed-loop episodes: what the policy's camera saw, one PNG strip per seed.

``python -m sparse_policy_ros.sim.filmstrip --model models/default --seeds 100000 100001``
writes ``<out>/seed-<seed>.png`` (the camera frame every ``--every`` control steps and the last
one, side by side, each scaled by ``--scale``) and prints the outcome per seed: success, policy
calls and the final puck-to-goal distance. For looking at failures, not for measuring: the
episode runs exactly as ``eval-policy`` runs it (same seeds, same per-call noise).
"""

import argparse
from pathlib import Path
import struct
import sys
import zlib

import numpy as np

from .envs import env_name_for_task, make_env
from .evaluate import run_episode
from ..policy.observation import OBS_IMAGES
from ..sparsity.sparse_policy import MODES, SparsePolicy


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG (zlib only, no imaging library)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be uint8 (H, W, 3), got {image.dtype} {image.shape}')
    height, width, _ = image.shape
    rows = b''.join(b'\x00' + np.ascontiguousarray(image[y]).tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
                           + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


class _Recording:
    """Wraps an environment: keeps every ``every``-th camera frame and the last one."""

    def __init__(self, env, camera: str, every: int):
        self.env, self.camera, self.every = env, camera, every
        self.frames: list[np.ndarray] = []
        self._steps = 0
        self._last = None

    def reset(self, seed: int):
        obs = self.env.reset(seed=seed)
        self.frames, self._steps = [obs[OBS_IMAGES][self.camera]], 0
        return obs

    def step(self, action):
        result = self.env.step(action)
        self._steps += 1
        self._last = result[0][OBS_IMAGES][self.camera]
        if self._steps % self.every == 0:
            self.frames.append(self._last)
        return result

    def strip(self) -> np.ndarray:
        frames = self.frames + ([self._last] if self._steps % self.every else [])
        return np.concatenate(frames, axis=1)

    def __getattr__(self, name):
        return getattr(self.env, name)


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--model', required=True, type=Path)
    parser.add_argument('--seeds', required=True, type=int, nargs='+')
    parser.add_argument('--mode', default='dense', choices=MODES)
    parser.add_argument('--target-sparsity', type=float, default=None)
    parser.add_argument('--every', type=int, default=15, help='control steps between frames')
    parser.add_argument('--scale', type=int, default=2, help='integer upscaling of each frame')
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--out', type=Path, default=Path('results/filmstrips'))
    args = parser.parse_args(argv)
    if args.every < 1 or args.scale < 1:
        print(f'filmstrip: error: --every and --scale must be >= 1, got {args.every} and '
              f'{args.scale}', file=sys.stderr)
        return 2
    try:
        policy = SparsePolicy.from_pretrained(args.model, device='cpu', mode=args.mode,
                                              target_sparsity=args.target_sparsity)
    except (ValueError, FileNotFoundError) as error:
        print(f'filmstrip: error: {error}', file=sys.stderr)
        return 2
    config = policy.config
    env = make_env(env_name_for_task(config.extra), image_size=config.image_shape[1],
                   max_steps=args.max_steps)
    recording = _Recording(env, config.camera_names[0], args.every)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for seed in args.seeds:
            result = run_episode(recording, policy, seed, None, False)
            strip = np.kron(recording.strip(), np.ones((args.scale, args.scale, 1), np.uint8))
            path = args.out / f'seed-{seed}.png'
            write_png(path, strip)
            print(f"seed {seed}: success {result['success']}, {result['calls']} calls, "
                  f'puck {env.object_to_goal():.3f} m from the goal -> {path}')
    finally:
        env.close()
        policy.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
