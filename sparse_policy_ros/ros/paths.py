"""Files the package installs under share/ (config, models): installed, else the source tree."""

from pathlib import Path

PACKAGE = 'sparse_policy_ros'
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def package_path(*parts: str) -> Path:
    """
    Return ``share/sparse_policy_ros/<parts>`` if installed there, else ``<repo>/<parts>``.

    Without a sourced ROS environment (no AMENT_PREFIX_PATH) ament_index raises OSError; that,
    like an unknown package, just means "use the source tree".
    """
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory(PACKAGE)).joinpath(*parts)
        if installed.exists():
            return installed
    except (ImportError, LookupError, OSError, ValueError):
        pass
    return SOURCE_ROOT.joinpath(*parts)


def default_model_dir() -> Path:
    """Return the package's ``models/default``."""
    return package_path('models', 'default')
