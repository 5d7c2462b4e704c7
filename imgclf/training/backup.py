"""Preemption safety: a killed training run resumes as if it had never been killed.

A run killed at any moment (SIGKILL, a preempted pod) and started again with the same command
continues after its last finished epoch and ends with what the unkilled run would have given:
the same best weights, early-stopping decision, history, phase epochs and model version.

    >>> backup = RunBackup("models/LenetModel/backup")
    >>> backup.lock()                                  # one run at a time in this folder
    >>> backup.check(identity, asked_version=None)     # a different run is refused here
    >>> ... read the data, build the model ...
    >>> version = backup.pin(identity, lambda: next_version("models/LenetModel"))
    >>> phase = backup.phase("train")
    >>> initial_epoch = phase.restore(model)          # 0 on a fresh run
    >>> if not phase.done:
    ...     model.fit(train, epochs=10, initial_epoch=initial_epoch,
    ...               callbacks=[early_stopping, checkpoint, phase.callback(early_stopping, checkpoint)])
    ...     phase.finish(model)
    >>> backup.remove(); backup.unlock()              # after the run succeeded

Layout of the backup folder (`<model_folder_path>/<ClassName>/backup/`):
`run.json` (the run's identity, `imgclf.training.identity`, and its version, written only when
training really starts: a run that fails earlier leaves nothing) and one folder per training
phase (`train`, and `fine_tune` for phase 2 of a pretrained backbone) holding `state.json` and
the files it names: the last finished epoch's weights (model and optimizer, Keras'
`.weights.h5`) to continue from, the phase's best weights (`.npz`, what `EarlyStopping`
restores at the end), `EarlyStopping`'s state (wait, best, best epoch), the best checkpoint's
value (so a restarted `ModelCheckpoint` does not overwrite `checkpoints/best/` with a worse
epoch), the phase's history so far and its best value. Every file is written beside its final
name, flushed to disk (fsync) and renamed into place, and `state.json` is replaced only after the
files it names are on disk, so a kill or a power cut at any instant leaves a consistent backup.

The random draws of an epoch (shuffle, augmentation, dropout) are a function of the seed and the
epoch (`imgclf.data.epochs`, `imgclf.training.callbacks.EpochSeeds`), so resumed epochs draw what
the unkilled run drew instead of replaying epoch 0's.

Concurrent runs: a lock (`RunLock`, `<ClassName>/.backup.lock`) admits one run per class and
model folder; a second is refused at once with a one-line error. Why a lock rather than a run
folder per identity: a model folder is also where versions are numbered, and two runs writing
into it at once would race for the next free version; a refused second run costs nothing and
says what to do (wait, or another `--model_folder_path`), while per-identity folders would keep
backups of abandoned runs forever and could not tell a re-run with changed flags (to refuse)
from a new sweep member (to admit). The lock is `flock`: the kernel releases it when the
process dies, so a SIGKILLed run never leaves a stale lock.

Why not Keras' `BackupAndRestore`: it knows one `fit` call, not two phases; it writes its weights
file in place (a kill while writing loses the backup); it restores neither the best weights nor
other callbacks' state; and in Keras 3 it has no notion of a chief.

Multi-worker: only the chief writes (`writer=True`) and locks; every worker checks the identity
and restores from the chief's backup, which must be on a volume all workers mount. Weights are
identical on all workers after each synchronous step, so the chief's are everyone's. The chief
writes no phase state before the first epoch ends, and that needs every worker, so no worker
reads a half-updated backup.
"""

import datetime
import fcntl
import json
import os
import shutil

import keras
import numpy as np

from imgclf.training.identity import RunMismatchError, check_same_run

RUN_FILE = "run.json"
STATE_FILE = "state.json"


class RunBusyError(ValueError):
    """Another training run holds the model folder's lock."""


class RunBackup:
    """The backup folder of one training run.

    Args:
        folder: the backup folder, `<model_folder_path>/<ClassName>/backup`.
        writer: whether this process writes the backup (the chief); others only read it.
        restart: ignore an existing backup and start afresh (`--restart`); the writer deletes
            it when this run pins its own (`pin`), so a run that fails before training
            leaves the old backup as it was.
    """

    def __init__(self, folder, writer=True, restart=False):
        self.folder = os.fspath(folder)
        self.writer = writer
        self.restart = restart
        self._lock = RunLock(os.path.join(os.path.dirname(self.folder),
                                          f".{os.path.basename(self.folder)}.lock"))

    @property
    def exists(self):
        """Whether a backup of an interrupted run is there to resume from."""
        return bool(self.recorded)

    @property
    def recorded(self):
        """`run.json` of the interrupted run (`{"identity": ..., "version": n}`), or `{}`."""
        if self.restart:
            return {}
        return _read_json(os.path.join(self.folder, RUN_FILE)) or {}

    def lock(self):
        """Take the model folder's lock (writers only); `RunBusyError` if another run has it."""
        if self.writer:
            self._lock.acquire()

    def unlock(self):
        self._lock.release()

    def check(self, identity, asked_version=None):
        """Refuse (`RunMismatchError`) a run that is not the one the backup belongs to.

        Call it before any work: it reads only `run.json`.
        """
        recorded = self.recorded
        if not recorded:
            return
        if "identity" not in recorded:
            raise RunMismatchError(
                f"{self.folder} holds an interrupted run of an older imgclf that did not record "
                "its settings; run with restart=True (--restart) to discard it and start afresh"
            )
        check_same_run(recorded["identity"], identity, self.folder,
                       pinned_version=recorded.get("version"), asked_version=asked_version)

    def pin(self, identity, choose_version):
        """The run's version: the interrupted run's, or `choose_version()` recorded now.

        Call it when training really starts. A writer with `restart` deletes the old backup
        first. Returns the version.
        """
        recorded = self.recorded
        if recorded:
            return recorded["version"]
        version = choose_version()
        if self.writer:
            if self.restart and os.path.exists(self.folder):
                shutil.rmtree(self.folder)
            _write_json(os.path.join(self.folder, RUN_FILE),
                        {"identity": identity, "version": version})
            # From now on this run's own backup is the one to read.
            self.restart = False
        return version

    def phase(self, name):
        """The `PhaseBackup` of the training phase `name` (one `fit` call)."""
        return PhaseBackup(self, name)

    def remove(self):
        """Delete the backup after the run succeeded (writers only)."""
        if self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)


class PhaseBackup:
    """The backup of one training phase: its last finished epoch and what resuming needs."""

    def __init__(self, run_backup, name):
        self.run_backup = run_backup
        self.name = name
        self.folder = os.path.join(run_backup.folder, name)

    @property
    def state(self):
        """The phase's `state.json` (`epoch`, `weights`, `done`, `history`, `best`,
        `early_stopping`, `checkpoint_best`, `best_weights`), or `{}`."""
        if self.run_backup.restart:
            return {}
        return _read_json(os.path.join(self.folder, STATE_FILE)) or {}

    @property
    def done(self):
        """Whether the phase had finished before the interruption."""
        return bool(self.state.get("done"))

    def restore(self, model):
        """Load the backed-up weights into the compiled `model`; return the epoch to resume at.

        Call it after `compile` (the optimizer's state is restored too) and inside the
        strategy's scope. Returns 0, and changes nothing, when there is no backup.
        """
        state = self.state
        if not state:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.folder, state["weights"]))
        return int(state["epoch"])

    def best_weights(self):
        """The phase's best weights so far (`model.get_weights()` order), or None."""
        name = self.state.get("best_weights")
        if not name:
            return None
        with np.load(os.path.join(self.folder, name)) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def callback(self, early_stopping=None, checkpoint=None):
        """A Keras callback that backs the phase up after every epoch (a no-op for readers).

        Place it after `early_stopping` and `checkpoint` in `fit`'s callbacks: it records their
        state as they left it at the end of the epoch.
        """
        return _EpochBackup(self, early_stopping, checkpoint)

    def finish(self, model, **info):
        """Record that the phase is done, with `model`'s final weights (writers only).

        `info` (JSON values) is kept in the state, e.g. `best=0.93`.
        """
        state = self.state
        kept = {k: v for k, v in state.items() if k not in ("epoch", "weights", "done")}
        self.save(model, state.get("epoch", 0), done=True, **{**kept, **info})

    def save(self, model, epoch, done=False, best_weights=None, **info):
        """Back up `model` after `epoch` finished epochs (writers only).

        `best_weights` (arrays) replace the phase's best weights; otherwise the state keeps
        naming the previous ones.
        """
        if not self.run_backup.writer:
            return
        os.makedirs(self.folder, exist_ok=True)
        previous = self.state
        weights = f"epoch-{epoch:04d}{'-done' if done else ''}.weights.h5"
        staging = os.path.join(self.folder, ".staging." + weights)
        model.save_weights(staging)
        _commit(staging, os.path.join(self.folder, weights))
        info.update(epoch=epoch, weights=weights, done=done)
        if best_weights is not None:
            info["best_weights"] = f"best-{epoch:04d}.npz"
            staging = os.path.join(self.folder, ".staging." + info["best_weights"])
            with open(staging, "wb") as file:
                np.savez(file, *best_weights)
            _commit(staging, os.path.join(self.folder, info["best_weights"]))
        elif previous.get("best_weights"):
            info["best_weights"] = previous["best_weights"]
        _write_json(os.path.join(self.folder, STATE_FILE), info)
        for key in ("weights", "best_weights"):
            old = previous.get(key)
            if old and old != info.get(key):
                try:
                    os.remove(os.path.join(self.folder, old))
                except FileNotFoundError:
                    pass


class _EpochBackup(keras.callbacks.Callback):
    """Backs a phase up at the end of every epoch, with the state of the callbacks before it."""

    def __init__(self, phase, early_stopping, checkpoint):
        super().__init__()
        self.phase = phase
        self.early_stopping = early_stopping
        self.checkpoint = checkpoint

    def on_train_begin(self, logs=None):
        self.history = {k: list(v) for k, v in self.phase.state.get("history", {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        info = {"history": self.history}
        best_weights = None
        stopping = self.early_stopping
        if stopping is not None:
            info["early_stopping"] = early_stopping_state(stopping)
            info["best"] = None if stopping.best is None else float(stopping.best)
            if stopping.best_epoch == epoch and stopping.best_weights is not None:
                best_weights = stopping.best_weights
        if self.checkpoint is not None and self.checkpoint.best is not None:
            info["checkpoint_best"] = float(self.checkpoint.best)
        self.phase.save(self.model, epoch + 1, best_weights=best_weights, **info)


def early_stopping_state(early_stopping):
    """What a resumed `EarlyStopping` needs besides its best weights, as JSON values."""
    best = early_stopping.best
    return {"wait": int(early_stopping.wait), "best": None if best is None else float(best),
            "best_epoch": int(early_stopping.best_epoch),
            "stopped_epoch": int(early_stopping.stopped_epoch)}


class RunLock:
    """An exclusive, non-blocking `flock` on `path`, held while a run trains.

        >>> lock = RunLock("models/LenetModel/.backup.lock"); lock.acquire(); ...; lock.release()

    The file records who holds it (pid, host, start) for the refusal message; it is removed on
    release. The kernel drops the lock of a dead process, so no stale lock survives a kill.
    """

    def __init__(self, path):
        self.path = path
        self._file = None

    def acquire(self):
        folder = os.path.dirname(self.path)
        self._created_folder = not os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
        while True:
            file = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                file.close()
                raise RunBusyError(
                    f"another training run ({holder}) is using {folder}: wait for it to end, "
                    "or give this run its own model folder (--model_folder_path)"
                ) from None
            # A holder that released between our open and flock unlinked the file we hold:
            # lock the file that is at the path now.
            try:
                same = os.path.samestat(os.fstat(file.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            file.close()
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {os.uname().nodename}, since {started}")
        file.flush()
        self._file = file

    def release(self):
        if self._file is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        self._file.close()
        self._file = None
        if self._created_folder:
            try:  # a run that wrote nothing leaves no empty folder behind
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = os.path.join(os.path.dirname(path), ".staging." + os.path.basename(path))
    with open(staging, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2, sort_keys=True)
    _commit(staging, path)


def _commit(staging, path):
    """Flush `staging` to disk, rename it to `path` and flush the rename: once this returns, a
    file that names `path` (written after it) never names a missing or partial file."""
    with open(staging, "rb") as file:
        os.fsync(file.fileno())
    os.replace(staging, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
