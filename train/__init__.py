"""Training: a driving policy (d3rlpy: SAC, or an offline algorithm) learnt from raw shards joined with one label set.

It stands beside collect and annotate on ``data_schema`` and imports neither: what it learns from is the
dataset on disk. Modules: ``config`` (TrainConfig), ``algorithms`` (sac, iql, td3+bc, cql, bc), ``encoder``
(the (BEV, state) trunk and heads registered with d3rlpy), ``sac`` (d3rlpy's SAC with one trunk for the actor
and the critics, run once per batch), ``agent`` (creation, checkpoints, the policy's input), ``replay`` (transitions from shards + labels,
compact frames, rewards stored or recomputed from components), ``offline`` (the offline loop and the pieces
the online round shares), ``run_dir`` (run settings, state and checkpoints on disk), ``checkpoints`` (reading
checkpoint files without unpickling code), ``metrics_log`` and
``export`` (TorchScript for the collector). The online round, which also drives the simulator and the
annotator, is composed one floor up in ``pipeline.online``.
"""

from train.agent import bev_size_of, create_agent, load_agent, observation_shape, policy_input, save_agent
from train.algorithms import ALGORITHMS, OFFLINE_ONLY, Agent
from train.config import FRAME_CODECS, TrainConfig
from train.encoder import BevStateEncoderFactory, downsample_bev
from train.export import export_torchscript, measure_latency
from train.metrics_log import MetricsLog
from train.checkpoints import CheckpointError, read_checkpoint
from train.offline import Echo, RunResult, check_spec, gradient_updates, ingest, loss_columns, start_run, train_offline
from train.replay import (
    STORED_REWARD, ReplayBatch, ReplayBuffer, RewardSource, ShardTransitions, read_shard_transitions, reward_source,
)  # fmt: skip
from train.run_dir import RunDir, RunSpec, RunState
from train.sac import SharedEncoderSAC, SharedEncoderSACConfig

__all__ = [
    "ALGORITHMS",
    "Agent",
    "OFFLINE_ONLY",
    "BevStateEncoderFactory",
    "CheckpointError",
    "Echo",
    "FRAME_CODECS",
    "MetricsLog",
    "ReplayBatch",
    "ReplayBuffer",
    "RewardSource",
    "RunDir",
    "RunResult",
    "RunSpec",
    "RunState",
    "STORED_REWARD",
    "ShardTransitions",
    "SharedEncoderSAC",
    "SharedEncoderSACConfig",
    "TrainConfig",
    "bev_size_of",
    "check_spec",
    "create_agent",
    "downsample_bev",
    "export_torchscript",
    "gradient_updates",
    "ingest",
    "load_agent",
    "loss_columns",
    "measure_latency",
    "observation_shape",
    "policy_input",
    "read_checkpoint",
    "read_shard_transitions",
    "reward_source",
    "save_agent",
    "start_run",
    "train_offline",
]
