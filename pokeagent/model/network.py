"""The agent's network: decision encoder -> causal trajectory transformer -> policy and value.

Input is a loader batch (`pokeagent.data.loader.collate`): per decision 12 Pokémon rows of
tokens and features plus global features, arranged as [batch, window, ...]. Stored dtypes are
compact (int16 tokens, float16 features); the network widens them on its device.

1. Decision encoder: each row embeds its tokens (species, ability, item, 4 moves, tera type;
   moves through one shared table), projects its features and the dex facts of its species and
   moves (`dex_features.py`: base stats, types, move power, accuracy, priority, category), and
   per move how it fares against the opposing active Pokémon (type effectiveness against its
   types, or its Tera type once terastallized; STAB; power x both). A small transformer lets
   the 12 rows and a global token (from the global features) attend to each other; the global
   token's output is the decision's vector.
2. Trajectory transformer: causal self-attention over the window's decisions (learned
   positions): a decision sees only the decisions before it, as in a live battle.
3. Heads: policy logits over the action space = a linear read of the decision's vector plus a
   pointer term: each action has a vector (a move: the active Pokémon's mixed row with that
   move's facts, the gimmick variant shifted by a learned offset; a switch: that team member's
   mixed row), scored against the decision's vector. Illegal actions are masked to -inf.
   Value logit (sigmoid = win probability).
4. Critic (`critic_heads` > 0, offline RL: `model/loss.py`): an ensemble of Q-value heads over
   the action space from the same trunk, each a small MLP read plus a pointer term like the
   policy's. Its slowly moving target (`critic_target`) is held by the trainer, outside the
   module, and passed in: see `Critic`.
"""

from __future__ import annotations

import torch
from torch import nn

from pokeagent.data.encode import MON_FEATURES, N_ENTITIES, N_GLOBAL_FEATURES, N_MON_FEATURES
from pokeagent.model import dex_features
from pokeagent.model.config import ModelConfig
from pokeagent.showdown import actions as A

VOCAB_KINDS = ("species", "abilities", "items", "moves", "types")
ACTIVE, TERASTALLIZED = MON_FEATURES.index("active"), MON_FEATURES.index("terastallized")
N_MOVE_FACTS = 6 + 3  # dex_features' move columns + effectiveness, STAB, effective power
N_SPECIES_FACTS = 6


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
    """One decision's arrays -> its vector (d_model) and one vector per action (d_model)."""

    def __init__(self, cfg: ModelConfig, vocab: dict[str, int]):
        super().__init__()
        self.species = nn.Embedding(vocab["species"], cfg.d_token, padding_idx=0)
        self.ability = nn.Embedding(vocab["abilities"], cfg.d_token, padding_idx=0)
        self.item = nn.Embedding(vocab["items"], cfg.d_token, padding_idx=0)
        self.move = nn.Embedding(vocab["moves"], cfg.d_token, padding_idx=0)
        self.tera = nn.Embedding(vocab["types"], cfg.d_token, padding_idx=0)
        for name, table in dex_features.tables().items():
            self.register_buffer(name, table.clone(), persistent=False)
        # species, ability, item, 4 moves (kept in slot order: they are the move actions), tera
        row_inputs = 8 * cfg.d_token + N_MON_FEATURES + N_SPECIES_FACTS + 4 * N_MOVE_FACTS
        self.row_in = nn.Linear(row_inputs, cfg.d_entity)
        self.row_kind = nn.Embedding(N_ENTITIES, cfg.d_entity)  # own slot 0-5, opponent 0-5
        self.global_in = nn.Linear(N_GLOBAL_FEATURES, cfg.d_entity)
        self.mixer = nn.TransformerEncoder(
            _layer(cfg.d_entity, cfg.entity_heads, cfg),
            cfg.entity_layers,
            enable_nested_tensor=False,
        )
        self.out = nn.Sequential(nn.LayerNorm(cfg.d_entity), nn.Linear(cfg.d_entity, cfg.d_model))
        self.move_action = nn.Linear(cfg.d_entity + N_MOVE_FACTS, cfg.d_model)
        self.gimmick_offset = nn.Parameter(torch.zeros(cfg.d_model))
        self.switch_action = nn.Linear(cfg.d_entity, cfg.d_model)

    def _move_facts(
        self,
        tokens: torch.Tensor,
        features: torch.Tensor,
        active: torch.Tensor,
        own_active: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """[N, 12, 4, N_MOVE_FACTS]: each move's dex facts and how it fares against the
        opposing active Pokémon (rows 0-5 attack the opponent's active, rows 6-11 ours).
        `active` [N, 12] flags the active rows, `own_active` [N] is our active's row and
        `rows` is arange(N)."""
        moves = tokens[..., 3:7]
        move_type = self.move_type[moves]  # [N, 12, 4]
        tera = tokens[..., 7]
        terastallized = features[..., TERASTALLIZED] > 0.5
        own_types = self.species_types[tokens[..., 0]]  # [N, 12, 2]
        # A terastallized Pokémon defends with its Tera type alone.
        defending = torch.where(
            terastallized.unsqueeze(-1),
            torch.stack([tera, torch.zeros_like(tera)], dim=-1),
            own_types,
        )
        opp_active = active[:, 6:].float().argmax(-1) + 6
        target = torch.cat(
            [
                defending[rows, opp_active].unsqueeze(1).expand(-1, 6, -1),
                defending[rows, own_active].unsqueeze(1).expand(-1, 6, -1),
            ],
            dim=1,
        )  # [N, 12, 2]: the types each row's moves hit
        has_target = torch.cat(
            [
                active[:, 6:].any(-1, keepdim=True).expand(-1, 6),
                active[:, :6].any(-1, keepdim=True).expand(-1, 6),
            ],
            dim=1,
        )
        chart = self.type_chart[move_type.unsqueeze(-1), target.unsqueeze(2)]  # [N, 12, 4, 2]
        effectiveness = torch.where(
            has_target[..., None], chart.prod(-1), torch.ones_like(move_type, dtype=chart.dtype)
        )
        attacker = torch.cat([own_types, torch.where(terastallized, tera, 0).unsqueeze(-1)], -1)
        stab = (move_type.unsqueeze(-1) == attacker.unsqueeze(2)).any(-1).to(chart.dtype)
        facts = self.move_features[moves]  # [N, 12, 4, 6]
        power = facts[..., 0] * effectiveness * (1.0 + 0.5 * stab)
        log_effect = torch.log2(effectiveness.clamp(min=0.125)) / 3.0  # immune -> -1
        return torch.cat(
            [facts, log_effect.unsqueeze(-1), stab.unsqueeze(-1), power.unsqueeze(-1)], dim=-1
        )

    def forward(
        self, tokens: torch.Tensor, features: torch.Tensor, globals_: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [N, 12, 8] long, features [N, 12, F], globals [N, G] ->
        decision vectors [N, d_model], action vectors [N, N_ACTIONS, d_model]."""
        dtype = features.dtype
        active = features[..., ACTIVE] > 0.5  # [N, 12]
        own_active = active[:, : A.N_TEAM].float().argmax(-1)  # our active's row (0 if none)
        index = torch.arange(tokens.shape[0], device=tokens.device)
        move_facts = self._move_facts(tokens, features, active, own_active, index).to(dtype)
        moves = self.move(tokens[..., 3:7]).flatten(-2)
        rows = torch.cat(
            [
                self.species(tokens[..., 0]),
                self.ability(tokens[..., 1]),
                self.item(tokens[..., 2]),
                moves,
                self.tera(tokens[..., 7]),
                features,
                self.species_stats[tokens[..., 0]].to(dtype),
                move_facts.flatten(-2),
            ],
            dim=-1,
        )
        rows = self.row_in(rows) + self.row_kind.weight
        entities = torch.cat([self.global_in(globals_).unsqueeze(1), rows], dim=1)
        mixed = self.mixer(entities)
        own_rows = mixed[:, 1 : 1 + A.N_TEAM]  # [N, 6, d_entity]: the switch targets
        active_row = own_rows[index, own_active]  # [N, d_entity]
        move_in = torch.cat(
            [active_row.unsqueeze(1).expand(-1, A.N_MOVES, -1), move_facts[index, own_active]],
            dim=-1,
        )
        move_vectors = self.move_action(move_in)  # [N, 4, d_model]
        actions = torch.cat(
            [move_vectors, move_vectors + self.gimmick_offset, self.switch_action(own_rows)],
            dim=1,
        )
        return self.out(mixed[:, 0]), actions


CRITIC_WEIGHTS = ("hidden_w", "hidden_b", "read_w", "read_b", "point_w")
"""The critic's parameter names, in the order of `Critic.weights()` and of a target's dict."""


def critic_q(
    hidden: torch.Tensor, actions: torch.Tensor, weights: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Q-values [B, K, E, A] of an ensemble of E heads, from decision vectors [B, K, d] and
    action vectors [B, K, A, d]: per head, z = gelu(W1 h + b1), Q = R z + b + (action . P z)/sqrt(d).
    One function for the online heads and the target's weights."""
    z = torch.nn.functional.gelu(
        torch.einsum("bkd,edf->bkef", hidden, weights["hidden_w"]) + weights["hidden_b"]
    )
    read = torch.einsum("bkef,efa->bkea", z, weights["read_w"]) + weights["read_b"]
    point = torch.einsum("bkef,efg->bkeg", z, weights["point_w"])
    pointer = torch.einsum("bkag,bkeg->bkea", actions, point) * hidden.shape[-1] ** -0.5
    return read + pointer


class Critic(nn.Module):
    """E Q-value heads over the shared trunk, stacked in [E, ...] parameters (one einsum runs
    them all).

    The TD target needs a slowly moving copy of the heads. It is not a part of this module: the
    trainer keeps it in fp32 (`train/critic_target.py`), updates it by Polyak averaging after
    every optimizer step and saves it in every checkpoint, and passes it to `forward`. Kept out
    of the module, the engine neither casts it to bf16 (where a Polyak step of 0.5% would round
    away), nor partitions it under ZeRO-3, nor hands it to the optimizer. Only the heads have a
    target: the trunk under them is the online one (its output detached), since a full target
    network would double the weights of a 200M model and its gathers under ZeRO-3 every step."""

    def __init__(self, heads: int, width: int):
        super().__init__()
        bound = width**-0.5  # nn.Linear's default range for fan-in `width`
        self.hidden_w = nn.Parameter(torch.empty(heads, width, width).uniform_(-bound, bound))
        self.hidden_b = nn.Parameter(torch.empty(heads, width).uniform_(-bound, bound))
        self.read_w = nn.Parameter(torch.empty(heads, width, A.N_ACTIONS).uniform_(-bound, bound))
        self.read_b = nn.Parameter(torch.empty(heads, A.N_ACTIONS).uniform_(-bound, bound))
        self.point_w = nn.Parameter(torch.empty(heads, width, width).uniform_(-bound, bound))

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in CRITIC_WEIGHTS}

    def forward(
        self,
        hidden: torch.Tensor,
        actions: torch.Tensor,
        target: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Online Q [B, K, E, A] (with gradients into the trunk) and the target's Q (no
        gradients, fp32, on the detached trunk output; the online heads' own values where no
        target is given)."""
        q = critic_q(hidden, actions, self.weights())
        with torch.no_grad():
            if target is None:
                q_target = q.detach().float()
            else:
                q_target = critic_q(hidden.detach().float(), actions.detach().float(), target)
        return q, q_target


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
        # Built last: without a critic, the other weights draw the same random numbers as before.
        self.critic = Critic(cfg.critic_heads, cfg.d_model) if cfg.critic_heads else None

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        critic: bool = False,
        critic_target: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Policy logits [B, K, A] (illegal actions -inf) and value logits [B, K]; with `critic`,
        also the critic's online and target Q-values [B, K, E, A] (`Critic.forward`)."""
        tokens = batch["tokens"].long()
        batch_size, window = tokens.shape[:2]
        if window > self.cfg.max_window:
            raise ValueError(
                f"window {window} exceeds the model's max_window {self.cfg.max_window}"
            )
        dtype = self.policy.weight.dtype
        decisions, actions = self.encoder(
            tokens.flatten(0, 1),
            batch["features"].flatten(0, 1).to(dtype),
            batch["globals"].flatten(0, 1).to(dtype),
        )
        decisions = decisions.view(batch_size, window, -1)
        actions = actions.view(batch_size, window, A.N_ACTIONS, -1)
        positions = torch.arange(window, device=tokens.device)
        hidden = decisions + self.position(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(
            window, device=tokens.device, dtype=hidden.dtype
        )
        hidden = self.norm(self.trajectory(hidden, mask=causal, is_causal=True))
        pointer = (actions @ hidden.unsqueeze(-1)).squeeze(-1) * self.cfg.d_model**-0.5
        logits = (self.policy(hidden) + pointer).masked_fill(~batch["legal"], float("-inf"))
        if not critic:
            return logits, self.value(hidden).squeeze(-1)
        if self.critic is None:
            raise ValueError("this network has no critic (ModelConfig.critic_heads is 0)")
        q, q_target = self.critic(hidden, actions, critic_target)
        return logits, self.value(hidden).squeeze(-1), q, q_target


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(
    cfg: ModelConfig, vocab: dict[str, int], device: str | torch.device = "cpu"
) -> PokeAgentNet:
    """The network for `cfg` (on the meta device for free parameter counting)."""
    with torch.device(device):
        return PokeAgentNet(cfg, vocab)
