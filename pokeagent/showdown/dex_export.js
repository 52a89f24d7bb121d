#!/usr/bin/env node
/**
 * dex_export.js - export Pokémon Showdown's game data (gens 1..9) as one JSON document.
 *
 *   node dex_export.js --showdown PKG        (JSON on stdout)
 *
 * PKG is the folder of the `pokemon-showdown` npm package (we only use dist/sim).
 * pokeagent/showdown/dex.py runs this and gzips the result; read that module's docstring
 * for how the data is used.  The output is deterministic: object keys are sorted and
 * there is no timestamp, so re-exporting the same package version gives identical bytes.
 *
 * Layout (schema 1):
 *
 *   {
 *     "schema": 1, "version": "<package.json version>", "gens": [1, ..., 9],
 *     "types": ["???", "Bug", ..., "Water"],         sorted by Showdown id ("???" has id "")
 *     "typechart": {"<gen>": {"<defending type>": {"<attacking type>": multiplier}}},
 *     "species": {"<key>": {"<gen>": record-or-delta, ...}, ...},
 *     "moves": {...}, "items": {...}, "abilities": {...}
 *   }
 *
 * typechart: for each gen, the types that exist in it (isNonstandard null); only the
 * multipliers other than 1 (2, 0.5 or 0) are listed.
 *
 * Tables.  <key> is toID(name), Showdown's data key.  It equals the record's "id" except
 * for the typed Hidden Powers ("hiddenpowerfire"), whose Showdown id is "hiddenpower".
 * An entry is listed when `exists` in ANY gen's `X.all()`; nonstandard entries (Past, CAP,
 * LGPE, Unobtainable, Custom, Future, ...) are kept, with their per-gen `isNonstandard`.
 * In 0.11.11 every gen's all() lists every entry (an entry not yet in a gen is tagged
 * "Future" there), but the format does not rely on it.
 *
 * Per-gen compression ("deltas against the next-newer gen"):
 *   - the newest gen that lists the entry holds the FULL record;
 *   - each older gen g holds only the keys whose values differ from the record of the
 *     next-newer gen that lists the entry (values compared as JSON);
 *     a gen whose record is identical is omitted;
 *   - a gen that does not list the entry at all holds null.
 * Every full record of a kind has the same keys (null / false / [] / {} when not
 * applicable), so a delta never needs to delete a key.  To rebuild gen g: start from the
 * full record and apply the deltas of the gens below it, newest first, down to g.
 *
 * Records (all kinds also have name, id, num, gen = generation introduced, isNonstandard):
 *   species:   baseSpecies, forme, types, baseStats {hp,atk,def,spa,spd,spe},
 *              abilities {"0","1","H","S": name} ({} before gen 3: abilities did not
 *              exist; Showdown's data still carries the modern ones), weightkg,
 *              isCosmeticForme
 *   moves:     type, category, basePower, accuracy (0 when it never misses, with
 *              alwaysHits true), alwaysHits, priority, pp, target, flags (sorted subset of
 *              MOVE_FLAGS), isZ, isMax (booleans), status, volatileStatus, boosts (on the
 *              target), selfBoosts, selfSwitch, forceSwitch, critRatio, drain, recoil, heal
 *              ([num, den] or null), multihit (n or [min, max] or null), ohko,
 *              sideCondition, weather, terrain, pseudoWeather, secondaries (list of
 *              {chance, status?, volatileStatus?, boosts?, selfBoosts?})
 *   items:     megaStone ({base species: mega species} or null), zMove (true, a Z-move
 *              name, or null), zMoveType, zMoveFrom, itemUser, isBerry, isGem, onPlate,
 *              onDrive, onMemory
 *   abilities: rating, flags (sorted list of flag names)
 */
'use strict';

const path = require('path');
const fs = require('fs');

const GENS = [1, 2, 3, 4, 5, 6, 7, 8, 9];
const SCHEMA = 1;

// Move flags a battle model can use (contact for Rocky Helmet/abilities, sound for
// Soundproof/substitute, punch/bite/pulse/slicing/... for ability boosts, ...).  The rest
// (mirror, metronome, failencore, ...) only matter to the simulator's own bookkeeping.
const MOVE_FLAGS = [
  'bite', 'bullet', 'bypasssub', 'charge', 'contact', 'dance', 'defrost', 'heal', 'powder',
  'protect', 'pulse', 'punch', 'recharge', 'reflectable', 'slicing', 'sound', 'wind',
];

// Showdown's damageTaken codes -> damage multiplier.
const DAMAGE_TAKEN = {0: 1, 1: 2, 2: 0.5, 3: 0};

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--showdown') args.showdown = argv[++i];
    else if (a === '-h' || a === '--help') args.help = true;
    else throw new Error(`unknown argument: ${a}`);
  }
  return args;
}

function nn(v) {
  // undefined, '' and other "not set" values become null so every record has every key.
  return v === undefined || v === '' ? null : v;
}

function sortedStrings(list) {
  return [...list].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function boostsOrNull(b) {
  return b && Object.keys(b).length ? {...b} : null;
}

function speciesRecord(s, gen) {
  const abilities = {};
  // Abilities arrived in gen 3; the gen 1/2 data still lists the modern ones.
  if (gen >= 3) for (const slot of Object.keys(s.abilities)) abilities[slot] = s.abilities[slot];
  const b = s.baseStats;
  return {
    name: s.name,
    id: s.id,
    num: s.num,
    gen: s.gen,
    baseSpecies: s.baseSpecies,
    forme: s.forme || '',
    types: [...s.types],
    baseStats: {hp: b.hp, atk: b.atk, def: b.def, spa: b.spa, spd: b.spd, spe: b.spe},
    abilities,
    weightkg: s.weightkg,
    isCosmeticForme: !!s.isCosmeticForme,
    isNonstandard: nn(s.isNonstandard),
  };
}

function fraction(v) {
  // drain / recoil / heal are [numerator, denominator] pairs in Showdown's data.
  return Array.isArray(v) ? [v[0], v[1]] : null;
}

function moveRecord(m) {
  const flags = MOVE_FLAGS.filter(f => m.flags && m.flags[f]);
  const secondaries = (m.secondaries || []).map(sec => {
    const out = {chance: sec.chance === undefined ? 100 : sec.chance};
    if (sec.status) out.status = sec.status;
    if (sec.volatileStatus) out.volatileStatus = sec.volatileStatus;
    if (sec.boosts) out.boosts = {...sec.boosts};
    if (sec.self && sec.self.boosts) out.selfBoosts = {...sec.self.boosts};
    return out;
  });
  return {
    name: m.name,
    id: m.id,
    num: m.num,
    gen: m.gen,
    type: m.type,
    category: m.category,
    basePower: m.basePower,
    accuracy: m.accuracy === true ? 0 : m.accuracy,
    alwaysHits: m.accuracy === true,
    priority: m.priority,
    pp: m.pp,
    target: m.target,
    flags,
    isZ: !!m.isZ,
    isMax: !!m.isMax,
    status: nn(m.status),
    volatileStatus: nn(m.volatileStatus),
    boosts: boostsOrNull(m.boosts),
    selfBoosts: boostsOrNull(m.self && m.self.boosts),
    // selfSwitch is true or a mode string ('copyvolatile' for Baton Pass, 'shedtail').
    selfSwitch: m.selfSwitch || false,
    forceSwitch: !!m.forceSwitch,
    critRatio: m.critRatio === undefined ? 1 : m.critRatio,
    drain: fraction(m.drain),
    recoil: fraction(m.recoil),
    heal: fraction(m.heal),
    multihit: Array.isArray(m.multihit) ? [m.multihit[0], m.multihit[1]] : nn(m.multihit),
    ohko: m.ohko || false,
    sideCondition: nn(m.sideCondition),
    weather: nn(m.weather),
    terrain: nn(m.terrain),
    pseudoWeather: nn(m.pseudoWeather),
    secondaries,
    isNonstandard: nn(m.isNonstandard),
  };
}

function itemRecord(it) {
  let megaStone = null;
  if (it.megaStone && typeof it.megaStone === 'object') megaStone = {...it.megaStone};
  else if (it.megaStone) megaStone = {[it.megaEvolves]: it.megaStone}; // older data shape
  return {
    name: it.name,
    id: it.id,
    num: it.num,
    gen: it.gen,
    megaStone,
    zMove: nn(it.zMove),
    zMoveType: nn(it.zMoveType),
    zMoveFrom: nn(it.zMoveFrom),
    itemUser: it.itemUser ? [...it.itemUser] : null,
    isBerry: !!it.isBerry,
    isGem: !!it.isGem,
    onPlate: nn(it.onPlate),
    onDrive: nn(it.onDrive),
    onMemory: nn(it.onMemory),
    isNonstandard: nn(it.isNonstandard),
  };
}

function abilityRecord(a) {
  return {
    name: a.name,
    id: a.id,
    num: a.num,
    gen: a.gen,
    rating: a.rating === undefined ? null : a.rating,
    flags: sortedStrings(Object.keys(a.flags || {}).filter(f => a.flags[f])),
    isNonstandard: nn(a.isNonstandard),
  };
}

// JSON with object keys sorted at every level: the byte-identical re-export guarantee.
function canonical(v) {
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  if (v && typeof v === 'object') {
    const keys = sortedStrings(Object.keys(v));
    return '{' + keys.map(k => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
  }
  if (v === undefined) return 'null';
  return JSON.stringify(v);
}

function delta(older, newer) {
  const out = {};
  for (const k of Object.keys(older)) {
    if (canonical(older[k]) !== canonical(newer[k])) out[k] = older[k];
  }
  return out;
}

/** {key: {gen: record}} for one kind, then delta-compressed (see the header). */
function buildTable(Dex, toID, kind, makeRecord) {
  const perKey = new Map();
  for (const gen of GENS) {
    for (const obj of Dex.forGen(gen)[kind].all()) {
      if (!obj.exists) continue;
      const key = toID(obj.name);
      if (!perKey.has(key)) perKey.set(key, {});
      const recs = perKey.get(key);
      if (recs[gen]) throw new Error(`${kind}: two gen ${gen} entries named ${key}`);
      recs[gen] = makeRecord(obj, gen);
    }
  }
  const table = {};
  for (const key of sortedStrings(perKey.keys())) {
    const recs = perKey.get(key);
    const out = {};
    let newer = null;
    for (const gen of [...GENS].reverse()) {
      const rec = recs[gen];
      if (!rec) {
        if (newer) out[gen] = null;
        continue;
      }
      if (!newer) {
        out[gen] = rec;
      } else {
        const d = delta(rec, newer);
        if (Object.keys(d).length) out[gen] = d;
      }
      newer = rec;
    }
    table[key] = out;
  }
  return table;
}

function buildTypes(Dex, toID) {
  const names = new Set(['???']); // the sim's typeless type (Burn Up, Roost, Struggle...)
  const chart = {};
  for (const gen of GENS) {
    const dex = Dex.forGen(gen);
    const types = dex.types.all().filter(t => t.exists);
    for (const t of types) names.add(t.name);
    const existing = types.filter(t => !t.isNonstandard).map(t => t.name);
    const gchart = {};
    for (const def of existing) {
      const taken = dex.types.get(def).damageTaken;
      const row = {};
      for (const atk of existing) {
        const code = taken[atk] || 0;
        if (DAMAGE_TAKEN[code] !== 1) row[atk] = DAMAGE_TAKEN[code];
      }
      gchart[def] = row;
    }
    chart[gen] = gchart;
  }
  const types = [...names].sort((a, b) => {
    const ia = toID(a), ib = toID(b);
    return ia < ib ? -1 : ia > ib ? 1 : 0;
  });
  return {types, chart};
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.help || !args.showdown) {
    process.stderr.write('usage: node dex_export.js --showdown PKG > dex.json\n');
    process.exit(args.help ? 0 : 2);
  }
  const pkg = path.resolve(args.showdown);
  const version = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version;
  const {Dex, toID} = require(path.join(pkg, 'dist/sim'));

  const {types, chart} = buildTypes(Dex, toID);
  const doc = {
    schema: SCHEMA,
    version,
    gens: GENS,
    types,
    typechart: chart,
    species: buildTable(Dex, toID, 'species', speciesRecord),
    moves: buildTable(Dex, toID, 'moves', m => moveRecord(m)),
    items: buildTable(Dex, toID, 'items', it => itemRecord(it)),
    abilities: buildTable(Dex, toID, 'abilities', a => abilityRecord(a)),
  };
  process.stdout.write(canonical(doc) + '\n');
}

main();
