"""Deprecated alias: the sample data set moved to `imgclf.data.sample_data`
(`python -m imgclf.data.sample_data DIR`).

    >>> from imgclf.data.sample_data import write_sample_dataset
"""

import sys
import warnings

from imgclf._moved import REMOVED_IN, moved_names

__getattr__, __dir__ = moved_names(
    __name__, "imgclf.data.sample_data", ["draw_shape_image", "main", "write_sample_dataset"]
)

if __name__ == "__main__":
    warnings.warn(
        f"python -m imgclf.sample_data moved to python -m imgclf.data.sample_data (the old "
        f"name goes in imgclf {REMOVED_IN})", DeprecationWarning, stacklevel=1,
    )
    from imgclf.data.sample_data import main

    sys.exit(main())
