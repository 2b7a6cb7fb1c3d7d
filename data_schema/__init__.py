"""The on-disk dataset: the contract between collect, annotate and train. Imports no stage."""

from data_schema.dataset import Dataset, LabelSet, new_shard_name
from data_schema.errors import DatasetError, SchemaError
from data_schema.images import decode_image, encode_jpeg, encode_png
from data_schema.schema import (
    IMAGE_COLUMNS,
    KEY_COLUMNS,
    LABEL_SCHEMA,
    RAW_STEP_SCHEMA,
    ROUTE_AHEAD_POINTS,
    ROUTE_AHEAD_SPACING_M,
    SCHEMA_VERSION,
)

__all__ = [
    "Dataset",
    "DatasetError",
    "IMAGE_COLUMNS",
    "KEY_COLUMNS",
    "LABEL_SCHEMA",
    "LabelSet",
    "RAW_STEP_SCHEMA",
    "ROUTE_AHEAD_POINTS",
    "ROUTE_AHEAD_SPACING_M",
    "SCHEMA_VERSION",
    "SchemaError",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "new_shard_name",
]
