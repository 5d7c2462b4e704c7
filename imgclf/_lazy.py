"""Names of a package imported on first use (PEP 562), so that importing the package imports
none of its heavy modules:

    >>> # imgclf/export/__init__.py
    >>> __getattr__, __dir__ = lazy_names(__name__, {"save_servable": "imgclf.export.savedmodel"})
"""

import importlib
import sys


def lazy_names(package, homes, submodules=False):
    """`(__getattr__, __dir__)` for `package`, whose public names `homes` maps to the modules
    they live in. With `submodules`, any other name that is a submodule of `package` is imported
    too, as an eager `import package` would have made it an attribute."""

    def __getattr__(name):
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        if submodules:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__
