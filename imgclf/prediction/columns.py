"""The columns of a prediction output: one row per input image, the same in every writer.

CSV, JSON Lines and Parquet files (`imgclf.prediction.outputs`), the rows `predict_files`
yields and the Spark DataFrames of `imgclf.spark` all have these columns, in this order:

==================  ===================  ================================================
column              type                 value
==================  ===================  ================================================
path                string               the input file (or record) the row is about
class               string               the most probable class (None on an error)
probability         float32              its probability (None on an error)
top_classes         list of string       the `top_k` most probable classes, best first
top_probabilities   list of float32      their probabilities
logits              list of float32      the model's logits, one per class
embedding           list of float32      the penultimate layer's output (`embeddings=True`)
error               string               "" when the image was read, else why not
==================  ===================  ================================================

An image that cannot be read has its `error` and empty predictions (None and empty lists), and
never fails the rest.

    >>> output_columns(embeddings=False)
    ('path', 'class', 'probability', 'top_classes', 'top_probabilities', 'logits', 'error')
    >>> output_schema(embeddings=True).field("embedding").type
    ListType(list<item: float>)
"""

PATH = "path"
CLASS = "class"
PROBABILITY = "probability"
TOP_CLASSES = "top_classes"
TOP_PROBABILITIES = "top_probabilities"
LOGITS = "logits"
EMBEDDING = "embedding"
ERROR = "error"

#: The columns of the predictions themselves (what `Predictor.predict_encoded` returns), without
#: `path` and `embedding`.
PREDICTION_COLUMNS = (CLASS, PROBABILITY, TOP_CLASSES, TOP_PROBABILITIES, LOGITS)

#: Columns holding lists (written as JSON arrays in CSV).
LIST_COLUMNS = (TOP_CLASSES, TOP_PROBABILITIES, LOGITS, EMBEDDING)


def output_columns(embeddings=False):
    """The output's column names, in order; `embedding` only with `embeddings`."""
    return (PATH, *PREDICTION_COLUMNS, *((EMBEDDING,) if embeddings else ()), ERROR)


def output_schema(embeddings=False):
    """The `pyarrow.Schema` of an output (Parquet files, Spark's Arrow batches)."""
    import pyarrow as pa

    types = {
        PATH: pa.string(),
        CLASS: pa.string(),
        PROBABILITY: pa.float32(),
        TOP_CLASSES: pa.list_(pa.string()),
        TOP_PROBABILITIES: pa.list_(pa.float32()),
        LOGITS: pa.list_(pa.float32()),
        EMBEDDING: pa.list_(pa.float32()),
        ERROR: pa.string(),
    }
    return pa.schema([pa.field(name, types[name]) for name in output_columns(embeddings)])


def error_row(message, embeddings=False):
    """The prediction columns of an image that could not be read: `message` and no predictions."""
    row = {CLASS: None, PROBABILITY: None, TOP_CLASSES: [], TOP_PROBABILITIES: [], LOGITS: []}
    if embeddings:
        row[EMBEDDING] = []
    row[ERROR] = message
    return row


def rows_to_columns(rows, names):
    """`{name: [value of each row]}` for the `names` of a list of row dicts."""
    return {name: [row[name] for row in rows] for name in names}


def rows_to_table(rows, embeddings=False):
    """A `pyarrow.Table` of output rows (dicts with every column of `output_columns`)."""
    import pyarrow as pa

    schema = output_schema(embeddings)
    return pa.Table.from_pydict(rows_to_columns(rows, schema.names), schema=schema)
