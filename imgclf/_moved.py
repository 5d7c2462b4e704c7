"""Aliases for public names that moved: the old import keeps working for one release, with a
`DeprecationWarning` that names the new place (CHANGELOG.md lists them).

    >>> # imgclf/callbacks.py, the old module:
    >>> __getattr__, __dir__ = moved_names(__name__, "imgclf.training", ["ModelCheckpoint"])
"""

import importlib
import warnings

#: The release that removes the aliases.
REMOVED_IN = "0.3.0"


def moved_names(old_module, new_module, names):
    """`(__getattr__, __dir__)` for the module `old_module` whose `names` now live in
    `new_module`: each use of an old name warns and gives the new object."""
    names = set(names)

    def __getattr__(name):
        if name not in names:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(
            f"{old_module}.{name} moved to {new_module}.{name}; import it from there "
            f"({old_module} goes in imgclf {REMOVED_IN})",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), name)

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__
