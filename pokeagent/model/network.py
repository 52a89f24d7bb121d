"""The agent's network: decision encoder -> causal trajectory transformer -> policy and value.

Input is a loader batch (`pokeagent.data.loader.collate`): per decision 12 Pokémon rows of
tokens and features plus global features, arranged as [batch, window, ...]. Stored dtypes are
compact (int16 tokens, float16 features); the network widens them on its device.

1. Decision encoder: each row embeds its tokens (species, ability, item, 4 moves, tera type;
   moves through one shared table) and projects its features; a small transformer lets the 12
   rows and a global token (from the global features) attend to each other; the global token's
   output is the decision's vector.
2. Trajectory transformer: causal self-attention over the window's decisions (learned
   positions): a decision sees only the decisions before it, as in a live battle.
3. Heads: policy logits over the action space, illegal actions masked to -inf; value logit
   (sigmoid = win probability).
"""

from __future__ import annotations

import torch
from torch import nn

from pokeagent.data.encode import N_ENTITIES, N_GLOBAL_FEATURES, N_MON_FEATURES
from pokeagent.model.config import ModelConfig
from pokeagent.showdown import actions as A

VOCAB_KINDS = ("species", "abilities", "items", "moves", "types")


def _layer(width: int, heads: int, cfg: ModelConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=cfg.ffn_mult * width,
        dropout=cfg.dropout,
        batch_first=True,
        norm_first=True,
        activation="gelu",
    )


class DecisionEncoder(nn.Module):
    """One decision's arrays -> one vector of width d_model."""

    def __init__(self, cfg: ModelConfig, vocab: dict[str, int]):
        super().__init__()
        self.species = nn.Embedding(vocab["species"], cfg.d_token, padding_idx=0)
        self.ability = nn.Embedding(vocab["abilities"], cfg.d_token, padding_idx=0)
        self.item = nn.Embedding(vocab["items"], cfg.d_token, padding_idx=0)
        self.move = nn.Embedding(vocab["moves"], cfg.d_token, padding_idx=0)
        self.tera = nn.Embedding(vocab["types"], cfg.d_token, padding_idx=0)
        # species, ability, item, 4 moves (kept in slot order: they are the move actions), tera
        self.row_in = nn.Linear(8 * cfg.d_token + N_MON_FEATURES, cfg.d_entity)
        self.row_kind = nn.Embedding(N_ENTITIES, cfg.d_entity)  # own slot 0-5, opponent 0-5
        self.global_in = nn.Linear(N_GLOBAL_FEATURES, cfg.d_entity)
        self.mixer = nn.TransformerEncoder(
            _layer(cfg.d_entity, cfg.entity_heads, cfg),
            cfg.entity_layers,
            enable_nested_tensor=False,
        )
        self.out = nn.Sequential(nn.LayerNorm(cfg.d_entity), nn.Linear(cfg.d_entity, cfg.d_model))

    def forward(
        self, tokens: torch.Tensor, features: torch.Tensor, globals_: torch.Tensor
    ) -> torch.Tensor:
        """tokens [N, 12, 8] long, features [N, 12, F], globals [N, G] -> [N, d_model]."""
        moves = self.move(tokens[..., 3:7]).flatten(-2)
        rows = torch.cat(
            [
                self.species(tokens[..., 0]),
                self.ability(tokens[..., 1]),
                self.item(tokens[..., 2]),
                moves,
                self.tera(tokens[..., 7]),
                features,
            ],
            dim=-1,
        )
        rows = self.row_in(rows) + self.row_kind.weight
        entities = torch.cat([self.global_in(globals_).unsqueeze(1), rows], dim=1)
        mixed = self.mixer(entities)
        return self.out(mixed[:, 0])


class PokeAgentNet(nn.Module):
    """The whole network; `forward(batch)` returns policy logits [B, K, A] and value logits [B, K]."""

    def __init__(self, cfg: ModelConfig, vocab: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.encoder = DecisionEncoder(cfg, vocab)
        self.position = nn.Embedding(cfg.max_window, cfg.d_model)
        self.trajectory = nn.TransformerEncoder(
            _layer(cfg.d_model, cfg.n_heads, cfg), cfg.n_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.policy = nn.Linear(cfg.d_model, A.N_ACTIONS)
        self.value = nn.Linear(cfg.d_model, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"].long()
        batch_size, window = tokens.shape[:2]
        if window > self.cfg.max_window:
            raise ValueError(
                f"window {window} exceeds the model's max_window {self.cfg.max_window}"
            )
        dtype = self.policy.weight.dtype
        decisions = self.encoder(
            tokens.flatten(0, 1),
            batch["features"].flatten(0, 1).to(dtype),
            batch["globals"].flatten(0, 1).to(dtype),
        ).view(batch_size, window, -1)
        positions = torch.arange(window, device=tokens.device)
        hidden = decisions + self.position(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(
            window, device=tokens.device, dtype=hidden.dtype
        )
        hidden = self.norm(self.trajectory(hidden, mask=causal, is_causal=True))
        logits = self.policy(hidden).masked_fill(~batch["legal"], float("-inf"))
        return logits, self.value(hidden).squeeze(-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(
    cfg: ModelConfig, vocab: dict[str, int], device: str | torch.device = "cpu"
) -> PokeAgentNet:
    """The network for `cfg` (on the meta device for free parameter counting)."""
    with torch.device(device):
        return PokeAgentNet(cfg, vocab)
