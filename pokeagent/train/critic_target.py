"""The critic's slowly moving target: an fp32 copy of its heads, Polyak-averaged after every
optimizer step, saved in every checkpoint and restored on resume.

Why outside the engine's module (model/network.py `Critic` says it too): the engine casts its
module to bf16/fp16, where a Polyak step of `rate` = 0.005 would mostly round away; under ZeRO-3
it partitions module parameters across ranks; and the optimizer must never see it. Here it is a
plain dict of fp32 tensors on the rank's device, identical on every rank (each rank averages the
same gathered weights), and each rank's checkpoint file carries it (`state_dict`).
"""

from __future__ import annotations

import torch

from pokeagent.model.network import CRITIC_WEIGHTS, Critic


def _gathered(critic: Critic):
    """The critic's full weights on every rank: gathered under ZeRO-3 (read-only), a no-op for
    parameters that are not partitioned."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(critic.parameters()), modifier_rank=None)


class CriticTarget:
    """target <- (1 - rate) x target + rate x online, in fp32, after each optimizer step."""

    def __init__(self, critic: Critic, rate: float, device: torch.device):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"the target rate must be in (0, 1] (got {rate})")
        self.rate = rate
        with _gathered(critic):
            self.weights = {
                name: getattr(critic, name).detach().to(device, torch.float32, copy=True)
                for name in CRITIC_WEIGHTS
            }

    @torch.no_grad()
    def update(self, critic: Critic) -> None:
        with _gathered(critic):
            for name, target in self.weights.items():
                target.lerp_(getattr(critic, name).detach().float(), self.rate)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().cpu().clone() for name, tensor in self.weights.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.weights):
            raise ValueError(
                f"critic target: the checkpoint holds {sorted(state)}, this critic {sorted(self.weights)}"
            )
        for name, target in self.weights.items():
            if state[name].shape != target.shape:
                raise ValueError(
                    f"critic target {name}: shape {tuple(state[name].shape)} in the checkpoint, "
                    f"{tuple(target.shape)} here (another --critic-heads or model?)"
                )
            target.copy_(state[name])
