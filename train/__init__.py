"""Training: a SAC driving policy (d3rlpy) learnt from raw shards joined with one label set.

Modules: ``config`` (TrainConfig), ``encoder`` (the (BEV, state) encoder registered with d3rlpy), ``agent``
(creation, checkpoints, the policy used for online collection), ``replay`` (transitions from shards +
labels, compact frames), ``loop`` (offline and online loops), ``annotation`` (background `pipeline annotate`
passes), ``run_dir`` (run settings, state and checkpoints on disk), ``metrics_log``, ``evaluate`` (VLM-RL
metrics on fixed routes) and ``export`` (TorchScript for the collector). It reads what collect and annotate
wrote through ``data_schema`` and imports only their public pieces.
"""
