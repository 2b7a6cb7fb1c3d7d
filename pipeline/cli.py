"""The ``pipeline`` command: one click group, one module per stage under ``pipeline/commands``."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="drive-vlm-rl")
def main() -> None:
    """DriveVLM-RL: collect simulator rollouts, annotate them with VLM rewards, train a driving policy.

    A dataset is a directory (or fsspec URL) that every stage reads and writes:
    `collect` adds raw episode shards, `annotate` adds a label set beside them, `train` learns from both.
    """

from pipeline.commands.collect import collect, info  # noqa: E402

main.add_command(collect)
main.add_command(info)

from pipeline.commands.audit import audit, labels  # noqa: E402

main.add_command(audit)
main.add_command(labels)

from pipeline.commands.train import evaluate, export, train  # noqa: E402

main.add_command(train)
main.add_command(evaluate)
main.add_command(export)

from pipeline.commands.annotate import annotate  # noqa: E402

main.add_command(annotate)

from pipeline.commands.demo import demo  # noqa: E402

main.add_command(demo)
