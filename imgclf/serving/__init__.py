"""imgclf.serving: a model server speaking TensorFlow Serving's REST and gRPC APIs.

    python -m imgclf.serving --model_name lenet --model_base_path models/LenetModel

or, from Python (tests, benchmarks):

    >>> from imgclf.serving import ServerProcess
    >>> with ServerProcess(["--model_name", "lenet", "--model_base_path", "models/LenetModel"]) as s:
    ...     requests.post(f"{s.rest_url}/v1/models/lenet:predict", json={"instances": images})

Only `ServerProcess` is imported eagerly: it does not need TensorFlow.
"""

from imgclf.serving.process import ServerProcess

__all__ = ["ServerProcess"]
