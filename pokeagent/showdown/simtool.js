#!/usr/bin/env node
/**
 * simtool.js - run / replay Pokémon Showdown battles in-process and emit
 * "battle records" (spectator log + per-decision ground truth) as JSON Lines.
 *
 *   node simtool.js battles --showdown PKG --format ID --count N --seed S
 *                           [--teams FILE] [--move-prob P] [--mega-prob P]
 *                           [--tera-prob P] [--p1 NAME] [--p2 NAME]
 *                           [--first I] [--stride K]   (battles I, I+K, I+2K, ...)
 *   node simtool.js replay  --showdown PKG          (JSON Lines on stdin)
 *   node simtool.js teams   --showdown PKG --format ID --count N --seed S
 *
 * PKG is the folder of the `pokemon-showdown` npm package (we only use dist/).
 * Records go to stdout (one JSON object per line), diagnostics to stderr.
 *
 * Battle record: {id, format, format_name, players, seed, input_log, log, winner,
 * turns, end: normal|forfeit|turn-limit|incomplete, decisions: [{side, turn, kind:
 * team_preview|turn|forced_switch, rqid, choice, action, legal}]}; `log` is the spectator view
 * (public half of |split| pairs, no |t:| lines).  A battle that fails gives
 * {id, error} (plus format/format_name when known) and the run goes on.
 * Replay items: {"input_log": [...], "id"?, "winner"?} (see replayItem).
 *
 * Design: one implementation.  BattleRunner.applyLine() applies input-log lines
 * the way the sim's BattleStream does, recording each `>pN` choice's request and
 * resolved action.  `replay` feeds it the given logs; `battles` lets
 * RandomPlayerAI generate the `>pN` lines, then replays the finished input log
 * through that same replay code to build the record.
 */
'use strict';

const path = require('path');
const fs = require('fs');
const crypto = require('crypto');
const readline = require('readline');

// Battles still running after this many turns are ended with `>forcetie`.
// The sim's own limit (Endless Battle Clause) also fires when turn > 1000.
const TURN_LIMIT = 1000;
// RandomPlayerAI may pick a choice the sim rejects as "[Unavailable choice]"
// (hidden information, e.g. maybeTrapped); it then gets an updated request.
const MAX_RETRIES = 20;
const TEAM_TRIES_PER_TEAM = 200;

let Sim; // filled by loadSim(): {Battle, Dex, Teams, TeamValidator, extractChannelMessages, RandomPlayerAI}

function fail(message) {
	process.stderr.write(`simtool: ${message}\n`);
	process.exit(2);
}

function loadSim(pkg) {
	if (!pkg) fail('--showdown PKG (the pokemon-showdown package folder) is required');
	const dist = path.join(path.resolve(pkg), 'dist', 'sim');
	if (!fs.existsSync(path.join(dist, 'index.js'))) fail(`not a pokemon-showdown package (no dist/sim/index.js): ${pkg}`);
	const sim = require(dist);
	Sim = {
		Battle: sim.Battle, Dex: sim.Dex, Teams: sim.Teams, TeamValidator: sim.TeamValidator,
		extractChannelMessages: require(path.join(dist, 'battle')).extractChannelMessages,
		RandomPlayerAI: require(path.join(dist, 'tools', 'random-player-ai')).RandomPlayerAI,
	};
}

function emit(obj) {
	// stdout writes are synchronous for files and pipes on Linux, so this flushes as we go.
	process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- seeds / ids

function sha256(text) {
	return crypto.createHash('sha256').update(text).digest('hex');
}
/** Deterministic sodium PRNG seed (the format PRNG.generateSeed() uses: 32 hex digits). */
function deriveSeed(seed, index, role) {
	return `sodium,${sha256(`pokeagent/${seed}/${index}/${role}`).slice(0, 32)}`;
}
function battleId(formatid, battleSeed) {
	const n = BigInt('0x' + sha256(String(battleSeed)).slice(0, 16)) % 10000000000n;
	return `${formatid}-${n.toString().padStart(10, '0')}`;
}

function getFormat(formatid) {
	const format = Sim.Dex.formats.get(formatid);
	if (!format.exists) throw new Error(`unknown format: ${formatid}`);
	return format;
}

// ------------------------------------------------------- requests -> options

function speciesOf(details) {
	return details.split(',')[0];
}
function isFainted(mon) {
	return mon.condition.endsWith(' fnt');
}
/** Display name of a move id ("hiddenpower" -> "Hidden Power"); pseudo-moves keep the request's label. */
function moveName(id, fallback) {
	const move = Sim.Dex.moves.get(id);
	return move.exists ? move.name : (fallback || id);
}
function moveOption(req, index, gimmick) {
	const m = req.moves[index];
	return { type: 'move', move: moveName(m.id, m.move), id: m.id, slot: index + 1, gimmick };
}

/** All options the request offers, in the shapes used for `action` (singles only). */
function legalOptions(request) {
	if (!request || request.wait) return [];
	const mons = request.side.pokemon;
	const switchTo = pred => mons.map((mon, i) => ({ mon, i })).filter(({ mon }) => pred(mon))
		.map(({ mon, i }) => ({ type: 'switch', species: speciesOf(mon.details), slot: i + 1 }));
	if (request.teamPreview) {
		return mons.map((mon, i) => ({ type: 'team', lead: speciesOf(mon.details), order: [i + 1] }));
	}
	if (request.forceSwitch) {
		// Revival Blessing also arrives as a forceSwitch request, but picks a fainted ally.
		const reviving = mons.some(mon => mon.active && mon.reviving);
		const opts = switchTo(mon => !mon.active && (reviving ? isFainted(mon) : !isFainted(mon)));
		return opts.length ? opts : [{ type: 'pass' }];
	}
	const req = request.active && request.active[0];
	if (!req || isFainted(mons[0]) || mons[0].commanding) return [{ type: 'pass' }];
	const opts = [];
	const usable = req.moves.map((m, i) => i).filter(i => {
		const m = req.moves[i];
		if (m.disabled) return false;
		// getMoves() already disables 0-PP moves; a lone entry (Struggle, Recharge,
		// a locked move) carries no pp at all.
		return !(typeof m.pp === 'number' && m.pp <= 0 && req.moves.length > 1);
	});
	for (const i of usable) opts.push(moveOption(req, i, null));
	if (req.canTerastallize) for (const i of usable) opts.push(moveOption(req, i, 'terastallize'));
	if (req.canMegaEvo || req.canMegaEvoX || req.canMegaEvoY) for (const i of usable) opts.push(moveOption(req, i, 'mega'));
	if (req.canUltraBurst) for (const i of usable) opts.push(moveOption(req, i, 'ultra'));
	if (req.canZMove) {
		req.canZMove.forEach((z, i) => { if (z) opts.push(moveOption(req, i, 'zmove')); });
	}
	if (req.canDynamax && req.maxMoves) {
		req.maxMoves.maxMoves.forEach((mm, i) => { if (mm && !mm.disabled && req.moves[i]) opts.push(moveOption(req, i, 'dynamax')); });
	}
	// trapped => no switches; maybeTrapped => the player can't know, so switches stay legal.
	if (!req.trapped) opts.push(...switchTo(mon => !mon.active && !isFainted(mon)));
	return opts;
}

/** Translate the sim's resolved choice (side.choice, before commit) into an action. */
function resolveAction(side, request) {
	const actions = side.choice.actions;
	if (actions.length && actions.every(a => a.choice === 'team')) {
		const order = actions.map(a => a.pokemon.position + 1);
		return { type: 'team', lead: speciesOf(request.side.pokemon[order[0] - 1].details), order };
	}
	if (actions.length !== 1) throw new Error(`expected one action in singles, got ${actions.length}`);
	const a = actions[0];
	switch (a.choice) {
	case 'move': {
		const req = request.active[0];
		// Locked moves / Struggle / Recharge / gen-1 "Fight" show up as a single
		// request entry; look the id up rather than trusting a.moveSlot.
		let index = req.moves.findIndex(m => m.id === a.moveid);
		if (index < 0 && typeof a.moveSlot === 'number') index = a.moveSlot;
		const c = side.choice;
		// side.choice flags are only set when the gimmick is *used now* (e.g. an
		// already-dynamaxed mon sends "dynamax" but choice.dynamax stays false).
		const gimmick = c.terastallize ? 'terastallize' : c.zMove ? 'zmove' : c.dynamax ? 'dynamax' :
			c.ultra ? 'ultra' : c.mega ? 'mega' : null;
		const label = index >= 0 && req.moves[index] ? req.moves[index].move : a.moveid;
		return { type: 'move', move: moveName(a.moveid, label), id: a.moveid, slot: index + 1, gimmick };
	}
	case 'switch': case 'instaswitch': case 'revivalblessing': {
		const slot = a.target.position + 1;
		return { type: 'switch', species: speciesOf(request.side.pokemon[slot - 1].details), slot };
	}
	case 'pass':
		return { type: 'pass' };
	default:
		throw new Error(`unsupported action ${a.choice}`);
	}
}

// ------------------------------------------------------------- BattleRunner

/**
 * Applies input-log lines to a Battle exactly like BattleStream._writeLine
 * does, recording for every `>pN choice` the request the player had and what
 * the choice resolved to.
 */
class BattleRunner {
	constructor() {
		this.battle = null;
		this.decisions = [];
		this.pending = {}; // side id -> decision awaiting commitChoices
		this.requests = {}; // side id -> {json, rqid}: last request sent to that player
		this.firstRequests = {}; // side id -> the first request that player answered
		this.errors = {}; // side id -> last |error| sent to that player
		this.rqid = 1; // the server starts at 1 and pre-increments, so the first request is 2
		this.end = 'normal';
	}

	send(type, data) {
		if (type !== 'sideupdate') return;
		const [sideid, line] = [data.slice(0, data.indexOf('\n')), data.slice(data.indexOf('\n') + 1)];
		if (line.startsWith('|request|')) {
			// Numbered like server/room-battle.ts: one counter for every request of the battle.
			this.rqid++;
			this.requests[sideid] = { json: line.slice(9), rqid: this.rqid };
		} else if (line.startsWith('|error|')) {
			this.errors[sideid] = line.slice(7);
		}
	}

	/** Returns false only for a rejected `>pN` choice; throws on malformed/unsupported input. */
	applyLine(line) {
		if (!line.startsWith('>')) return true; // comment lines, as in BattleStream
		const sp = line.indexOf(' ');
		const type = sp < 0 ? line.slice(1) : line.slice(1, sp);
		const message = sp < 0 ? '' : line.slice(sp + 1);
		const battle = this.battle;
		if (!battle && type !== 'start' && !type.startsWith('version')) throw new Error(`input before >start: ${line}`);
		let ok = true;
		switch (type) {
		case 'version': case 'version-origin':
			break;
		case 'start': {
			const options = JSON.parse(message);
			const format = getFormat(options.formatid);
			if (format.gameType !== 'singles') {
				const err = new Error(`${format.gameType} not supported`);
				err.format = format;
				throw err;
			}
			options.send = (t, data) => this.send(t, Array.isArray(data) ? data.join('\n') : data);
			this.battle = new Sim.Battle(options);
			break;
		}
		case 'player': {
			const [slot, json] = [message.slice(0, message.indexOf(' ')), message.slice(message.indexOf(' ') + 1)];
			battle.setPlayer(slot, JSON.parse(json));
			break;
		}
		case 'p1': case 'p2': case 'p3': case 'p4':
			if (message === 'undo') {
				battle.undoChoice(type);
				delete this.pending[type];
			} else {
				ok = this.choose(type, message);
			}
			break;
		case 'forcewin': case 'forcetie':
			// Same order as BattleStream: win() first, then the input log entry.
			battle.win(type === 'forcewin' ? message : null);
			battle.inputLog.push(message ? `>forcewin ${message}` : '>forcetie');
			this.end = type === 'forcetie' && battle.turn > TURN_LIMIT ? 'turn-limit' : 'forfeit';
			break;
		case 'forcelose':
			// The server logs "NAME forfeited." itself (room-battle forfeitPlayer) before
			// writing >forcelose; we add the same public line so replays match server logs.
			if (!battle.ended) battle.add('-message', `${battle.getSide(message).name} forfeited.`);
			battle.lose(message);
			battle.inputLog.push(`>forcelose ${message}`);
			this.end = 'forfeit';
			break;
		case 'tiebreak':
			battle.tiebreak();
			break;
		case 'reseed':
			battle.resetRNG(message);
			battle.inputLog.push(`>reseed ${battle.prng.getSeed()}`);
			break;
		case 'chat':
			battle.inputLog.push(`>chat ${message}`);
			battle.add('chat', message);
			break;
		case 'chat-inputlogonly':
			battle.inputLog.push(`>chat ${message}`);
			break;
		default:
			throw new Error(`unsupported input line: ${line.slice(0, 80)}`);
		}
		// BattleStream flushes after every write: this emits the requests (which we
		// capture in send()) and keeps the sim's "LINE LIMIT EXCEEDED" guard happy.
		if (this.battle) this.battle.sendUpdates();
		return ok;
	}

	/** Battle#choose, split open so the resolved choice can be read before commitChoices() clears it. */
	choose(sideid, input) {
		const battle = this.battle;
		const side = battle.getSide(sideid);
		// The request the player was sent; fall back to activeRequest if (unexpectedly) none was emitted.
		const sent = this.requests[sideid];
		let request = sent ? JSON.parse(sent.json) : null;
		let rqid = sent ? sent.rqid : null;
		if (!request || (side.activeRequest && JSON.stringify(side.activeRequest) !== sent.json)) {
			request = JSON.parse(JSON.stringify(side.activeRequest));
			rqid = null;
		}
		const turn = battle.turn;
		if (!this.firstRequests[sideid]) this.firstRequests[sideid] = request;
		if (!side.choose(input)) {
			if (!side.choice.error) side.emitChoiceError(`Unknown error for choice: ${input}.`);
			return false;
		}
		if (!side.isChoiceDone()) {
			side.emitChoiceError(`Incomplete choice: ${input} - missing other pokemon`);
			return false;
		}
		const kind = request.teamPreview ? 'team_preview' : request.forceSwitch ? 'forced_switch' : 'turn';
		this.pending[sideid] = {
			side: sideid, turn, kind, rqid,
			choice: side.getChoice(), // exactly what commitChoices() writes to the input log
			action: resolveAction(side, request),
			legal: legalOptions(request),
		};
		if (battle.allChoicesDone()) {
			const committed = battle.sides.filter(s => s.getChoice()).map(s => s.id);
			battle.commitChoices();
			// commitChoices logs sides in p1, p2 order; keep decisions in input-log order.
			for (const id of committed) {
				if (this.pending[id]) this.decisions.push(this.pending[id]);
			}
			this.pending = {};
		}
		return true;
	}

	/** A side that still owes a choice, or null. */
	sideToMove() {
		if (!this.battle || this.battle.ended) return null;
		return this.battle.sides.find(s => s.requestState && !s.isChoiceDone()) || null;
	}

	record(id) {
		const battle = this.battle;
		const text = battle.log.join('\n');
		// Public half of every |split| pair; drop |t:| (wall-clock) lines so output is reproducible.
		const lines = Sim.extractChannelMessages(text, [0])[0].filter(l => !l.startsWith('|t:|'));
		while (lines.length && (lines[lines.length - 1] === '' || lines[lines.length - 1] === '|')) lines.pop();
		return {
			id: id || battleId(battle.format.id, battle.prngSeed),
			format: battle.format.id,
			format_name: battle.format.name,
			players: battle.sides.map(s => s.name),
			seed: battle.prngSeed,
			input_log: battle.inputLog.slice(),
			log: lines.join('\n'),
			winner: battle.ended ? (battle.winner || null) : null,
			turns: battle.turn,
			end: battle.ended ? this.end : 'incomplete',
			decisions: this.decisions,
			// Each player's own team as its first request showed it (random formats build it
			// from the seed): what a player knows of its own side beyond the public log, in the
			// very form a live player gets it (pokeagent/eval/agent.py reads the same fields).
			teams: Object.fromEntries(battle.sides.map(s => [s.id, sheetOf(this.firstRequests[s.id]) || s.team.map(ownSet)])),
		};
	}
}

function errorRecord(id, err) {
	const rec = { id: id === undefined ? null : id };
	if (err.format) Object.assign(rec, { format: err.format.id, format_name: err.format.name });
	rec.error = String(err && err.message || err);
	return rec;
}

// ------------------------------------------------------------- subcommands

/** The fields of a PokemonSet a player knows of its own Pokémon (as in server logs' p1team). */
function ownSet(set) {
	return {
		name: set.name, species: set.species, item: set.item, ability: set.ability,
		moves: set.moves.slice(), level: set.level, teraType: set.teraType, gender: set.gender,
	};
}

/** A team sheet from a request: species as the battle shows it (Minior-Meteor, not Minior). */
function sheetOf(request) {
	if (!request || !request.side) return null;
	return request.side.pokemon.map(p => ({
		name: p.ident.slice(p.ident.indexOf(': ') + 2), species: p.details.split(',')[0],
		item: p.item, ability: p.baseAbility || p.ability, moves: p.moves.slice(), teraType: p.teraType,
	}));
}

function replayItem(item) {
	if (!item || !Array.isArray(item.input_log)) throw new Error('expected {"input_log": [...]}');
	const runner = new BattleRunner();
	for (const line of item.input_log) {
		if (!runner.applyLine(line)) {
			const side = line.slice(1, 3);
			throw new Error(`choice rejected by the simulator: ${line} (${runner.errors[side] || 'no error message'})`);
		}
	}
	if (!runner.battle) throw new Error('input log has no >start line');
	if (!runner.battle.sides.every(Boolean)) throw new Error('input log lacks a >player line');
	// Old servers did not log forfeits in the input log; an optional "winner"
	// lets the caller supply that outcome (applied as the loser's >forcelose).
	const winner = runner.battle.sides.find(s => s.name === item.winner);
	if (!runner.battle.ended && winner) runner.applyLine(`>forcelose ${winner.foe.id}`);
	return runner.record(item.id);
}

async function cmdReplay(args) {
	loadSim(args.showdown);
	const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
	for await (const text of rl) {
		if (!text.trim()) continue;
		let item = null;
		try {
			item = JSON.parse(text);
			emit(replayItem(item));
		} catch (err) {
			emit(errorRecord(item && item.id, err));
		}
	}
}

function makeAI(options) {
	const ai = new Sim.RandomPlayerAI({ write() {} }, options);
	ai.choose = choice => { ai.lastChoice = choice; }; // capture instead of writing to a stream
	return ai;
}

/** RandomPlayerAI never terastallizes (its `mega` option only covers Mega/Ultra/Dynamax); --tera-prob adds it. */
function maybeTera(ai, request, choice, teraProb) {
	if (teraProb === undefined || !/^move /.test(choice) || / (mega|ultra|zmove|dynamax|terastallize)$/.test(choice)) return choice;
	const active = request.active && request.active[0];
	return active && active.canTerastallize && ai.prng.random() < teraProb ? `${choice} terastallize` : choice;
}

function runOneBattle(args, i, format, teams) {
	const seed = deriveSeed(args.seed, i, 'battle');
	const runner = new BattleRunner();
	runner.applyLine(`>start ${JSON.stringify({ formatid: format.id, seed })}`);
	const ais = {};
	for (const sid of ['p1', 'p2']) {
		const opts = { name: args[sid] };
		if (teams) {
			const pick = parseInt(sha256(`${seed}/${sid}/team`).slice(0, 8), 16) % teams.length;
			opts.team = teams[pick];
		} else {
			opts.seed = deriveSeed(args.seed, i, `${sid}-team`); // random formats build the team from this
		}
		runner.applyLine(`>player ${sid} ${JSON.stringify(opts)}`);
		const aiOpts = { seed: deriveSeed(args.seed, i, `${sid}-ai`) };
		// RandomPlayerAI does `options.move || 1.0`, so a literal 0 would mean 1.0.
		if (args.moveProb !== undefined) aiOpts.move = args.moveProb || Number.MIN_VALUE;
		if (args.megaProb !== undefined) aiOpts.mega = args.megaProb;
		ais[sid] = makeAI(aiOpts);
	}
	let side;
	while ((side = runner.sideToMove())) {
		if (runner.battle.turn > TURN_LIMIT) {
			runner.applyLine('>forcetie');
			break;
		}
		const ai = ais[side.id];
		for (let tries = 0; ; tries++) {
			if (tries > MAX_RETRIES) throw new Error(`AI keeps making rejected choices: ${ai.lastChoice}`);
			const request = JSON.parse(runner.requests[side.id].json);
			ai.lastChoice = null;
			ai.receiveRequest(request);
			if (ai.lastChoice === null) throw new Error(`AI made no choice for ${side.id}`);
			if (runner.applyLine(`>${side.id} ${maybeTera(ai, request, ai.lastChoice, args.teraProb)}`)) break;
			// receiveError ignores "[Unavailable choice]" (an updated request follows) and throws otherwise.
			ai.receiveError(new Error(runner.errors[side.id] || 'choice rejected'));
		}
	}
	// The ground truth comes from replaying the finished input log, exactly as `replay`
	// does: a choice the sim rejected first (e.g. a switch while secretly trapped)
	// leaves no trace, just as in a server's input log.
	return replayItem({ input_log: runner.battle.inputLog });
}

function loadTeams(file, format) {
	let text;
	try {
		text = fs.readFileSync(file, 'utf8');
	} catch (err) {
		fail(`cannot read --teams file: ${err.message}`);
	}
	const teams = text.split('\n').map(l => l.trim()).filter(Boolean);
	if (!teams.length) fail(`--teams file has no teams: ${file}`);
	const validator = Sim.TeamValidator.get(format.id);
	teams.forEach((packed, n) => {
		const team = Sim.Teams.unpack(packed);
		const problems = team ? validator.validateTeam(team) : ['cannot unpack team'];
		if (problems) fail(`team on line ${n + 1} of ${file} is not valid for ${format.id}: ${problems.join('; ')}`);
	});
	return teams;
}

function cmdBattles(args) {
	loadSim(args.showdown);
	const format = getFormatOrFail(args.format);
	if (format.gameType !== 'singles') fail(`${format.id} is ${format.gameType}; only singles is supported`);
	let teams = null;
	if (args.teams) teams = loadTeams(args.teams, format);
	else if (!format.team) fail(`${format.id} needs player teams: pass --teams FILE (packed teams, one per line)`);
	// Battle i of a run is a pure function of (seed, i): parallel processes split the indices
	// (--first k --stride K) and together emit exactly what one process would.
	for (let n = 0; n < args.count; n++) {
		const i = args.first + n * args.stride;
		try {
			emit(runOneBattle(args, i, format, teams));
		} catch (err) {
			emit(errorRecord(battleId(format.id, deriveSeed(args.seed, i, 'battle')), err));
		}
	}
}

function cmdTeams(args) {
	loadSim(args.showdown);
	const format = getFormatOrFail(args.format);
	const gen = Sim.Dex.forFormat(format).gen;
	const genFormat = `gen${gen}randombattle`;
	if (!Sim.Dex.formats.get(genFormat).exists) fail(`no random battle generator for gen ${gen}`);
	const generator = Sim.Teams.getGenerator(genFormat, deriveSeed(args.seed, 0, 'teams'));
	const validator = Sim.TeamValidator.get(format.id);
	const maxTries = Math.max(args.count, 1) * TEAM_TRIES_PER_TEAM;
	let made = 0;
	for (let tries = 0; made < args.count; tries++) {
		if (tries >= maxTries) {
			fail(`gave up after ${tries} generated ${genFormat} teams: only ${made}/${args.count} were valid for ${format.id}`);
		}
		const team = generator.getTeam();
		if (validator.validateTeam(team)) continue;
		// The validator may normalise sets; re-check the packed form that callers will use.
		const packed = Sim.Teams.pack(team);
		if (validator.validateTeam(Sim.Teams.unpack(packed))) continue;
		emit({ team: packed });
		made++;
	}
}

// ------------------------------------------------------------- arguments

function getFormatOrFail(id) {
	if (!id) fail('--format FORMATID is required');
	const format = Sim.Dex.formats.get(id);
	if (!format.exists) fail(`unknown format: ${id}`);
	return format;
}

const FLAGS = {
	'--showdown': 'showdown', '--format': 'format', '--count': 'count', '--seed': 'seed', '--teams': 'teams',
	'--move-prob': 'moveProb', '--mega-prob': 'megaProb', '--tera-prob': 'teraProb', '--p1': 'p1', '--p2': 'p2',
	'--first': 'first', '--stride': 'stride',
};
const ALLOWED = {
	battles: ['showdown', 'format', 'count', 'seed', 'teams', 'moveProb', 'megaProb', 'teraProb', 'p1', 'p2', 'first', 'stride'],
	replay: ['showdown'],
	teams: ['showdown', 'format', 'count', 'seed'],
};
const USAGE = `usage:
  node simtool.js battles --showdown PKG --format ID --count N --seed S [--teams FILE] [--move-prob P] [--mega-prob P] [--tera-prob P] [--p1 NAME] [--p2 NAME]
  node simtool.js replay --showdown PKG   < items.jsonl
  node simtool.js teams --showdown PKG --format ID --count N --seed S`;

function parseArgs(argv) {
	const cmd = argv[0];
	if (!ALLOWED[cmd]) fail(`unknown subcommand ${JSON.stringify(cmd || '')}\n${USAGE}`);
	const args = { cmd, p1: 'sim-p1', p2: 'sim-p2' };
	for (let i = 1; i < argv.length; i += 2) {
		const key = FLAGS[argv[i]];
		if (!key || !ALLOWED[cmd].includes(key)) fail(`unknown option for ${cmd}: ${argv[i]}\n${USAGE}`);
		if (i + 1 >= argv.length) fail(`missing value for ${argv[i]}`);
		args[key] = argv[i + 1];
	}
	if (!args.showdown) fail(`--showdown PKG is required\n${USAGE}`);
	if (cmd === 'replay') return args;
	for (const key of ['format', 'count', 'seed']) if (args[key] === undefined) fail(`--${key} is required\n${USAGE}`);
	if (!/^\d+$/.test(args.count)) fail(`--count must be a non-negative integer, got ${args.count}`);
	args.count = parseInt(args.count, 10);
	if (!/^-?\d+$/.test(args.seed)) fail(`--seed must be an integer, got ${args.seed}`);
	for (const [key, fallback, min] of [['first', '0', 0], ['stride', '1', 1]]) {
		const text = args[key] === undefined ? fallback : args[key];
		if (!/^\d+$/.test(text) || parseInt(text, 10) < min) fail(`--${key} must be an integer >= ${min}, got ${text}`);
		args[key] = parseInt(text, 10);
	}
	for (const key of ['moveProb', 'megaProb', 'teraProb']) {
		if (args[key] === undefined) continue;
		const p = Number(args[key]);
		if (!(p >= 0 && p <= 1)) fail(`probabilities must be in [0, 1], got ${args[key]}`);
		args[key] = p;
	}
	if (!args.p1 || !args.p2 || args.p1 === args.p2) fail('--p1 and --p2 must be distinct non-empty names');
	return args;
}

function main() {
	process.stdout.on('error', err => {
		if (err.code === 'EPIPE') process.exit(0); // reader went away: stop quietly
		throw err;
	});
	const args = parseArgs(process.argv.slice(2));
	if (args.cmd === 'battles') return cmdBattles(args);
	if (args.cmd === 'teams') return cmdTeams(args);
	return cmdReplay(args).catch(err => fail(err.stack || err));
}

if (require.main === module) main();
module.exports = { BattleRunner, legalOptions, resolveAction, deriveSeed, loadSim };
