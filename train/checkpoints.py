"""Reading d3rlpy checkpoint files without unpickling anything but plain data.

``d3rlpy.load_learnable`` (2.8.1) calls ``pickle.load`` on the whole file, so a file given on the command
line, or named by a run directory, could run any code it likes. A d3rlpy checkpoint is a pickled dict of
three plain values: ``torch`` (the bytes of ``torch.save`` of the state dicts), ``config`` (JSON text) and
``version``. This reader unpickles it with no access to any Python global (a file that names a class or a
function is refused before anything in it runs), rebuilds the algorithm from the JSON config through
d3rlpy's registered factories, and loads the state dicts with ``torch.load(weights_only=True)``.

What it does not protect against: a well-formed checkpoint with hostile weights is still loaded (it is a
policy, and drives as it was trained), and a file can be large enough to exhaust memory. Run directories
also record each checkpoint's sha256 (``train.run_dir``), so a replaced file in a run is refused too.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from d3rlpy.base import LearnableBase, LearnableConfigWithShape
from d3rlpy.torch_utility import map_location

__all__ = ["CheckpointError", "read_checkpoint"]

#: The keys of the dict ``d3rlpy.base.dump_learnable`` pickles, and the type of each value.
CHECKPOINT_FIELDS = {"torch": bytes, "config": str, "version": str}


class CheckpointError(ValueError):
    """A file that is not a d3rlpy checkpoint of plain data."""


class _PlainData(pickle.Unpickler):
    """An unpickler that resolves no global: only dicts, strings, bytes and numbers can come out of it."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it references {module}.{name}")


def read_checkpoint(path: str | Path, device: str = "cpu") -> LearnableBase:
    """The algorithm saved at ``path`` by ``LearnableBase.save``; anything else is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    refuse = f"checkpoint {path}: not a d3rlpy checkpoint of plain data"
    try:
        with open(path, "rb") as f:
            document = _PlainData(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as error:
        raise CheckpointError(f"{refuse} ({error}); it was not loaded") from None
    if not isinstance(document, dict) or set(document) != set(CHECKPOINT_FIELDS):
        raise CheckpointError(f"{refuse} (expected a dict with keys {sorted(CHECKPOINT_FIELDS)})")
    wrong = [key for key, kind in CHECKPOINT_FIELDS.items() if not isinstance(document[key], kind)]
    if wrong:
        raise CheckpointError(f"{refuse} (field(s) {wrong} of the wrong type)")
    try:
        algo = LearnableConfigWithShape.deserialize(document["config"]).create(device)
    except Exception as error:  # noqa: BLE001 - d3rlpy's JSON decoding raises many types; all mean "not a config"
        raise CheckpointError(f"checkpoint {path}: its config is not a d3rlpy algorithm config ({type(error).__name__}: {error})") from None
    assert algo.impl is not None
    try:
        states = torch.load(io.BytesIO(document["torch"]), map_location=map_location(algo.impl.device), weights_only=True)
        for name, module in algo.impl.modules.create_checkpointer(algo.impl.device).modules.items():
            module.load_state_dict(states[name])
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: its network weights do not load ({type(error).__name__}: {error})") from None
    return algo
