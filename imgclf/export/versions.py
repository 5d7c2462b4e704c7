"""Model versions: the numbered folders under a model's base path that TF Serving serves.

    >>> next_version("models/LenetModel")          # versions 1 and 2 exist
    3
    >>> choose_version("models/LenetModel", 2)     # refused: a server may be serving it
    FileExistsError: version 2 exists at models/LenetModel/2; pass overwrite=True (--overwrite) to replace it, or leave the version out to write version 3

A re-run of training writes the next free version by default, so it never replaces the version a
server is serving; TF Serving then moves to the new one by itself.
"""

import os


def existing_versions(base_path):
    """The versions under `base_path`, ascending: its folders named by a non-negative integer.

    Other folders (`checkpoints`, `logs`, half-written `.1.saving-...`) are not versions, as for
    TF Serving. A base path that does not exist has none.
    """
    base_path = os.fspath(base_path)
    if not os.path.isdir(base_path):
        return []
    return sorted(
        int(name) for name in os.listdir(base_path)
        if name.isdigit() and os.path.isdir(os.path.join(base_path, name))
    )


def next_version(base_path, litert=False):
    """One more than the highest version under `base_path`, or 1 if there is none; with
    `litert`, also past any `<version>.tflite` file, so a LiteRT export replaces nothing."""
    versions = existing_versions(base_path)
    if litert:
        versions = sorted({*versions, *_litert_versions(base_path)})
    return versions[-1] + 1 if versions else 1


def choose_version(base_path, version=None, overwrite=False, litert=False):
    """The version to write under `base_path`: `version`, or the next free one if it is None.

    An explicit `version` that exists is refused unless `overwrite`, so a re-run cannot replace
    by accident the version a server is serving; with `litert` (a LiteRT file is written too),
    so is one whose `<version>.tflite` or `<version>.labels.txt` exists.
    """
    if version is None:
        return next_version(base_path, litert)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"model_version must be a non-negative integer; received {version!r}")
    base_path = os.fspath(base_path)
    paths = [os.path.join(base_path, str(version))]
    if litert:
        paths += [os.path.join(base_path, f"{version}{suffix}") for suffix in _LITERT_FILES]
    for path in paths:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(
                f"version {version} exists at {path}; pass overwrite=True (--overwrite) to replace "
                f"it, or leave the version out to write version {next_version(base_path, litert)}"
            )
    return version


#: The files of a version's LiteRT export (`imgclf.export.litert`), beside its folder.
_LITERT_FILES = (".tflite", ".labels.txt")


def _litert_versions(base_path):
    if not os.path.isdir(base_path):
        return []
    return [
        int(name.split(".")[0]) for name in os.listdir(base_path)
        if name.split(".")[0].isdigit() and name.endswith(_LITERT_FILES)
    ]
