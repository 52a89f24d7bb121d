"""pokeagent.showdown.dex: vocabularies, per-gen records and the shipped export.

Everything but the re-export test runs on the shipped data file alone; the re-export test
needs node and the pinned package (installed on first use by `showdown_package`).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pokeagent.showdown.dex import (
    DATA_FILE,
    KINDS,
    PAD,
    UNKNOWN,
    Dex,
    export_dex,
    species_from_details,
    to_id,
)
from pokeagent.showdown.install import SHOWDOWN_VERSION


@pytest.fixture(scope="module")
def dex() -> Dex:
    return Dex.load()


@pytest.fixture(scope="module")
def doc() -> dict:
    with gzip.open(DATA_FILE, "rb") as f:
        return json.loads(f.read())


# -- ids and vocabularies -------------------------------------------------------------------


def test_to_id_matches_showdown():
    assert to_id("Iron Moth") == "ironmoth"
    assert to_id("Urshifu-Rapid-Strike") == "urshifurapidstrike"
    assert to_id("Mr. Mime") == "mrmime"
    assert to_id("Farfetch’d") == "farfetchd"
    assert to_id("10,000,000 Volt Thunderbolt") == "10000000voltthunderbolt"
    # Showdown's toID drops non-ASCII letters rather than folding them.
    assert to_id("Flabébé") == "flabb"
    assert to_id(None) == ""


def test_shipped_file_matches_pinned_version(dex):
    assert DATA_FILE.name == f"dex-{SHOWDOWN_VERSION}.json.gz"
    assert DATA_FILE.is_file()
    assert dex.version == SHOWDOWN_VERSION
    assert dex.gens == tuple(range(1, 10))
    assert Dex.load() is Dex.load(str(DATA_FILE))  # cached per path


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_reserved_unique_sorted(dex, kind):
    vocab = dex.vocab(kind)
    assert PAD == 0 and UNKNOWN == 1
    assert vocab[:2] == ("<pad>", "<unknown>")
    ids = vocab[2:]
    assert len(ids) == len(set(ids)), "ids must be unique"
    assert list(ids) == sorted(ids), "documented order: sorted by Showdown id"
    assert dex.vocab_size(kind) == len(vocab)
    # Every id maps back to its own position; nothing maps onto PAD or UNKNOWN.
    for i, id_ in enumerate(ids, start=2):
        assert dex.index(kind, id_) == i


def test_vocab_sizes_and_singular_kinds(dex):
    assert dex.vocab_size("species") > 1500
    assert dex.vocab_size("moves") > 900
    assert dex.vocab_size("items") > 550
    assert dex.vocab_size("abilities") > 300
    assert dex.vocab_size("move") == dex.vocab_size("moves")
    assert dex.vocab_size("ability") == dex.vocab_size("abilities")
    with pytest.raises(ValueError):
        dex.vocab_size("natures")


def test_types_vocab(dex):
    types = dex.vocab("types")[2:]
    assert types[0] == "???"  # id "" sorts first
    assert {"bug", "fairy", "stellar", "water"} <= set(types)
    assert len(types) == 20  # 18 + Stellar + ???
    assert dex.type_index("???") == 2
    assert dex.type_index("Fire") == dex.type_index("fire") == dex.type_index(" FIRE ")
    assert dex.type_index("Shadow") == UNKNOWN


def test_unknown_names_never_raise(dex):
    for bad in ["Notamon", "", "-*", "   ", None, 42, ["list"], {"x": 1}, "Foo-Bar-Baz"]:
        assert dex.species_index(bad) == UNKNOWN
        assert dex.move_index(bad) == UNKNOWN
        assert dex.item_index(bad) == UNKNOWN
        assert dex.ability_index(bad) == UNKNOWN
        assert dex.type_index(bad) == UNKNOWN
        assert dex.species(bad, 9) is None
        assert dex.move(bad, 9) is None


# -- name resolution ------------------------------------------------------------------------


def test_display_names_and_ids_agree(dex):
    assert dex.species_index("Iron Moth") == dex.species_index("ironmoth") != UNKNOWN
    rapid = dex.species_index("Urshifu-Rapid-Strike")
    assert rapid not in (UNKNOWN, dex.species_index("Urshifu"))
    assert rapid == dex.species_index("urshifurapidstrike")
    assert dex.move_index("U-turn") == dex.move_index("uturn") != UNKNOWN
    assert dex.item_index("Heavy-Duty Boots") == dex.item_index("heavydutyboots") != UNKNOWN
    assert dex.ability_index("As One (Glastrier)") == dex.ability_index("asoneglastrier")
    assert dex.ability_index("As One (Glastrier)") != UNKNOWN


def test_species_from_details():
    assert species_from_details("Pikachu, L50, M, shiny") == "Pikachu"
    assert species_from_details("Ogerpon-Wellspring-Tera, F, tera:Water") == (
        "Ogerpon-Wellspring-Tera"
    )
    assert species_from_details("Zamazenta-*, L70") == "Zamazenta-*"
    assert species_from_details("Ditto") == "Ditto"


def test_protocol_species_spellings(dex):
    assert dex.species_index("Pikachu, L50, M, shiny") == dex.species_index("Pikachu")
    # Team preview hides formes as "-*": the base species is the best guess.
    assert dex.species_index("Zamazenta-*") == dex.species_index("Zamazenta")
    assert dex.species_index("Zamazenta-*, L70") == dex.species_index("Zamazenta")
    assert dex.species("Arceus-*", 9)["name"] == "Arceus"
    # Cosmetic formes: the forme when Showdown lists it, else the base species.
    assert dex.species("Vivillon-Fancy", 9)["name"] == "Vivillon-Fancy"
    assert dex.species("Gastrodon-East", 9)["name"] == "Gastrodon-East"
    assert dex.species_index("Alcremie-*") == dex.species_index("Alcremie")
    assert dex.species_index("Unown-B") == dex.species_index("Unown") != UNKNOWN
    assert dex.species("Furfrou-La Reine", 9)["name"] == "Furfrou"
    # Accents and gender symbols.
    # Showdown spells Flabébé decomposed (NFD: "e" + U+0301); protocol text may be either.
    flabebe = dex.species("Flab\u00e9b\u00e9", 9)
    assert flabebe is not None and flabebe["name"] == "Flabe\u0301be\u0301"
    assert dex.species_index("Flabe\u0301be\u0301") == dex.species_index("flabebe") != UNKNOWN
    assert dex.species_index("Nidoran♀") == dex.species_index("Nidoran-F") != UNKNOWN
    assert dex.species_index("Nidoran♂") == dex.species_index("Nidoran-M") != UNKNOWN
    assert dex.species_index("Nidoran-F") != dex.species_index("Nidoran-M")


def test_hidden_power_return_frustration(dex):
    hp = dex.move_index("Hidden Power")
    assert hp != UNKNOWN
    for name in ["hiddenpowerfire60", "hiddenpowerice70", "Hidden Power Fire", "hiddenpower60"]:
        assert dex.move_index(name) == hp, name
    assert dex.move_index("return102") == dex.move_index("Return") != UNKNOWN
    assert dex.move_index("frustration102") == dex.move_index("Frustration") != UNKNOWN
    # Records keep the type, and the power the request states.
    fire = dex.move("hiddenpowerfire60", 4)
    assert (fire["type"], fire["basePower"]) == ("Fire", 60)
    assert dex.move("Hidden Power Ice", 3)["type"] == "Ice"
    assert dex.move("Hidden Power", 3)["type"] == "Normal"
    assert dex.move("return102", 7)["basePower"] == 102


# -- per-gen records ------------------------------------------------------------------------


def test_move_power_changed_between_gens(dex):
    for gen in range(1, 6):
        assert dex.move("Thunderbolt", gen)["basePower"] == 95
    for gen in range(6, 10):
        assert dex.move("Thunderbolt", gen)["basePower"] == 90


def test_physical_special_split(dex):
    assert dex.move("Fire Punch", 3)["category"] == "Special"  # by type before gen 4
    assert dex.move("Fire Punch", 4)["category"] == "Physical"
    assert dex.move("Crunch", 3)["category"] == "Special"
    assert dex.move("Crunch", 4)["category"] == "Physical"


def test_species_types_changed_between_gens(dex):
    for gen in range(1, 6):
        assert dex.species("Clefairy", gen)["types"] == ["Normal"]
    for gen in range(6, 10):
        assert dex.species("Clefairy", gen)["types"] == ["Fairy"]
    assert dex.species("Magnemite", 1)["types"] == ["Electric"]
    assert dex.species("Magnemite", 2)["types"] == ["Electric", "Steel"]


def test_species_record_fields(dex):
    moth = dex.species("Iron Moth", 9)
    assert moth["types"] == ["Fire", "Poison"]
    assert moth["baseStats"] == {"hp": 80, "atk": 70, "def": 60, "spa": 140, "spd": 110, "spe": 110}
    assert moth["abilities"] == {"0": "Quark Drive"}
    assert moth["num"] == 994 and moth["gen"] == 9
    rapid = dex.species("Urshifu-Rapid-Strike", 9)
    assert (rapid["baseSpecies"], rapid["forme"]) == ("Urshifu", "Rapid-Strike")
    assert rapid["types"] == ["Fighting", "Water"]
    assert dex.species("Snorlax", 9)["weightkg"] == 460
    # Gen 1's Special: one stat, shown as spa == spd.
    alakazam = dex.species("Alakazam", 1)["baseStats"]
    assert alakazam["spa"] == alakazam["spd"] == 135


def test_future_entries_are_absent_unless_asked(dex):
    assert dex.species("Iron Moth", 8) is None
    assert dex.species("Chikorita", 1) is None
    assert dex.species("Chikorita", 2)["name"] == "Chikorita"
    future = dex.species("Iron Moth", 8, include_future=True)
    assert future["isNonstandard"] == "Future"
    # Still in the vocabulary: indices are over the union of all gens.
    assert dex.species_index("Iron Moth") != UNKNOWN


def test_nonstandard_entries_are_kept(dex):
    # National Dex / Past: Dexited in gen 8-9 but still data.
    assert dex.move("Hidden Power", 9)["isNonstandard"] == "Past"
    assert dex.move("Hidden Power", 7)["isNonstandard"] is None
    assert dex.species("Pikachu-Original", 9) is not None
    # CAP.
    assert dex.species("Tomohawk", 9)["isNonstandard"] == "CAP"
    assert dex.species_index("Tomohawk") != UNKNOWN


def test_gen1_has_no_abilities_or_items(dex, doc):
    for gen in (1, 2):
        present = {a: dex.ability(a, gen) for a in doc["abilities"]}
        standard = [a for a, rec in present.items() if rec and rec["isNonstandard"] is None]
        assert standard == ["noability"], gen
        # Besides "No Ability", only CAP's fan-made abilities, which Showdown tags CAP in
        # every gen; real ones (Intimidate...) are "Future" there, hence absent.
        others = {rec["isNonstandard"] for a, rec in present.items() if rec and a != "noability"}
        assert others == {"CAP"}, gen
        assert dex.ability("Intimidate", gen) is None
        assert dex.species("Gengar", gen)["abilities"] == {}
    assert dex.ability("Intimidate", 3)["name"] == "Intimidate"
    assert dex.species("Gengar", 3)["abilities"] == {"0": "Levitate"}
    assert dex.species("Gengar", 7)["abilities"] == {"0": "Cursed Body"}
    held = [i for i in doc["items"] if dex.item(i, 1) is not None]
    assert "leftovers" not in held
    # Gen 1's data lists only balls and evolution stones, which are never held in battle.
    assert all(re.search(r"ball|stone", i) for i in held), held
    assert dex.item("Leftovers", 2)["name"] == "Leftovers"
    assert dex.item("Life Orb", 3) is None
    assert dex.item("Life Orb", 4)["name"] == "Life Orb"


def test_move_record_fields(dex):
    swift = dex.move("Swift", 9)
    assert swift["alwaysHits"] is True and swift["accuracy"] == 0
    tbolt = dex.move("Thunderbolt", 9)
    assert tbolt["alwaysHits"] is False and tbolt["accuracy"] == 100
    assert tbolt["secondaries"] == [{"chance": 10, "status": "par"}]
    assert "contact" in dex.move("Close Combat", 9)["flags"]
    assert dex.move("Close Combat", 9)["selfBoosts"] == {"def": -1, "spd": -1}
    assert "sound" in dex.move("Boomburst", 9)["flags"]
    assert dex.move("Swords Dance", 9)["boosts"] == {"atk": 2}
    assert dex.move("U-turn", 9)["selfSwitch"] is True
    assert dex.move("Extreme Speed", 9)["priority"] == 2
    assert dex.move("Thunder Wave", 9)["status"] == "par"
    assert dex.move("Inferno Overdrive", 7)["isZ"] is True
    assert dex.move("Max Flare", 8)["isMax"] is True


def test_item_links(dex):
    stone = dex.item("Venusaurite", 7)
    assert stone["megaStone"] == {"Venusaur": "Venusaur-Mega"}
    assert dex.item("Firium Z", 7)["zMoveType"] == "Fire"
    assert dex.item("Leftovers", 9)["megaStone"] is None


def test_type_chart(dex):
    assert dex.effectiveness("Ghost", ["Psychic"], 1) == 0  # gen 1's famous bug
    assert dex.effectiveness("Ghost", ["Psychic"], 2) == 2
    assert dex.effectiveness("Dragon", ["Fairy"], 6) == 0
    assert dex.effectiveness("Steel", ["Ghost"], 5) == 1
    assert dex.effectiveness("Ground", ["Flying", "Steel"], 9) == 0
    assert dex.effectiveness("Ice", ["Dragon", "Flying"], 9) == 4
    assert dex.effectiveness("Fire", ["Grass", "Water"], 9) == 1


def test_records_are_copies(dex):
    rec = dex.species("Pikachu", 9)
    rec["name"] = "Changed"
    assert dex.species("Pikachu", 9)["name"] == "Pikachu"


# -- JSON layout ----------------------------------------------------------------------------


def test_layout_full_records_share_keys(doc):
    assert doc["schema"] == 1
    for kind in ("species", "moves", "items", "abilities"):
        keys = None
        for entry, recs in doc[kind].items():
            newest = max((g for g, r in recs.items() if r is not None), key=int)
            full = recs[newest]
            if keys is None:
                keys = set(full)
            assert set(full) == keys, (kind, entry)
            assert to_id(full["name"]) == entry or kind == "species"  # key is toID(name)
            for g, rec in recs.items():
                if int(g) < int(newest) and rec is not None:
                    assert rec and set(rec) <= keys, (kind, entry, g)


# -- real protocol text ---------------------------------------------------------------------


def _replay_logs(root: Path) -> Iterator[tuple[str, list[str]]]:
    for path in sorted((root / "human").glob("*.json")) + sorted(
        (root / "serverlogs").glob("*.json")
    ):
        data = json.loads(path.read_text(encoding="utf-8"))
        log = data["log"]
        yield path.name, log.split("\n") if isinstance(log, str) else log


def test_replay_names_resolve(dex, shared_replays):
    """Every species, move, item, ability and type named in the shared replays is known."""
    seen = {k: set() for k in KINDS}
    for name, lines in _replay_logs(shared_replays):
        for line in lines:
            parts = line.split("|")
            if len(parts) < 3:
                continue
            tag = parts[1]
            species_tags = ("switch", "drag", "replace", "detailschange", "poke", "-formechange")
            if tag in species_tags and len(parts) > 3:
                seen["species"].add((name, parts[3]))
            elif tag == "move" and len(parts) > 3:
                seen["moves"].add((name, parts[3]))
            elif tag in ("-item", "-enditem") and len(parts) > 3:
                seen["items"].add((name, parts[3]))
            elif tag == "-ability" and len(parts) > 3:
                seen["abilities"].add((name, parts[3]))
            elif tag == "-mega" and len(parts) > 4 and parts[4]:
                seen["items"].add((name, parts[4]))
            elif tag == "-terastallize" and len(parts) > 3:
                seen["types"].add((name, parts[3]))
            for part in parts:
                if part.startswith("[from] item: "):
                    seen["items"].add((name, part.removeprefix("[from] item: ")))
                elif part.startswith("[from] ability: "):
                    seen["abilities"].add((name, part.removeprefix("[from] ability: ")))
    assert len(seen["species"]) > 100 and len(seen["moves"]) > 100
    for kind, names in seen.items():
        assert names, kind
        missing = sorted(n for n in names if dex.index(kind, n[1]) == UNKNOWN)
        assert not missing, f"{kind}: {missing}"


# Items in the older server logs that pokemon-showdown 0.11.11 no longer has at all (Challenge
# Cup once handed out Energy Powder): they can only be UNKNOWN.
ITEMS_NOT_IN_PINNED_SHOWDOWN = {"energypowder"}


def test_serverlog_teams_resolve(dex, shared_replays):
    """Team sheets (ids as the server stores them: "hiddenpowerghost", "ejectbutton")."""
    for item in ITEMS_NOT_IN_PINNED_SHOWDOWN:
        assert dex.item_index(item) == UNKNOWN, f"{item} is known now: drop it from the list"
    count = 0
    for path in sorted((shared_replays / "serverlogs").glob("*.json")):
        gen = int(re.match(r"gen(\d)", path.name).group(1))
        data = json.loads(path.read_text(encoding="utf-8"))
        for side in ("p1team", "p2team"):
            for mon in data.get(side) or []:
                count += 1
                assert dex.species(mon["species"], gen) is not None, mon["species"]
                for move in mon["moves"]:
                    assert dex.move(move, gen) is not None, (path.name, move)
                if mon.get("item") and mon["item"] not in ITEMS_NOT_IN_PINNED_SHOWDOWN:
                    assert dex.item(mon["item"], gen) is not None, (path.name, mon["item"])
                if mon.get("ability") and gen >= 3:
                    assert dex.ability(mon["ability"], gen) is not None, mon["ability"]
    assert count > 50


# -- export ---------------------------------------------------------------------------------


def test_reexport_matches_shipped_file(showdown_package, tmp_path, doc):
    out = export_dex(showdown_package, tmp_path / "dex.json.gz")
    with gzip.open(out, "rb") as f:
        fresh = f.read()
    with gzip.open(DATA_FILE, "rb") as f:
        shipped = f.read()
    assert json.loads(fresh)["version"] == doc["version"]
    assert fresh == shipped, "re-export differs: regenerate with export_dex(install(), DATA_FILE)"
    # Same input, same bytes (no timestamp or name in the gzip header).
    again = export_dex(showdown_package, tmp_path / "again.json.gz")
    assert again.read_bytes() == out.read_bytes()


def test_export_without_node_is_a_clear_error(monkeypatch, tmp_path):
    import pokeagent.showdown.dex as dex_module

    monkeypatch.setattr(dex_module.shutil, "which", lambda name: None)
    with pytest.raises(dex_module.DexExportError, match="node"):
        export_dex(tmp_path, tmp_path / "out.json.gz")
    assert not (tmp_path / "out.json.gz").exists()
