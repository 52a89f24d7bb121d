"""Load a trained network for evaluation: from a checkpoint folder, a run directory or a file.

Every checkpoint the trainer saves holds `model.safetensors`: exact fp32 weights with the model
config in its metadata, so evaluation needs neither DeepSpeed nor the ZeRO shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pokeagent.data.encode import schema
from pokeagent.model.config import ModelConfig
from pokeagent.model.network import PokeAgentNet
from pokeagent.run_dir import BEST, CHECKPOINTS, LATEST, WEIGHTS, RunDir, read_pointer
from pokeagent.run_dir import eval_dir as _eval_dir


class CheckpointError(RuntimeError):
    """A path that does not lead to loadable weights, with the reason."""


@dataclass
class LoadedNetwork:
    net: PokeAgentNet
    """In eval mode, on the requested device."""
    weights: Path
    """The safetensors file it came from."""
    step: int
    """Optimizer step of the checkpoint (-1 where the metadata does not say)."""
    preset: str
    """The model preset name recorded by the trainer."""


def resolve_weights(path: str | Path) -> Path:
    """`model.safetensors` itself, a checkpoint folder (`.../step00000100`), a pointer file
    (`checkpoints/latest`, `checkpoints/best`), a `checkpoints/` folder (its `latest`) or a run
    directory (its `checkpoints/latest`)."""
    path = Path(path)
    if path.is_file() and path.name in (LATEST, BEST):
        path = path.parent / path.read_text().strip()
    if path.is_file():
        return path
    candidates = [path / WEIGHTS]
    for ckpt_dir in (path, path / CHECKPOINTS):
        tag = read_pointer(ckpt_dir, LATEST)
        if tag is not None:
            candidates.append(ckpt_dir / tag / WEIGHTS)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{path}: no {WEIGHTS} here, in a checkpoint named by `latest`, or in checkpoints/latest"
    )


def eval_dir(weights: Path, kind: str, step: int) -> Path:
    """Where an evaluation of `weights` writes by default: `<run>/eval/<kind>-step<N>`, or
    beside a weights file that is not in a run directory."""
    run = RunDir.of_weights(weights)
    return _eval_dir(run.root if run else weights.parent, kind, step)


def load_network(path: str | Path, device: str | torch.device = "cpu") -> LoadedNetwork:
    """The network of a checkpoint, weights loaded strictly, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = resolve_weights(path)
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "model_config" not in metadata:
        raise CheckpointError(f"{weights}: no model_config in the safetensors metadata")
    cfg = ModelConfig(**json.loads(metadata["model_config"]))
    net = PokeAgentNet(cfg, schema()["vocab"])
    state = load_file(str(weights))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shapes differ: another encoder schema or dex version
        raise CheckpointError(f"{weights}: weights do not fit this model/encoder: {err}") from err
    net.to(device).eval()
    return LoadedNetwork(
        net=net,
        weights=weights,
        step=int(metadata.get("step", -1)),
        preset=metadata.get("model", "?"),
    )
