"""Fixtures shared by the annotate tests (each group lives in its own module, registered here)."""

from model_fixtures import empty_road_frame, street_photos, tiny_clip, tiny_clip_config, yolov8n_weights  # noqa: F401
