"""Pokémon Showdown's game data (gens 1-9) as vocabularies and per-gen records. Stdlib only.

The data is exported once from the pinned npm package by ``dex_export.js`` and shipped as
``data/dex-<version>.json.gz`` (:data:`DATA_FILE`); ``export_dex`` regenerates it. See the
header of ``dex_export.js`` for the JSON layout and the per-gen delta rule.

Vocabularies
    Every kind (``species``, ``moves``, ``items``, ``abilities``, ``types``) maps names to
    ints: :data:`PAD` = 0 and :data:`UNKNOWN` = 1 are reserved, then ids from 2 upwards in
    the order of Showdown ids (``to_id``), sorted as strings, over the union of all gens
    (nonstandard entries included: National Dex, Past, CAP, LGPE, Future...). The order
    only changes when the pinned package adds or drops entries. Types are the 19 of
    Showdown's dex plus ``"???"`` (the sim's typeless type), whose id is ``""`` so it
    sorts first (index 2).

    Names resolve the way protocol text needs them to: display names or ids ("Iron Moth",
    "ironmoth"), details strings ("Pikachu, L50, M, shiny"), team preview's unknown forme
    ("Zamazenta-*" -> Zamazenta), cosmetic formes (the forme where Showdown lists it,
    "Gastrodon-East"; else the base species, "Unown-B" -> Unown), accented or gendered
    spellings ("Flabébé", "Nidoran♀"), and request move ids that carry a power
    ("hiddenpowerfire60" -> Hidden Power, "return102" -> Return). Unknown names give
    :data:`UNKNOWN`; the index functions never raise.

    All typed Hidden Powers share the index of "Hidden Power" (Showdown gives them the id
    ``hiddenpower``, and ``|move|`` lines only say "Hidden Power"), while ``move()`` still
    returns the typed record for "Hidden Power Fire" / "hiddenpowerfire60".

Records
    ``species(name, gen)``, ``move``, ``item``, ``ability`` return the attributes as of that
    gen (a new dict each call; nested lists/dicts are shared: treat them as read-only), or
    None for unknown names and for entries that do not exist yet in that gen (Showdown tags
    them ``isNonstandard: "Future"``; pass ``include_future=True`` to get them anyway).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from pokeagent.showdown.install import SHOWDOWN_VERSION

__all__ = [
    "DATA_FILE",
    "KINDS",
    "PAD",
    "SCHEMA",
    "SCRIPT",
    "UNKNOWN",
    "Dex",
    "DexExportError",
    "export_dex",
    "export_json",
    "species_from_details",
    "to_id",
]

PAD = 0
"""Index reserved for padding in every vocabulary."""
UNKNOWN = 1
"""Index of any name the dex does not know (in every vocabulary)."""
_FIRST_INDEX = 2

SCHEMA = 1
"""The JSON layout version ``dex_export.js`` writes and this module reads."""

SCRIPT = Path(__file__).with_name("dex_export.js")
"""The Node script that exports the data."""

DATA_FILE = Path(__file__).with_name("data") / f"dex-{SHOWDOWN_VERSION}.json.gz"
"""The shipped export of the pinned pokemon-showdown package."""

KINDS = ("species", "moves", "items", "abilities", "types")
"""Vocabulary kinds; ``vocab_size`` and friends also accept the singular forms."""

_KIND_NAMES = {
    **{k: k for k in KINDS},
    "move": "moves",
    "item": "items",
    "ability": "abilities",
    "type": "types",
}

_GENS = range(1, 10)

# Request move ids carry the move's power: "hiddenpowerfire60", "return102", "frustration102".
_POWER_SUFFIX = re.compile(r"(hiddenpower[a-z]*|return|frustration)([0-9]+)")

# At most this many names remembered per vocabulary by Dex.resolve.
_MEMO_LIMIT = 200_000

_NON_ID = re.compile(r"[^a-z0-9]+")

# Symbols that Showdown's own aliases spell out (Nidoran♀ is "Nidoran-F" in the dex).
_SYMBOLS = str.maketrans({"♀": "-F", "♂": "-M"})


class DexExportError(RuntimeError):
    """``node`` is missing, or ``dex_export.js`` failed (the message carries its stderr)."""


def to_id(name: Any) -> str:
    """Showdown's ``toID``: lowercase, then keep only ``[a-z0-9]`` ("Mr. Mime" -> "mrmime").

    Non-strings give "" (Showdown accepts objects with an id; we never pass them).
    """
    if not isinstance(name, str):
        return ""
    return _NON_ID.sub("", name.lower())


def species_from_details(details: str) -> str:
    """The species part of a protocol details string: "Pikachu, L50, M, shiny" -> "Pikachu".

    Used for ``|switch|``, ``|drag|``, ``|poke|``, ``|detailschange|`` and request
    ``details``. Team preview's "Zamazenta-*" stays as written (``Dex`` lookups resolve it).
    """
    return details.split(",", 1)[0].strip()


def _fold(name: str) -> str:
    """Name with accents and gender symbols spelled in ASCII ("Flabébé" -> "Flabebe").

    ``to_id`` drops non-ASCII letters (toID("Flabébé") is "flabb"), while Showdown's data
    key is "flabebe"; folding first finds it.
    """
    decomposed = unicodedata.normalize("NFKD", name.translate(_SYMBOLS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _write_gzip(data: bytes, out: Path) -> None:
    """Write ``data`` gzipped, atomically, with no name or timestamp in the header.

    The same input then gives the same bytes (for a given zlib build); tests compare the
    decompressed JSON, which is what the export guarantees.
    """
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the shipped file must be readable
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_json(package_dir: Path) -> bytes:
    """Run ``dex_export.js`` on the package folder; return its JSON output (UTF-8 bytes)."""
    node = shutil.which("node")
    if node is None:
        raise DexExportError(
            "`node` (Node.js >= 18) was not found on PATH; it is needed to run dex_export.js"
        )
    package_dir = Path(package_dir)
    if not (package_dir / "dist" / "sim").is_dir():
        raise DexExportError(f"{package_dir} is not a built pokemon-showdown package (no dist/sim)")
    cmd = [node, str(SCRIPT), "--showdown", str(package_dir)]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace")[-5000:]
        raise DexExportError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{stderr}")
    doc = json.loads(proc.stdout)
    if doc.get("schema") != SCHEMA:
        raise DexExportError(f"dex_export.js wrote schema {doc.get('schema')}, expected {SCHEMA}")
    return proc.stdout


def export_dex(package_dir: Path, out: Path) -> Path:
    """Export the game data of the pokemon-showdown package at ``package_dir`` to ``out``.

    ``out`` is gzipped JSON (see ``dex_export.js``); returns ``out``. To refresh the shipped
    file after a version bump: ``export_dex(install(), DATA_FILE)``.
    """
    out = Path(out)
    _write_gzip(export_json(package_dir), out)
    return out


_BY_ARGUMENT: dict[Path | str, Dex] = {}


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> Dex:
    with gzip.open(path, "rb") as f:
        return Dex(json.loads(f.read()))


class Dex:
    """Vocabularies and per-gen records from one export (see the module docstring)."""

    PAD = PAD
    UNKNOWN = UNKNOWN

    def __init__(self, doc: dict[str, Any]):
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"dex data has schema {doc.get('schema')}, expected {SCHEMA}")
        self._doc = doc
        self._tables: dict[str, dict[str, dict[str, Any]]] = {
            kind: doc[kind] for kind in ("species", "moves", "items", "abilities")
        }
        self._vocab: dict[str, tuple[str, ...]] = {}
        self._index: dict[str, dict[str, int]] = {}
        # name -> table key (or None) memo; protocol text repeats the same few hundred names.
        self._resolved: dict[str, dict[Any, str | None]] = {k: {} for k in KINDS}
        # table key -> vocabulary id ("hiddenpowerfire" -> "hiddenpower").
        self._key_id: dict[str, dict[str, str]] = {}
        # folded ids of display names that differ from the data key ("flabebe" for Flabébé).
        self._aliases: dict[str, dict[str, str]] = {}
        for kind, table in self._tables.items():
            key_id: dict[str, str] = {}
            aliases: dict[str, str] = {}
            for key, recs in table.items():
                # The newest listed gen holds the full record (older gens hold deltas).
                full = recs[max((g for g, r in recs.items() if r is not None), key=int)]
                key_id[key] = full["id"]
                for alias in (full["id"], to_id(_fold(full["name"]))):
                    if alias and alias not in table:
                        aliases.setdefault(alias, key)
            self._key_id[kind] = key_id
            self._aliases[kind] = aliases
            self._vocab[kind] = tuple(sorted(set(key_id.values())))
        # Types: the export lists them sorted by id already; "???" has id "", keep its name.
        self._vocab["types"] = tuple(self._type_key(t) for t in doc["types"])
        self._type_names = {self._type_key(t): t for t in doc["types"]}
        for kind, ids in self._vocab.items():
            self._index[kind] = {id_: i for i, id_ in enumerate(ids, start=_FIRST_INDEX)}
        self._records: dict[tuple[str, str, int], dict[str, Any] | None] = {}

    @classmethod
    def load(cls, path: Path | str = DATA_FILE) -> Dex:
        """The dex stored at ``path`` (gzipped JSON); loaded once per path and then shared."""
        dex = _BY_ARGUMENT.get(path)  # no filesystem call when asked again (once per replay)
        if dex is None:
            dex = _BY_ARGUMENT[path] = _load(Path(path).resolve())
        return dex

    # -- metadata ---------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The pokemon-showdown version the data was exported from."""
        return self._doc["version"]

    @property
    def gens(self) -> tuple[int, ...]:
        """The generations covered (1..9)."""
        return tuple(self._doc["gens"])

    @property
    def types(self) -> tuple[str, ...]:
        """Type display names in vocabulary order ("???" first)."""
        return tuple(self._doc["types"])

    # -- vocabularies -----------------------------------------------------------------------

    @staticmethod
    def _kind(kind: str) -> str:
        try:
            return _KIND_NAMES[kind]
        except KeyError:
            raise ValueError(f"unknown vocabulary {kind!r}; expected one of {KINDS}") from None

    @staticmethod
    def _type_key(name: str) -> str:
        # "???" would be "" as an id; it keeps its own spelling as its key instead.
        return to_id(name) or name.strip()

    def vocab(self, kind: str) -> tuple[str, ...]:
        """The ids of ``kind`` in index order, starting at index 2 (PAD and UNKNOWN first)."""
        return ("<pad>", "<unknown>", *self._vocab[self._kind(kind)])

    def vocab_size(self, kind: str) -> int:
        """Number of indices of ``kind``, PAD and UNKNOWN included (embedding table size)."""
        return _FIRST_INDEX + len(self._vocab[self._kind(kind)])

    def index(self, kind: str, name: Any) -> int:
        """Index of ``name`` in vocabulary ``kind``; UNKNOWN when it does not resolve."""
        kind = self._kind(kind)
        if kind == "types":
            if not isinstance(name, str):
                return UNKNOWN
            return self._index["types"].get(self._type_key(name), UNKNOWN)
        key = self.resolve(kind, name)
        if key is None:
            return UNKNOWN
        return self._index[kind][self._key_id[kind][key]]

    def species_index(self, name: Any) -> int:
        """Index of a species or forme; accepts details strings and "Name-*"."""
        return self.index("species", name)

    def move_index(self, name: Any) -> int:
        """Index of a move; "hiddenpowerfire60" and "Hidden Power Fire" give Hidden Power's."""
        return self.index("moves", name)

    def item_index(self, name: Any) -> int:
        """Index of an item."""
        return self.index("items", name)

    def ability_index(self, name: Any) -> int:
        """Index of an ability."""
        return self.index("abilities", name)

    def type_index(self, name: Any) -> int:
        """Index of a type ("Fire", "fire", "???")."""
        return self.index("types", name)

    # -- name resolution --------------------------------------------------------------------

    def resolve(self, kind: str, name: Any) -> str | None:
        """The data key (Showdown's toID of the entry's name) that ``name`` means, or None.

        For types, the type's display name. Never raises for odd input.
        """
        kind = self._kind(kind)
        memo = self._resolved[kind]
        try:
            return memo[name]
        except KeyError:
            pass
        except TypeError:  # unhashable input
            return None
        if kind == "types":
            key = self._type_key(name) if isinstance(name, str) else None
            found = self._type_names.get(key) if key is not None else None
        else:
            found = self._resolve_entry(kind, name) if isinstance(name, str) else None
        if len(memo) < _MEMO_LIMIT:  # bounded: odd input (nicknames, garbage) cannot grow it
            memo[name] = found
        return found

    def _lookup(self, kind: str, text: str) -> str | None:
        table, aliases = self._tables[kind], self._aliases[kind]
        for key in (to_id(text), to_id(_fold(text))):
            if key in table:
                return key
            if key in aliases:
                return aliases[key]
        return None

    def _resolve_entry(self, kind: str, name: str) -> str | None:
        text = name.strip()
        if kind == "species":
            text = species_from_details(text)
            if text.endswith("-*"):  # team preview hides the forme: best guess is the base
                text = text[:-2]
        found = self._lookup(kind, text)
        if found is not None or not text:
            return found
        if kind == "moves":
            m = _POWER_SUFFIX.fullmatch(to_id(text))
            if m:
                return self._lookup(kind, m.group(1))
        if kind == "species":
            # A forme Showdown does not list (cosmetic: "Unown-B", "Furfrou-Dandy"): drop
            # trailing "-Forme" parts until something is known, ending at the base species.
            while "-" in text:
                text = text.rsplit("-", 1)[0]
                found = self._lookup(kind, text)
                if found is not None:
                    return found
        return None

    # -- records ----------------------------------------------------------------------------

    def _check_gen(self, gen: int) -> None:
        if gen not in _GENS:
            raise ValueError(f"gen must be 1..9, got {gen!r}")

    def _record(self, kind: str, key: str, gen: int) -> dict[str, Any] | None:
        """Rebuild ``key``'s gen-``gen`` record from its newest full record and the deltas."""
        cache_key = (kind, key, gen)
        if cache_key in self._records:
            return self._records[cache_key]
        recs = self._tables[kind][key]
        current: dict[str, Any] | None = None
        listed = False
        for g in range(max(_GENS), gen - 1, -1):
            rec = recs.get(str(g), ...)
            if rec is ...:  # omitted: same as the next-newer listed gen (if any)
                listed = current is not None
            elif rec is None:  # not listed in this gen
                listed = False
            else:
                current = dict(rec) if current is None else {**current, **rec}
                listed = True
        result = current if listed else None
        self._records[cache_key] = result
        return result

    def _get(self, kind: str, name: Any, gen: int, include_future: bool) -> dict[str, Any] | None:
        self._check_gen(gen)
        key = self.resolve(kind, name)
        if key is None:
            return None
        rec = self._record(kind, key, gen)
        if rec is None or (rec["isNonstandard"] == "Future" and not include_future):
            return None
        return dict(rec)

    def species(self, name: Any, gen: int, *, include_future: bool = False) -> dict | None:
        """Species/forme attributes as of ``gen`` (see ``dex_export.js`` for the keys)."""
        return self._get("species", name, gen, include_future)

    def move(self, name: Any, gen: int, *, include_future: bool = False) -> dict | None:
        """Move attributes as of ``gen``.

        A request id with a power ("hiddenpowerfire60", "return102") gives the move's record
        with ``basePower`` set to that power (the typed Hidden Power's, for Hidden Power).
        """
        rec = self._get("moves", name, gen, include_future)
        if rec is not None and isinstance(name, str):
            m = _POWER_SUFFIX.fullmatch(to_id(name))
            if m:
                rec["basePower"] = int(m.group(2))
        return rec

    def item(self, name: Any, gen: int, *, include_future: bool = False) -> dict | None:
        """Item attributes as of ``gen`` (gen 1 has none: every item is "Future" there)."""
        return self._get("items", name, gen, include_future)

    def ability(self, name: Any, gen: int, *, include_future: bool = False) -> dict | None:
        """Ability attributes as of ``gen`` (gens 1-2 have only "No Ability")."""
        return self._get("abilities", name, gen, include_future)

    # -- type chart -------------------------------------------------------------------------

    def effectiveness(self, attack_type: str, defender_types: list[str] | tuple, gen: int) -> float:
        """Damage multiplier of an ``attack_type`` move on a Pokémon with ``defender_types``.

        Plain type chart of that gen (no abilities, items or Tera). Types unknown in the gen
        (and "???") count as neutral.
        """
        self._check_gen(gen)
        chart = self._doc["typechart"][str(gen)]
        attacker = self.resolve("types", attack_type)
        multiplier = 1.0
        for defender in defender_types:
            row = chart.get(self.resolve("types", defender) or "", {})
            multiplier *= row.get(attacker, 1)
        return multiplier
