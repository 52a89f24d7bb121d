"""Replay sources on the real fixtures (../shared/replays) and on files built from them."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pokeagent.data import sources
from pokeagent.data.replay import players_from_log, winner_from_log
from pokeagent.data.sources import SourceStats, format_id, iter_replays, open_source


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _log_text(record: dict) -> str:
    log = record["log"]
    return "\n".join(log) if isinstance(log, list) else log


def _fixture_files(shared_replays: Path) -> list[Path]:
    return sorted((shared_replays / "human").glob("*.json")) + sorted(
        (shared_replays / "serverlogs").glob("*.json")
    )


def _balanced(stats: SourceStats) -> bool:
    """Every record read is accounted for exactly once."""
    return stats.read == stats.yielded + stats.skipped.total() + stats.filtered.total()


POKECHAMP_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("battle_id", "gamemode", "elo", "month_year", "text")]
)


def _pokechamp_id(record: dict) -> str:
    """PokéChamp's `battle_id`: the game number, then the date (`904469859-2024-03-05`)."""
    return f"{(record.get('id') or record['roomid']).rsplit('-', 1)[1]}-2024-03-05"


def _pokechamp_table(records: list[dict], *, elo: list[str | None]) -> pa.Table:
    return pa.table(
        {
            "battle_id": [_pokechamp_id(r) for r in records],
            "gamemode": [r.get("formatid") or r["format"] for r in records],
            "elo": elo,
            "month_year": ["2024-03"] * len(records),
            "text": [_log_text(r) for r in records],
        },
        schema=POKECHAMP_SCHEMA,
    )


def _metamon_table(records: list[dict], *, rating: list[int | None]) -> pa.Table:
    return pa.table(
        {
            "id": [r["id"] for r in records],
            "format": [r["format"] for r in records],
            "players": [r["players"] for r in records],
            "log": [r["log"] for r in records],
            "uploadtime": [r["uploadtime"] for r in records],
            "formatid": [r["formatid"] for r in records],
            "rating": pa.array(rating, pa.int64()),
        }
    )


# ---------------------------------------------------------------- real fixtures


def test_every_fixture_file_yields_one_consistent_replay(shared_replays: Path) -> None:
    files = _fixture_files(shared_replays)
    assert len(files) == 24
    for path in files:
        record = _load(path)
        replays = list(open_source(path))
        assert len(replays) == 1, path
        replay = replays[0]
        if "log" in record and isinstance(record["log"], str):  # served replay JSON
            assert replay.id == record["id"] == path.stem
            assert replay.players == tuple(record["players"])
        else:  # server log: the room id without `battle-`
            room = record.get("roomid") or record["id"]
            assert replay.id == room.removeprefix("battle-")
            assert replay.players == (record["p1"], record["p2"])
        assert replay.format == format_id(record.get("formatid") or record["format"])
        assert replay.players == players_from_log(replay.log)
        lines = [line for line in replay.log.split("\n") if line.strip()]
        assert lines and all(line.startswith("|") for line in lines), path
        assert replay.finished
        assert replay.winner == winner_from_log(replay.log)
        assert replay.winner is None or replay.winner in replay.players
        assert replay.source == str(path)


def test_fixtures_checked_by_hand(shared_replays: Path) -> None:
    human, server = shared_replays / "human", shared_replays / "serverlogs"

    (draft,) = open_source(human / "gen9draft-2058494320.json")
    assert (draft.id, draft.format, draft.players) == (
        "gen9draft-2058494320",
        "gen9draft",
        ("puffelmaedchen", "Bene"),
    )
    assert draft.winner == "Bene" and draft.ratings is None and draft.uploadtime == 1707844869

    (tie,) = open_source(human / "smogtours-gen2ou-672504.json")
    assert tie.format == "gen2ou" and tie.winner is None and tie.finished

    (gen1,) = open_source(server / "gen1ou__log.1.json")
    assert (gen1.id, gen1.format, gen1.players) == (
        "gen1ou-2",  # 2019 server: `id`, no `roomid`
        "gen1ou",
        ("test-player-b", "test-player-a"),
    )
    assert gen1.ratings == {"p1": 1900, "p2": 1750}  # rpr from p1rating/p2rating dicts
    assert gen1.winner == "test-player-a"
    assert gen1.extra["inputLog"][0].startswith(">version")
    assert gen1.teams["p1"][0]["species"] == "Starmie"

    (gen9,) = open_source(server / "gen9ubers__log.1.json")
    assert gen9.id == "gen9ubers-11478" and gen9.format == "gen9ubers"
    assert gen9.ratings == {"p1": 1900, "p2": 1750}

    (half,) = open_source(server / "gen7ubers__log.4.json")
    assert half.ratings == {"p1": 1900, "p2": None}  # p2rating is null

    # The record says test-player-a won, but the log ends in `|tie`: the log wins.
    (odd,) = open_source(server / "gen7challengecup1v1__log.3.json")
    assert _load(server / "gen7challengecup1v1__log.3.json")["winner"] == "test-player-a"
    assert odd.winner is None and odd.finished and odd.ratings is None


def test_folders_are_recursive_and_deterministic(shared_replays: Path, tmp_path: Path) -> None:
    for path in _fixture_files(shared_replays):
        shutil.copy(path, tmp_path)
    nested = tmp_path / "b" / "c"
    nested.mkdir(parents=True)
    for name in ("gen7ubers__log.1.json", "gen7ubers__log.2.json"):
        (tmp_path / name).rename(nested / name)
    (tmp_path / "README.md").write_text("not a replay")
    (tmp_path / ".cache").mkdir()
    shutil.copy(shared_replays / "human" / "gen7ou-904469859.json", tmp_path / ".cache")

    stats = SourceStats()
    first = [r.id for r in iter_replays([tmp_path], stats=stats)]
    second = [r.id for r in open_source(tmp_path)]
    assert first == second
    assert len(first) == len(set(first)) == 24
    assert first[:3] == ["gen7ubers-1", "gen7ubers-2", "gen1ou-2"]  # b/c/ sorts before gen*
    assert stats.read == stats.yielded == 24 and not stats.skipped  # README and .cache passed over
    # The shared folder itself (README.md at its top) reads the same 24.
    assert sorted(r.id for r in open_source(shared_replays)) == sorted(first)


def test_raw_protocol_logs(shared_replays: Path, tmp_path: Path) -> None:
    served = _load(shared_replays / "human" / "gen7ou-904469859.json")
    (tmp_path / "gen7ou-904469859.log").write_text(served["log"], encoding="utf-8")
    server = _load(shared_replays / "serverlogs" / "gen9ubers__log.3.json")
    crlf = "\r\n".join(server["log"]).encode()  # saved on Windows
    (tmp_path / "battle-gen9ubers-11480.txt").write_bytes(crlf)
    no_tier = "\n".join(line for line in server["log"] if not line.startswith("|tier|"))
    (tmp_path / "gen9ubers-77.log").write_text(no_tier, encoding="utf-8")

    by_id = {r.id: r for r in open_source(tmp_path)}
    assert set(by_id) == {"gen7ou-904469859", "gen9ubers-11480", "gen9ubers-77"}
    gen7 = by_id["gen7ou-904469859"]
    # `|player|p1|FullLifeGames|35`: avatar, no rating, no trailing `|`.
    assert gen7.players == ("FullLifeGames", "Doc Main") and gen7.ratings is None
    assert gen7.format == "gen7ou" and gen7.winner == "FullLifeGames"
    gen9 = by_id["gen9ubers-11480"]
    assert gen9.players == ("test-player-a", "test-player-b") and "\r" not in gen9.log
    assert gen9.winner == "test-player-a"
    assert gen9.uploadtime == int(server["log"][2].removeprefix("|t:|"))  # first `|t:|` line
    assert by_id["gen9ubers-77"].format == "gen9ubers"  # from the file name


# ---------------------------------------------------------------- JSONL


def _mixed_lines(shared_replays: Path) -> list[dict]:
    served = _load(shared_replays / "human" / "smogtours-gen9ou-733546.json")
    server = _load(shared_replays / "serverlogs" / "gen7ubers__log.5.json")
    ours = {  # pokeagent generate's replays.jsonl line
        "id": "gen9randombattle-7",
        "format": "[Gen 9] Random Battle",
        "formatid": "gen9randombattle",
        "players": [server["p1"], server["p2"]],
        "log": _log_text(server).replace("[Gen 7] Ubers", "[Gen 9] Random Battle"),
        "rating": 1500,
        "uploadtime": 1700000000,
    }
    champ = {
        "battle_id": "gen9ou-1",
        "gamemode": "gen9ou",
        "elo": "1600-1799",
        "month_year": "2024-03",
        "text": served["log"],
    }
    return [served, server, ours, champ]


@pytest.mark.parametrize("name", ["mixed.jsonl", "mixed.jsonl.gz"])
def test_jsonl_of_mixed_shapes(shared_replays: Path, tmp_path: Path, name: str) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _mixed_lines(shared_replays))
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())

    replays = list(open_source(path))
    assert [r.id for r in replays] == [
        "smogtours-gen9ou-733546",
        "gen7ubers-5",
        "gen9randombattle-7",
        "gen9ou-1",
    ]
    assert [r.format for r in replays] == ["gen9ou", "gen7ubers", "gen9randombattle", "gen9ou"]
    assert [r.source for r in replays] == [f"{path}:line {i}" for i in (1, 2, 3, 4)]
    assert replays[1].winner == "test-player-b" and replays[1].ratings == {"p1": 1900, "p2": 1900}
    assert replays[2].ratings == {"p1": 1500, "p2": 1500}  # served `rating` for both sides
    assert replays[3].players == ("jealousy jealousy", "amaterus")
    assert replays[3].ratings == {"p1": 1600, "p2": 1600}


# ---------------------------------------------------------------- parquet


def test_parquet_pokechamp_rows(shared_replays: Path, tmp_path: Path) -> None:
    records = [_load(p) for p in _fixture_files(shared_replays)[:6]]
    bands = ["1400-1599", "1800+", "<1000", None, "1200-1399", "1000-1199"]
    path = tmp_path / "pokechamp.parquet"
    pq.write_table(_pokechamp_table(records, elo=bands), path)

    replays = list(open_source(path))
    # `<number>-<date>` ids become the replay server's `<formatid>-<number>`.
    assert [r.id for r in replays] == [
        "gen7ou-904469859",
        "gen9draft-2058494320",
        "gen1ou-733374",
        "gen2ou-672504",
        "gen9ou-733546",
        "gen1ou-2",
    ]
    assert replays[0].format == "gen7ou" and replays[0].players == ("FullLifeGames", "Doc Main")
    assert replays[0].extra == {
        "elo_band": "1400-1599",
        "month_year": "2024-03",
        "battle_id": "904469859-2024-03-05",
    }
    assert [r.ratings for r in replays[:4]] == [
        {"p1": 1400, "p2": 1400},
        {"p1": 1800, "p2": 1800},
        None,  # "<1000" has no lower bound
        None,
    ]
    assert replays[3].winner is None and replays[2].winner == "Green on fire"
    assert replays[0].source == f"{path}:row 0"


def test_parquet_rating_in_the_log_beats_the_band(shared_replays: Path, tmp_path: Path) -> None:
    record = _load(shared_replays / "human" / "smogtours-gen9ou-733546.json")
    record["log"] = record["log"].replace(
        "|player|p1|jealousy jealousy|#scl1islanders|",
        "|player|p1|jealousy jealousy|#scl1islanders|1712",
    )
    path = tmp_path / "one.parquet"
    pq.write_table(_pokechamp_table([record], elo=["1400-1599"]), path)
    (replay,) = open_source(path)
    assert replay.ratings == {"p1": 1712, "p2": 1400}


def test_parquet_metamon_rows(shared_replays: Path, tmp_path: Path) -> None:
    records = [_load(p) for p in sorted((shared_replays / "human").glob("*.json"))]
    path = tmp_path / "metamon.parquet"
    table = _metamon_table(records, rating=[1650, None, 1200, None, 1800])
    pq.write_table(table.append_column("views", pa.array([1] * len(records))), path)

    replays = list(open_source(path))
    assert [r.id for r in replays] == [r["id"] for r in records]
    assert [r.players for r in replays] == [tuple(r["players"]) for r in records]
    assert replays[0].ratings == {"p1": 1650, "p2": 1650} and replays[1].ratings is None
    assert [r.winner for r in replays] == [winner_from_log(r["log"]) for r in records]


METAMON_FIELDS = ("id", "format", "players", "log", "uploadtime", "formatid", "rating")


def metamon_upload_row(record: dict) -> dict:
    """A row as Metamon's uploader writes it (metamon/data/replay_dataset/raw_replays/
    upload_to_hf.py): the seven fields only, each `str(value)`, `"MISSING"` where absent."""
    return {k: str(record[k]) if k in record else "MISSING" for k in METAMON_FIELDS}


def test_metamon_placeholders_are_absent_values(shared_replays: Path, tmp_path: Path) -> None:
    human = {p.stem: _load(p) for p in sorted((shared_replays / "human").glob("*.json"))}
    full = dict(human["gen7ou-904469859"], rating=1650)
    # Imported from PokéChamp: no formatid, players or rating, a date that failed to parse.
    imported = {
        k: v for k, v in human["smogtours-gen9ou-733546"].items() if k in ("id", "log", "format")
    } | {"id": "gen9ou-733546", "format": "None", "uploadtime": 0}
    no_id = {k: v for k, v in human["smogtours-gen1ou-733374"].items() if k != "id"}
    no_log = dict(human["smogtours-gen2ou-672504"], log=None)
    negative = dict(human["gen9draft-2058494320"], uploadtime=-1, formatid="MISSING")
    rows = [metamon_upload_row(r) for r in (full, imported, no_id, no_log, negative)]
    assert rows[0]["players"] == "['FullLifeGames', 'Doc Main']" and rows[0]["rating"] == "1650"
    assert rows[1]["formatid"] == "MISSING" and rows[1]["format"] == "None"
    assert rows[1]["uploadtime"] == "0" and rows[3]["log"] == "None"
    path = tmp_path / "metamon.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    stats = SourceStats()
    replays = list(iter_replays([path], stats=stats))
    assert stats.skipped == {"no log": 1}
    assert [r.id for r in replays] == [
        "gen7ou-904469859",
        "gen9ou-733546",
        "metamon-2",  # the file name and row stand in for a missing id
        "gen9draft-2058494320",
    ]
    assert [r.format for r in replays] == ["gen7ou", "gen9ou", "gen1ou", "gen9draft"]
    assert replays[0].players == ("FullLifeGames", "Doc Main")
    assert replays[0].ratings == {"p1": 1650, "p2": 1650} and replays[1].ratings is None
    assert replays[0].uploadtime == 1557078294
    # Upload time 0 or less is unknown: the log's first |t:| stands in (never 1970).
    first_stamp = int(human["smogtours-gen9ou-733546"]["log"].split("|t:|")[1].split()[0])
    assert replays[1].uploadtime == first_stamp
    assert replays[3].uploadtime == int(
        human["gen9draft-2058494320"]["log"].split("|t:|")[1].split()[0]
    )
    assert replays[2].extra == {"fallback_id": True} and "fallback_id" not in replays[0].extra

    # A --formats filter judges the recovered format, not the placeholder.
    kept = [r.id for r in iter_replays([path], formats=["gen9ou", "gen9draft"])]
    assert kept == ["gen9ou-733546", "gen9draft-2058494320"]


def test_pokechamp_ids_become_the_replay_servers(shared_replays: Path, tmp_path: Path) -> None:
    record = _load(shared_replays / "human" / "smogtours-gen9ou-733546.json")
    log = record["log"]
    no_stamps = "\n".join(line for line in log.split("\n") if not line.startswith("|t:|"))
    rows = [
        {"battle_id": "733546-2023-12-03", "gamemode": "gen9ou", "text": log},
        {"battle_id": "733547-2023-12-04", "gamemode": "MISSING", "text": no_stamps},
        {"battle_id": "gen9ou-733548", "gamemode": "gen9ou", "text": log},  # already one
        {"battle_id": "733549", "gamemode": "[Gen 9] OU", "text": log},
    ]
    path = tmp_path / "champ.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    replays = list(open_source(path))
    assert [r.id for r in replays] == [
        "gen9ou-733546",
        "gen9ou-733547",  # the format from |tier|
        "gen9ou-733548",
        "gen9ou-733549",
    ]
    assert [r.extra["battle_id"] for r in replays] == [row["battle_id"] for row in rows]
    # No |t:| line: the date in the id stands in for the upload time (that day, UTC).
    assert replays[1].uploadtime == 1701648000


def test_parquet_streams_in_batches(shared_replays: Path, tmp_path: Path, monkeypatch) -> None:
    records = [_load(p) for p in sorted((shared_replays / "human").glob("*.json"))] * 4
    for i, record in enumerate(records):
        record = dict(record, id=f"{record['id']}-{i}")
        records[i] = record
    path = tmp_path / "metamon.parquet"
    pq.write_table(_metamon_table(records, rating=[None] * len(records)), path)

    pulled: list[int] = []

    class CountingParquetFile(pq.ParquetFile):
        def iter_batches(self, *args, **kwargs):
            for batch in super().iter_batches(*args, **kwargs):
                pulled.append(batch.num_rows)
                yield batch

    monkeypatch.setattr(sources, "PARQUET_BATCH_ROWS", 2)
    monkeypatch.setattr(sources.pq, "ParquetFile", CountingParquetFile)
    stream = open_source(path)
    first = next(stream)
    assert first.id == records[0]["id"] and pulled == [2]  # one small batch decoded, no more
    rest = list(stream)
    assert [r.id for r in [first, *rest]] == [r["id"] for r in records]
    assert pulled == [2] * 10


# ---------------------------------------------------------------- filters


def test_filters(shared_replays: Path) -> None:
    stats = SourceStats()
    ubers = list(iter_replays([shared_replays], formats={"[Gen 7] Ubers"}, stats=stats))
    assert len(ubers) == 8 and {r.format for r in ubers} == {"gen7ubers"}
    assert stats.filtered == {"format": 16} and _balanced(stats)

    stats = SourceStats()
    strong = list(iter_replays([shared_replays], min_rating=1750, stats=stats))
    assert strong and all(
        all(v >= 1750 for v in r.ratings.values() if v is not None) for r in strong
    )
    assert "gen7ubers-4" in {r.id for r in strong}  # {p1: 1900, p2: unknown}
    assert "gen1ou-2" in {r.id for r in strong}  # 1900 / 1750: the bound is inclusive
    assert stats.filtered["no rating"] == 6  # 5 human replays + the rating-less tie
    assert stats.filtered["rating below min"] > 0 and _balanced(stats)

    both = list(iter_replays([shared_replays], formats=["gen7ubers"], min_rating=1900))
    assert {r.id for r in both} == {"gen7ubers-4", "gen7ubers-5", "gen7ubers-7", "gen7ubers-12"}


# ---------------------------------------------------------------- bad input


def test_bad_input_is_skipped_with_named_reasons(
    shared_replays: Path, tmp_path: Path, caplog
) -> None:
    good = _mixed_lines(shared_replays)[:2]
    lines = [json.dumps(good[0]), "{not json", json.dumps(good[1]), json.dumps({"views": 3})]
    lines += [json.dumps(dict(good[0], id="nolog", log=None)), "[1, 2]", ""]
    broken_utf8 = b'{"id": "\xff"}'
    (tmp_path / "a.jsonl").write_bytes("\n".join(lines).encode() + broken_utf8 + b"\n")

    records = [_load(p) for p in sorted((shared_replays / "human").glob("*.json"))]
    good_parquet = tmp_path / "b.parquet"
    pq.write_table(_metamon_table(records, rating=[None] * 5), good_parquet)
    truncated = tmp_path / "c.parquet"
    truncated.write_bytes(good_parquet.read_bytes()[: good_parquet.stat().st_size // 2])

    null_log = tmp_path / "d.parquet"
    table = _pokechamp_table(records[:2], elo=["1400-1599"] * 2)
    pq.write_table(
        table.set_column(4, "text", pa.array([None, table["text"][1].as_py()])), null_log
    )

    gz_text = "".join(json.dumps(r) + "\n" for r in records).encode()
    (tmp_path / "e.jsonl.gz").write_bytes(b"this is not gzip at all")
    (tmp_path / "f.jsonl.gz").write_bytes(gzip.compress(gz_text)[:-4000])  # cut off mid-stream
    (tmp_path / "g.json").write_text('{"id": "x", "log"')  # a truncated download
    (tmp_path / "h.log").write_text("just some notes\n")

    stats = SourceStats()
    with caplog.at_level(logging.WARNING, logger="pokeagent.data.sources"):
        replays = list(iter_replays([tmp_path], stats=stats))
    ids = [r.id for r in replays]
    assert ids[:2] == ["smogtours-gen9ou-733546", "gen7ubers-5"]  # around the garbage line
    assert ids[2:7] == [r["id"] for r in records]  # b.parquet, fully
    assert ids[7] == records[1]["id"]  # d.parquet: the row with a log
    assert len(ids) > 8 and set(ids[8:]) <= {r["id"] for r in records}  # f: the part before the cut
    assert stats.skipped == {
        "bad json": 3,  # "{not json", the broken UTF-8 line, g.json
        "unknown shape": 1,
        "no log": 2,  # a.jsonl's null log, d.parquet's null text
        "not a JSON object": 1,
        "corrupt parquet": 1,
        "corrupt gzip": 2,
        "not a protocol log": 1,
    }
    assert _balanced(stats)
    messages = caplog.text
    assert f"{tmp_path / 'a.jsonl'}:line 2: bad json" in messages
    assert f"{tmp_path / 'd.parquet'}:row 0: no log" in messages
    assert f"{tmp_path / 'c.parquet'}: corrupt parquet" in messages
    assert f"{tmp_path / 'e.jsonl.gz'}:line 1: corrupt gzip" in messages


def test_a_corrupt_page_loses_only_its_row_group(shared_replays: Path, tmp_path: Path) -> None:
    records = [_load(p) for p in sorted((shared_replays / "human").glob("*.json"))] * 4
    path = tmp_path / "m.parquet"
    pq.write_table(_metamon_table(records, rating=[None] * 20), path, row_group_size=5)
    column = pq.ParquetFile(path).metadata.row_group(2).column(3)  # `log` of rows 10-14
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + column.total_compressed_size] = bytes(column.total_compressed_size)
    path.write_bytes(bytes(data))

    stats = SourceStats()
    replays = list(iter_replays([path], stats=stats))
    assert [r.id for r in replays] == [r["id"] for r in records[:10] + records[15:]]
    assert stats.skipped == {"corrupt parquet": 1} and _balanced(stats)


def test_a_missing_path_is_an_error_before_anything_is_read(shared_replays: Path) -> None:
    missing = shared_replays / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        iter_replays([shared_replays, missing])
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        open_source(missing)


# ---------------------------------------------------------------- memory


@pytest.mark.slow
def test_memory_stays_flat_over_20k_parquet_rows(shared_replays: Path, tmp_path: Path) -> None:
    logs = [_log_text(_load(p)) for p in sorted((shared_replays / "serverlogs").glob("*.json"))]
    path, rows, chunk = tmp_path / "big.parquet", 20_000, 1_000
    schema = POKECHAMP_SCHEMA
    decompressed = 0
    # Written a chunk at a time and each log made distinct, like a real dump (no dictionary).
    with pq.ParquetWriter(path, schema, use_dictionary=False, compression="zstd") as writer:
        for start in range(0, rows, chunk):
            texts = [
                f"|t:|{1_700_000_000 + i}\n" + logs[i % len(logs)]
                for i in range(start, start + chunk)
            ]
            decompressed += sum(len(t.encode()) for t in texts)
            writer.write_table(
                pa.table(
                    {
                        "battle_id": [f"gen7ubers-{i}" for i in range(start, start + chunk)],
                        "gamemode": ["gen7ubers"] * chunk,
                        "elo": ["1600-1799"] * chunk,
                        "month_year": ["2024-03"] * chunk,
                        "text": texts,
                    },
                    schema=schema,
                )
            )
    assert decompressed > 50e6

    arrow_base, arrow_peak, count = pa.total_allocated_bytes(), 0, 0
    tracemalloc.start()
    try:
        for _replay in open_source(path):
            count += 1
            if count % 100 == 0:
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_base)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert python_peak < decompressed / 20, (python_peak, decompressed)
    assert arrow_peak < decompressed / 5, (arrow_peak, decompressed)
