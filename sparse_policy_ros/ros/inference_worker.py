"""A single background thread that runs one policy call at a time, off the executor thread."""

import threading
from typing import Any, Callable


class InferenceWorker:
    """
    Runs ``run(job)`` for submitted jobs on its own thread, one job at a time.

    ``submit`` never blocks: it refuses a job while one is running, so the executor thread
    only ever hands over work and the node can ask ``busy`` before assembling an observation.
    Exceptions escaping ``run`` go to ``on_error`` and the thread keeps serving.
    """

    def __init__(self, run: Callable[[Any], None], on_error: Callable[[BaseException], None],
                 name: str = 'policy_inference',
                 on_idle: Callable[[], None] | None = None):
        """
        Start the thread; ``run`` does the work, ``on_error`` hears about its failures.

        ``on_idle`` (optional) is called on the thread after each job, once ``submit`` accepts
        a new one: a streaming caller submits its next job from there.
        """
        self._run = run
        self._on_error = on_error
        self._on_idle = on_idle
        self._condition = threading.Condition()
        self._job: Any = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Tell whether a job is running (from ``submit`` until its ``run`` returned)."""
        with self._condition:
            return self._busy

    def submit(self, job: Any) -> bool:
        """Hand ``job`` to the thread; False (and nothing queued) while a job is running."""
        with self._condition:
            if self._busy or self._stopping:
                return False
            self._job = job
            self._busy = True
            self._condition.notify()
            return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is running; False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Let the running job finish, then stop the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._job is not None or self._stopping)
                if self._job is None:
                    return
                job, self._job = self._job, None
            try:
                self._run(job)
            except Exception as error:  # noqa: B902 - reported, the worker must survive
                self._on_error(error)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()
            if self._on_idle is not None:
                try:
                    self._on_idle()
                except Exception as error:  # noqa: B902 - reported, the worker must survive
                    self._on_error(error)
