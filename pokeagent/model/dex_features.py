"""Game knowledge the network reads beside its learned embeddings: dex tables and the type chart.

A species, move or type token is an id; what it means (base power, accuracy, category, type,
base stats, the type chart) is in the shipped dex. Learning all of it from replays alone takes
far more games than a small run sees, so the network looks the facts up: fixed tables indexed
by the same vocabularies as the embeddings (`Dex.vocab`), built once from the dex and kept as
non-persistent buffers (not in checkpoints: they are a function of the dex version, which
`encode.schema()` already pins).

The values are the newest generation's (a move or species absent from it takes its last
generation's record); per-generation differences are left to the learned embeddings, which
see the generation in the global features.
"""

from __future__ import annotations

from functools import cache

import torch

from pokeagent.showdown.dex import PAD, UNKNOWN, Dex

CATEGORIES = ("Physical", "Special", "Status")
STATS = ("hp", "atk", "def", "spa", "spd", "spe")


def _newest(getter, name: str, gens: tuple[int, ...]) -> dict | None:
    for gen in sorted(gens, reverse=True):
        record = getter(name, gen, include_future=True)
        if record is not None:
            return record
    return None


def tables() -> dict[str, torch.Tensor]:
    """The lookup tables (CPU tensors; the network copies them to its device).

    - `move_features` [n_moves, 6]: base power/100, accuracy (always-hit 1.0), priority/5,
      the category one-hot;
    - `move_type` [n_moves]: the move's type index (UNKNOWN for pad and unknown moves);
    - `species_stats` [n_species, 6]: base stats/255;
    - `species_types` [n_species, 2]: type indices (the second PAD for a single type);
    - `type_chart` [n_types, n_types]: damage multiplier of attack type (row) on a defending
      type (column); pad and unknown types are neutral.
    """
    # Built on the CPU whatever the caller's default device (a meta-device build included).
    with torch.device("cpu"):
        return _tables()


@cache
def _tables() -> dict[str, torch.Tensor]:
    dex = Dex.load()
    n_types = dex.vocab_size("types")
    move_ids, species_ids = dex.vocab("moves"), dex.vocab("species")
    move_features = torch.zeros(len(move_ids), 3 + len(CATEGORIES))
    move_type = torch.full((len(move_ids),), UNKNOWN, dtype=torch.long)
    for index, move_id in enumerate(move_ids[2:], start=2):
        record = _newest(dex.move, move_id, dex.gens)
        if record is None:
            continue
        move_features[index, 0] = min(float(record.get("basePower") or 0), 250.0) / 100.0
        accuracy = record.get("accuracy")
        move_features[index, 1] = 1.0 if accuracy is True else float(accuracy or 0) / 100.0
        move_features[index, 2] = float(record.get("priority") or 0) / 5.0
        if record.get("category") in CATEGORIES:
            move_features[index, 3 + CATEGORIES.index(record["category"])] = 1.0
        move_type[index] = dex.type_index(record.get("type"))
    species_stats = torch.zeros(len(species_ids), len(STATS))
    species_types = torch.full((len(species_ids), 2), PAD, dtype=torch.long)
    species_types[:2] = UNKNOWN
    for index, species_id in enumerate(species_ids[2:], start=2):
        record = _newest(dex.species, species_id, dex.gens)
        if record is None:
            species_types[index] = UNKNOWN
            continue
        stats = record.get("baseStats") or {}
        species_stats[index] = torch.tensor([stats.get(s, 0) / 255.0 for s in STATS])
        for slot, type_name in enumerate((record.get("types") or [])[:2]):
            species_types[index, slot] = dex.type_index(type_name)
    type_chart = torch.ones(n_types, n_types)
    type_names = dex.vocab("types")
    newest = max(dex.gens)
    for attack in range(2, n_types):
        for defend in range(2, n_types):
            type_chart[attack, defend] = dex.effectiveness(
                type_names[attack], [type_names[defend]], newest
            )
    return {
        "move_features": move_features,
        "move_type": move_type,
        "species_stats": species_stats,
        "species_types": species_types,
        "type_chart": type_chart,
    }
