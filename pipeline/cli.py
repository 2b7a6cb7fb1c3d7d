"""The ``pipeline`` command: one click group, one module per stage under ``pipeline/commands``.

Command modules import their stage at the top; the group imports a command's module only when that command
runs or shows its help, so ``pipeline audit --help`` does not wait for torch.
"""

from __future__ import annotations

import importlib

import click

#: Command name -> "module:attribute", in the order ``pipeline --help`` lists them.
COMMANDS = {
    "collect": "pipeline.commands.collect:collect",
    "info": "pipeline.commands.collect:info",
    "annotate": "pipeline.commands.annotate:annotate",
    "clip": "pipeline.commands.clip:clip",
    "train": "pipeline.commands.train:train",
    "evaluate": "pipeline.commands.evaluate:evaluate",
    "export": "pipeline.commands.evaluate:export",
    "audit": "pipeline.commands.audit:audit",
    "labels": "pipeline.commands.audit:labels",
    "vlm": "pipeline.commands.vlm:vlm",
    "experiment": "pipeline.commands.experiment:experiment",
    "demo": "pipeline.commands.demo:demo",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="drive-vlm-rl")
def main() -> None:
    """DriveVLM-RL: collect simulator rollouts, annotate them with VLM rewards, train a driving policy.

    A dataset is a directory (or fsspec URL) that every stage reads and writes:
    `collect` adds raw episode shards, `annotate` adds a label set beside them, `train` learns from both.
    """
