"""Filmstrips of closed-loop episodes: a real PNG per seed, the outcome printed."""

from pathlib import Path
import struct
import zlib

import numpy as np
import pytest
from sparse_policy_ros.sim.filmstrip import main, write_png

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'default'


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    width, height = struct.unpack('>II', data[16:24])
    idat_len = struct.unpack('>I', data[33:37])[0]
    assert data[37:41] == b'IDAT'
    raw = zlib.decompress(data[41:41 + idat_len])
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()  # filter type none
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / 'a.png', image)
    assert np.array_equal(read_png(tmp_path / 'a.png'), image)
    with pytest.raises(ValueError, match='uint8'):
        write_png(tmp_path / 'b.png', image.astype(np.float32))


def test_filmstrip_of_a_short_episode(tmp_path, capsys):
    assert main(['--model', str(DEFAULT_MODEL), '--seeds', '100000', '--max-steps', '20',
                 '--every', '8', '--scale', '1', '--out', str(tmp_path)]) == 0
    strip = read_png(tmp_path / 'seed-100000.png')
    # Frames after reset, at steps 8 and 16, and the last (step 20): four 96 x 96 frames.
    assert strip.shape == (96, 4 * 96, 3)
    assert strip.std() > 10  # a rendered scene, not a blank image
    assert 'seed 100000: success False' in capsys.readouterr().out


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(['--model', str(tmp_path), '--seeds', '1', '--out', str(tmp_path)]) == 2
    assert main(['--model', str(DEFAULT_MODEL), '--seeds', '1', '--every', '0']) == 2
    assert 'filmstrip: error' in capsys.readouterr().err
