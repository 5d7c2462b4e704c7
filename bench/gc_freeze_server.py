"""Experiment, not a server: `python -m imgclf.serving` with `gc.freeze()` once the models are loaded.

serving_bench.py's `*_gcfreeze` targets run this to measure a proposed change to
imgclf.serving side by side with the unchanged server. Profiling showed the event loop spending
most of its time in Python's cyclic garbage collector: parsing a 28x28x3 JSON image allocates
814 lists, which sets off young collections, and the older ones traverse the ~300,000 objects
TensorFlow and the loaded SavedModel keep alive. Freezing moves those objects out
of the collector's sight. Delete this file once imgclf.serving does it itself.

    python bench/gc_freeze_server.py --model_name m --model_base_path /models/m --rest_api_port 0
"""

import gc
import os
import sys


def main(argv=None):
    from imgclf.serving import __main__ as serving_main
    from imgclf.serving import models

    poll = models.ModelManager.poll
    frozen = False

    def poll_then_freeze(self, *args, **kwargs):
        nonlocal frozen
        result = poll(self, *args, **kwargs)
        if not frozen:  # the first poll loads (and warms up) every model before the ports open
            gc.collect()
            gc.freeze()
            frozen = True
        return result

    models.ModelManager.poll = poll_then_freeze
    return serving_main.main(argv)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
