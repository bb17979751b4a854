"""Rolling statistics for the node's ``/diagnostics`` and the status message built from them."""

from collections import deque

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
import numpy as np

LEVEL_NAMES = {DiagnosticStatus.OK: 'OK', DiagnosticStatus.WARN: 'WARN',
               DiagnosticStatus.ERROR: 'ERROR', DiagnosticStatus.STALE: 'STALE'}


class RollingWindow:
    """The last ``size`` samples of a quantity, with percentiles and a mean."""

    def __init__(self, size: int = 1000):
        """Keep at most ``size`` samples."""
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        """Record one sample."""
        self._values.append(float(value))

    def clear(self) -> None:
        """Forget all samples."""
        self._values.clear()

    def __len__(self) -> int:
        """Return the number of samples held."""
        return len(self._values)

    def percentile(self, q: float) -> float | None:
        """Return a percentile of the samples (q in 0..100), None without samples."""
        if not self._values:
            return None
        return float(np.percentile(np.fromiter(self._values, dtype=np.float64), q))

    def mean(self) -> float | None:
        """Return the mean of the samples, None without samples."""
        if not self._values:
            return None
        return float(np.mean(np.fromiter(self._values, dtype=np.float64)))


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window: float = 5.0):
        """Average over the last ``window`` seconds."""
        if not window > 0:
            raise ValueError(f'window must be > 0 s, got {window}')
        self.window = float(window)
        self._times: deque[float] = deque()

    def tick(self, t: float) -> None:
        """Record an event at time ``t`` (seconds)."""
        self._times.append(float(t))

    def clear(self) -> None:
        """Forget all events."""
        self._times.clear()

    def rate(self, now: float) -> float:
        """Events per second in (now - window, now]."""
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) / self.window


def format_value(value) -> str:
    """Diagnostics values are strings: floats with 3 decimals, None as 'n/a'."""
    if value is None:
        return 'n/a'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def make_status(name: str, hardware_id: str, level: bytes, message: str,
                values: dict) -> DiagnosticStatus:
    """Build a DiagnosticStatus with ``values`` as key/value strings."""
    return DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=key, value=format_value(value)) for key, value in values.items()])


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """Return the key/value pairs of a status as a dict (for tests and the demo)."""
    return {item.key: item.value for item in status.values}
