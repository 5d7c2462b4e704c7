"""`python -m imgclf.serving`: serve SavedModels with TF Serving's REST and gRPC APIs.

    python -m imgclf.serving --model_name lenet --model_base_path models/LenetModel \
        --port 8500 --rest_api_port 8501
"""

import asyncio
import logging
import os
import sys


def main(argv=None):
    """Serve until SIGTERM or SIGINT; `imgclf-serve` is this function. Returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from imgclf.serving import config

    options = config.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from imgclf.tensorflow_import import import_tensorflow

    import_tensorflow()
    from imgclf.serving import server

    try:
        asyncio.run(server.serve(options))
    except (ValueError, OSError) as error:
        logging.getLogger("imgclf.serving").error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
