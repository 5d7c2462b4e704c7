"""Progress of a prediction run: a bar with images/s and ETA on a terminal, log lines otherwise.

    >>> progress = Progress(total=20000, done=4000, errors=3)   # 4000 done by an earlier run
    >>> progress.update(images=64, errors=1)
    >>> progress.close()
    >>> print(progress.summary("labels.parquet"))
    20000 files, 4 errors (16000 predicted now, 4000 resumed) in 88.1 s: 181.6 images/s; wrote labels.parquet
"""

import sys
import time


def _duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts a run's images and errors and shows them on `stream` (default: stderr).

    Args:
        total: how many inputs the job has.
        done, errors: how many inputs, and errors among them, earlier runs committed.
        show: True (a tqdm bar on a terminal, a line every `log_every` seconds otherwise),
            False (nothing until the summary).
        log_every: seconds between log lines when `stream` is not a terminal.
    """

    def __init__(self, total, done=0, errors=0, show=True, log_every=30.0, stream=None):
        self.total, self.resumed, self.errors = total, done, errors
        self.predicted = 0
        self.stream = stream if stream is not None else sys.stderr
        self.log_every = log_every
        self.started = self._last_log = time.monotonic()
        self.stopped = None
        self._bar = None
        if show and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit="img", file=self.stream,
                             dynamic_ncols=True, smoothing=0.1)
        self._log_lines = show and self._bar is None

    @property
    def seconds(self):
        return (self.stopped or time.monotonic()) - self.started

    @property
    def images_per_second(self):
        return self.predicted / self.seconds if self.seconds > 0 else 0.0

    def update(self, images, errors=0):
        self.predicted += images
        self.errors += errors
        if self._bar is not None:
            self._bar.update(images)
            if errors:
                self._bar.set_postfix(errors=self.errors, refresh=False)
        elif self._log_lines and time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            done = self.resumed + self.predicted
            rate = self.images_per_second
            eta = _duration((self.total - done) / rate) if rate > 0 else "?"
            print(f"predicted {done}/{self.total} files ({100 * done / max(self.total, 1):.1f}%), "
                  f"{self.errors} errors, {rate:.1f} images/s, ETA {eta}",
                  file=self.stream, flush=True)

    def close(self):
        self.stopped = self.stopped or time.monotonic()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, output=None):
        """One line: files, errors, images/s (of this run), and the output written."""
        done = self.resumed + self.predicted
        line = f"{done} files, {self.errors} errors"
        if self.resumed:
            line += f" ({self.predicted} predicted now, {self.resumed} resumed)"
        line += f" in {self.seconds:.1f} s: {self.images_per_second:.1f} images/s"
        return line + (f"; wrote {output}" if output else "")
