"""Exporting models: SavedModel signatures, TF Serving warm-up, metadata, versions, LiteRT.

The names below are imported on first use, so that reading metadata and listing versions
(`python -m imgclf.info`) needs no TensorFlow.
"""

from imgclf._lazy import lazy_names

_EXPORTS = {
    "METADATA_FILE": "imgclf.export.metadata",
    "read_model_metadata": "imgclf.export.metadata",
    "save_servable": "imgclf.export.savedmodel",
    "SIGNATURE_FUNCTIONS": "imgclf.export.signatures",
    "WARMUP_FILE": "imgclf.export.warmup",
    "save_litert": "imgclf.export.litert",
    "choose_version": "imgclf.export.versions",
    "next_version": "imgclf.export.versions",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
