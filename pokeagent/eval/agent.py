"""The trained agent as a poke-env player, seeing a live battle the way the parser sees a replay.

The player keeps our own `BattleState` from the raw protocol lines it receives (the parser's
code path: `protocol.parse_line` -> `BattleState.apply`), its own team from the `|request|`
JSON (through `data.teams.members_from_sets`, as the parser reads a replay's team sheets),
and encodes every decision with the one encoder (`data.encode.encode`). The network sees the
battle's decisions so far as one causal window, as in training.

Two differences between what a player receives and a public replay are undone here, so the
arrays equal the parser's for the same battle (tests/test_agent.py proves it):
- its own Pokémon's HP arrives exact (`250/300`); the replay shows the public form
  (`84/100`, or 48ths of a bar in old generations), computed here as the simulator does;
- `|request|` lines are the player's alone; they feed the team and the legal options, never
  the public state.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from poke_env.player import Player
from poke_env.player.battle_order import BattleOrder
from poke_env.ps_client.account_configuration import AccountConfiguration

from pokeagent.data.encode import encode
from pokeagent.data.hindsight import Hindsight
from pokeagent.data.teams import display_name, members_from_sets
from pokeagent.eval.checkpoint import LoadedNetwork, load_network, resolve_weights
from pokeagent.showdown import actions as A
from pokeagent.showdown.players import AGENT, PlayerSpec, make_player
from pokeagent.showdown.protocol import ROOM_LINES, parse_line
from pokeagent.showdown.state import BattleState

# Lines that tell the player something other than a battle event (a refused choice, the timer,
# chat): they do not make a new decision point.
_NOT_EVENTS = ROOM_LINES | {"error", "bigerror", "callback", "sentchoice", "request"}
_SECRET_HP = re.compile(r"^(\d+)/(\d+)(.*)$")
# Lines a player receives that a spectator never sees (nor the public replay): the room's own
# set-up, the player's requests and refused choices, its own timer.
_PRIVATE = {"request", "error", "bigerror", "sentchoice", "callback", "init", "title", "deinit"}
_PRIVATE_TIMER = "Time left:"
# Lines whose HP field (index in `line.split("|")`) a player sees exactly for its own Pokémon.
_HP_FIELD = {"switch": 4, "drag": 4, "replace": 4, "-damage": 3, "-heal": 3, "-sethp": 3}


def public_hp(hp: int, max_hp: int, gen: int, percentages: bool) -> str:
    """The HP a spectator sees for `hp`/`max_hp` (Pokemon.getHealth in the simulator)."""
    if percentages or gen >= 7:
        percent = math.ceil(100 * hp / max_hp)
        if percent == 100 and hp < max_hp:
            percent = 99
        return f"{percent}/100"
    pixels = math.floor(48 * hp / max_hp) or 1
    shared = f"{pixels}/48"
    if gen >= 5 and pixels == 9:
        shared += "y" if hp * 5 > max_hp else "r"
    elif gen >= 5 and pixels == 24:
        shared += "g" if hp * 2 > max_hp else "y"
    return shared


@dataclass
class Observation:
    """One decision as the network sees it."""

    kind: int
    arrays: dict[str, np.ndarray]
    legal: np.ndarray
    """bool [N_ACTIONS]: the request's options in the action space."""
    choices: dict[int, str]
    """action -> the Showdown choice that plays it (`move 2 terastallize`, `switch 3`...)."""
    position: int
    """Protocol lines seen before it: a new request with no line in between (a choice the
    server refused, e.g. a switch out of a trap the agent could not see) is the same decision."""
    struggling: bool = False
    """The request offers only Struggle: every move is out of PP, which no log shows."""
    out_of_pp: tuple[int, ...] = ()
    """Move slots (canonical, as in the action space) the request closes for want of PP, which
    no log counts: the parser's mask leaves them open."""


@dataclass
class LiveView:
    """What one player knows of one live battle, kept from the messages it receives."""

    username: str
    state: BattleState = field(default_factory=BattleState)
    side: str | None = None
    request: dict | None = None
    sheet: dict[str, dict] = field(default_factory=dict)
    """Own Pokémon name -> its set as the first request showed it. Later requests show the
    current item, forme and moves (after Trick, Knock Off, Mega Evolution, Transform); the
    team sheet a replay carries, and so the parser, has the start of the battle."""
    percentages: bool = False
    """`HP Percentage Mod` is on: the public HP is a percentage in every generation."""
    lines: int = 0
    """Battle-event lines received so far."""
    log: list[str] = field(default_factory=list)
    """The battle's lines as a spectator sees them (own HP in the public form, no request, no
    private timer line): the log of a public replay of this battle."""
    _hindsight: Hindsight | None = field(default=None, init=False, repr=False)
    _hindsight_size: int = field(default=0, init=False, repr=False)

    def feed(self, line: str) -> None:
        """One protocol line, as received (own HP exact); requests go to `on_request`."""
        parts = line.split("|")
        if len(parts) < 2:
            return
        kind = parts[1]
        if kind not in _NOT_EVENTS:
            self.lines += 1
        if kind == "player" and len(parts) > 3 and parts[3] == self.username:
            self.side = parts[2]
        elif kind == "rule" and len(parts) > 2 and parts[2].startswith("HP Percentage Mod"):
            self.percentages = True
        position = _HP_FIELD.get(kind)
        if (
            position is not None
            and self.side
            and len(parts) > position
            and parts[2].startswith(self.side)
            and (match := _SECRET_HP.match(parts[position]))
        ):
            hp, max_hp, rest = int(match[1]), int(match[2]), match[3]
            shown = public_hp(hp, max_hp, self.state.gen, self.percentages) if hp else "0"
            parts[position] = shown + rest
            line = "|".join(parts)
        private_timer = (
            kind == "inactive" and len(parts) > 2 and parts[2].startswith(_PRIVATE_TIMER)
        )
        if kind not in _PRIVATE and not private_timer:
            self.log.append(line)
        msg = parse_line(line)
        if msg is not None:
            self.state.apply(msg)

    def on_request(self, request: dict) -> None:
        self.request = request
        side = request.get("side") or {}
        self.side = side.get("id", self.side)
        for pokemon in side.get("pokemon", []):
            name = pokemon["ident"].split(": ", 1)[1]
            if name not in self.sheet:
                self.sheet[name] = {
                    "name": name,
                    "species": pokemon["details"].split(",")[0],
                    "item": pokemon.get("item", ""),
                    "ability": pokemon.get("baseAbility") or pokemon.get("ability"),
                    "moves": list(pokemon.get("moves", [])),
                    "teraType": pokemon.get("teraType"),
                }

    def hindsight(self) -> Hindsight:
        """The own team from the sheet, built once: the sheet is complete after the first
        request. Its order is the first request's, as in the sheet a replay carries (the
        canonical sort keeps it for members of the same species)."""
        if self._hindsight is None or self._hindsight_size != len(self.sheet):
            members = members_from_sets(list(self.sheet.values()), self.state.gen)
            self._hindsight = Hindsight({self.side: members}, {self.side: len(members)})
            self._hindsight_size = len(self.sheet)
        return self._hindsight

    def observe(self) -> Observation:
        """The current decision: arrays, legal options and the choices that play them."""
        request, gen = self.request, self.state.gen
        hindsight = self.hindsight()
        members = hindsight.team[self.side]
        slot_of_name = {m.name: i for i, m in enumerate(members)}
        request_index = {
            p["ident"].split(": ", 1)[1]: n + 1 for n, p in enumerate(request["side"]["pokemon"])
        }
        legal = np.zeros(A.N_ACTIONS, dtype=bool)
        choices: dict[int, str] = {}
        out_of_pp: tuple[int, ...] = ()
        if request.get("teamPreview"):
            kind = A.TEAM_PREVIEW
            for name, slot in slot_of_name.items():
                legal[A.switch_action(slot)] = True
                choices[A.switch_action(slot)] = f"team {request_index[name]}"
        else:
            kind = A.FORCED_SWITCH if any(request.get("forceSwitch") or ()) else A.TURN
            active = (request.get("active") or [{}])[0] if kind == A.TURN else {}
            if kind == A.TURN:
                out_of_pp = self._move_choices(active, members, request, gen, legal, choices)
            # Revival Blessing asks for a fainted member, as a forced switch does for a healthy one.
            reviving = any(p.get("reviving") for p in request["side"]["pokemon"])
            if kind == A.FORCED_SWITCH or not active.get("trapped"):
                for n, pokemon in enumerate(request["side"]["pokemon"]):
                    name = pokemon["ident"].split(": ", 1)[1]
                    fainted = pokemon["condition"].endswith("fnt")
                    if pokemon.get("active") or fainted != reviving:
                        continue
                    if name in slot_of_name:
                        action = A.switch_action(slot_of_name[name])
                        legal[action], choices[action] = True, f"switch {n + 1}"
        arrays = encode(self.state, self.side, hindsight, kind)
        moves = [m.get("id") for m in ((request.get("active") or [{}])[0].get("moves") or [])]
        return Observation(
            kind, arrays, legal, choices, self.lines, moves == ["struggle"], out_of_pp
        )

    def _move_choices(self, active, members, request, gen, legal, choices) -> tuple[int, ...]:
        """Fills `legal` and `choices` with the request's moves; returns the canonical slots
        of the moves it closes for want of PP."""
        active_name = next(
            p["ident"].split(": ", 1)[1] for p in request["side"]["pokemon"] if p.get("active")
        )
        canonical = next((m.moves for m in members if m.name == active_name), [])
        gimmick = (
            "terastallize"
            if active.get("canTerastallize")
            else "mega"
            if active.get("canMegaEvo")
            else "ultra"
            if active.get("canUltraBurst")
            else "dynamax"
            if active.get("canDynamax")
            else None
        )
        zmoves = active.get("canZMove") or []
        named = [
            (n, move, display_name("moves", move.get("id") or move.get("move"), gen))
            for n, move in enumerate(active.get("moves", []))
        ]
        usable = [(n, name) for n, move, name in named if not move.get("disabled")]
        out_of_pp = tuple(
            canonical.index(name)
            for _n, move, name in named
            if move.get("disabled") and move.get("pp") == 0 and name in canonical
        )
        mapped = {n: canonical.index(name) for n, name in usable if name in canonical}
        # Recharge, Struggle, a Transformed or Mimicked moveset: no canonical slot; a free slot
        # (else any slot not taken) plays it, as the parser allows any move there.
        spare = [s for s in range(A.N_MOVES) if s not in mapped.values()]
        for n, _name in usable:
            if n not in mapped and spare:
                mapped[n] = spare.pop(0)
        for n, slot in sorted(mapped.items()):
            legal[A.move_action(slot)] = True
            choices[A.move_action(slot)] = f"move {n + 1}"
            if gimmick or (n < len(zmoves) and zmoves[n]):
                extra = gimmick or "zmove"
                legal[A.move_action(slot, gimmick=True)] = True
                choices[A.move_action(slot, gimmick=True)] = f"move {n + 1} {extra}"
        return out_of_pp


class NetworkPolicy:
    """Scores a battle's decisions so far with the network; picks from the last one's options."""

    def __init__(self, net: torch.nn.Module, temperature: float = 0.0, seed: int = 0):
        self.net = net
        self.window = net.cfg.max_window
        self.temperature = temperature
        self.rng = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def act(self, history: list[Observation]) -> tuple[int, float]:
        """(action, win probability) for the last observation of `history`."""
        recent = history[-self.window :]
        device = next(self.net.parameters()).device
        batch = {
            key: torch.from_numpy(np.stack([o.arrays[key] for o in recent]))[None].to(device)
            for key in ("tokens", "features", "globals")
        }
        batch["legal"] = torch.from_numpy(np.stack([o.legal for o in recent]))[None].to(device)
        logits, value = self.net(batch)
        last = logits[0, -1].float()
        if self.temperature > 0:
            probs = torch.softmax(last / self.temperature, dim=-1)
            action = int(torch.multinomial(probs.cpu(), 1, generator=self.rng))
        else:
            action = int(last.argmax())
        return action, float(torch.sigmoid(value[0, -1]))


class _Choice(BattleOrder):
    def __init__(self, choice: str):
        self.choice = choice

    @property
    def message(self) -> str:
        return f"/choose {self.choice}"


class AgentPlayer(Player):
    """A poke-env player driven by the network through our BattleState and encoder.

    `records[battle_tag]` keeps every decision's observation, chosen action and win
    probability (the test compares them with the parser's arrays for the same battle).
    """

    def __init__(self, policy: NetworkPolicy, *args, keep_records: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = policy
        self.keep_records = keep_records
        self.views: dict[str, LiveView] = {}
        self.history: dict[str, list[Observation]] = {}
        self.records: dict[str, list[tuple[Observation, int, float]]] = {}
        self.agent_errors = 0
        self.error_kinds: Counter[str] = Counter()
        """Agent errors by `Type: message`, for the report."""

    def _error(self, error: Exception) -> None:
        self.agent_errors += 1
        self.error_kinds[f"{type(error).__name__}: {error}"[:200]] += 1

    async def _handle_battle_message(self, split_messages: list[list[str]]):
        tag = split_messages[0][0].removeprefix(">")
        view = self.views.get(tag)
        if view is None:
            view = self.views[tag] = LiveView(self.username)
        for parts in split_messages[1:]:
            try:
                if len(parts) > 2 and parts[1] == "request":
                    if parts[2]:
                        view.on_request(json.loads(parts[2]))
                elif len(parts) > 1:
                    view.feed("|".join(parts))
            except Exception as error:  # one bad line: count it, poke-env must still see the rest
                self._error(error)
        await super()._handle_battle_message(split_messages)

    def _battle_finished_callback(self, battle) -> None:
        # Free the per-battle state (records stay when asked for).
        self.views.pop(battle.battle_tag, None)
        self.history.pop(battle.battle_tag, None)

    def _decide(self, battle) -> str:
        history = self._observe(battle)
        action, win = self.policy.act(history)
        return self._play(battle, history[-1], action, win)

    def _observe(self, battle) -> list[Observation]:
        """The battle's decisions so far, the current one last (the network's input)."""
        observation = self.views[battle.battle_tag].observe()
        history = self.history.setdefault(battle.battle_tag, [])
        if history and history[-1].position == observation.position:
            history.pop()  # asked again with nothing new in between: the same decision
            if self.keep_records:
                self.records[battle.battle_tag].pop()
        history.append(observation)
        return history

    def _play(self, battle, observation: Observation, action: int, win: float) -> str:
        """The Showdown choice of the network's `action` (kept in `records` when asked)."""
        if action not in observation.choices:
            raise RuntimeError(f"the network chose action {action}, not an option here")
        if self.keep_records:
            self.records.setdefault(battle.battle_tag, []).append((observation, action, win))
        return observation.choices[action]

    def choose_move(self, battle):
        try:
            return _Choice(self._decide(battle))
        except Exception as error:  # poke-env stalls the battle forever on one: count, play on
            self._error(error)
            return self.choose_random_move(battle)

    def teampreview(self, battle) -> str:
        try:
            choice = self._decide(battle)  # "team N": N leads, the rest keep their order
            lead = int(choice.split()[1])
            order = [lead] + [n for n in range(1, len(battle.team) + 1) if n != lead]
            return "/team " + "".join(str(n) for n in order)
        except Exception as error:
            self._error(error)
            return "/team " + "".join(str(n) for n in random.sample(range(1, 7), 6))


class AgentMaker:
    """Builds the poke-env player of any `PlayerSpec`, the agent among them (a
    `pokeagent.showdown.players.PlayerMaker`): `generate(cfg, players=AgentMaker())`.

    Each checkpoint is loaded once and its network shared by every player of it (the two sides
    of a self-play battle, other temperatures); each agent player samples from its own seed.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.loaded: dict[str, LoadedNetwork] = {}

    def preload(self, specs) -> None:
        """Load the networks of these specs (texts or PlayerSpecs) now: a wrong path fails
        before any server starts."""
        for spec in specs:
            spec = spec if isinstance(spec, PlayerSpec) else PlayerSpec.parse(spec)
            if spec.kind == AGENT:
                self.network(spec.checkpoint)

    def network(self, checkpoint: str) -> LoadedNetwork:
        key = str(resolve_weights(checkpoint).resolve())
        if key not in self.loaded:
            self.loaded[key] = load_network(key, device=self.device)
        return self.loaded[key]

    def __call__(
        self,
        spec: PlayerSpec,
        name: str,
        server_configuration,
        battle_format: str,
        *,
        team=None,
        seed: int = 0,
        max_concurrent_battles: int = 1,
    ) -> Player:
        if spec.kind != AGENT:
            return make_player(
                spec,
                name,
                server_configuration,
                battle_format,
                team=team,
                seed=seed,
                max_concurrent_battles=max_concurrent_battles,
            )
        return AgentPlayer(
            NetworkPolicy(self.network(spec.checkpoint).net, spec.temperature, seed),
            account_configuration=AccountConfiguration(name, None),
            server_configuration=server_configuration,
            battle_format=battle_format,
            max_concurrent_battles=max_concurrent_battles,
            team=team,
            log_level=40,
        )
