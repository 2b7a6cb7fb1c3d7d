"""The on-disk dataset: the contract between collect, annotate and train. Imports no stage.

Modules: ``schema`` (Arrow schemas of raw steps and labels), ``dataset`` (the handle: layout, shards, reads,
joins), ``label_sets`` (label sets and their typed info), ``shards`` (one Parquet shard, checked),
``storage`` (fsspec access and the one atomic write), ``naming`` (run, episode and shard names),
``episodes`` (episode order), ``features`` (the policy's state vector), ``reward`` (what a reward label
means), ``groundtruth`` (danger and gate quality from the simulator's agents), ``settings`` (typed configs
from files and overrides), ``images``, ``query`` (notebook reads) and ``errors``.
"""

from data_schema.dataset import Dataset
from data_schema.errors import DatasetError, SchemaError
from data_schema.images import decode_image, encode_jpeg, encode_png
from data_schema.label_sets import LabelSet, LabelSetInfo
from data_schema.naming import episode_id, new_shard_name
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
    "LabelSetInfo",
    "RAW_STEP_SCHEMA",
    "ROUTE_AHEAD_POINTS",
    "ROUTE_AHEAD_SPACING_M",
    "SCHEMA_VERSION",
    "SchemaError",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "episode_id",
    "new_shard_name",
]
