"""`colcon build` installs launch, config, models, urdf, worlds, executables, every module."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ('package.xml', 'setup.py', 'setup.cfg', 'resource', 'sparse_policy_ros', 'launch',
           'config', 'models', 'urdf', 'worlds')
EXECUTABLES = ('policy_node', 'sim_node', 'demo', 'policy-ctl', 'bench', 'train-policy',
               'train-pruner', 'record-demos', 'eval-policy')


@pytest.mark.slow
def test_colcon_build_installs_everything(tmp_path):
    colcon = shutil.which('colcon') or str(Path(sys.executable).parent / 'colcon')
    if not Path(colcon).exists():
        pytest.skip('colcon is not installed (pip install colcon-common-extensions)')
    src = tmp_path / 'src' / 'sparse_policy_ros'
    src.mkdir(parents=True)
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns('__pycache__'))
        elif path.exists():
            shutil.copy2(path, src / name)
    env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    result = subprocess.run(
        [colcon, 'build', '--packages-select', 'sparse_policy_ros', '--base-paths', 'src',
         '--event-handlers', 'console_direct-'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    prefix = tmp_path / 'install' / 'sparse_policy_ros'
    share = prefix / 'share' / 'sparse_policy_ros'
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    assert (index / 'sparse_policy_ros').is_file()
    assert (share / 'package.xml').is_file()
    for name in ('launch', 'config', 'models', 'urdf', 'worlds'):
        expected = sorted(p.relative_to(REPO / name) for p in (REPO / name).rglob('*')
                          if p.is_file() and '__pycache__' not in p.parts)
        installed = sorted(p.relative_to(share / name) for p in (share / name).rglob('*')
                           if p.is_file())
        assert expected, f'the repo has no files under {name}/'
        assert installed == expected, name
    for exe in EXECUTABLES:
        assert (prefix / 'lib' / 'sparse_policy_ros' / exe).is_file(), exe
    # Every subpackage (control/ included) is installed with all of its modules.
    installed_packages = [init.parent for init in
                          prefix.glob('**/*-packages/sparse_policy_ros/__init__.py')]
    assert len(installed_packages) == 1, installed_packages
    package = REPO / 'sparse_policy_ros'
    expected = sorted(p.relative_to(package) for p in package.rglob('*.py')
                      if '__pycache__' not in p.parts
                      and (p.parent / '__init__.py').is_file())
    installed = sorted(p.relative_to(installed_packages[0])
                       for p in installed_packages[0].rglob('*.py'))
    assert Path('control', 'planning.py') in expected
    assert installed == expected
