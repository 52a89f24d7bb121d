"""`pokeagent download` against a stand-in for the Hugging Face Hub on 127.0.0.1.

The stand-in speaks the few endpoints huggingface_hub and the downloader use (repo info at a
revision, recursive tree listing with Link pagination, refs, `resolve` with a redirect to a
"CDN" that honours Range) and serves parquet files in both datasets' real schemas, built from
the shared replays. It counts every request, can drop a connection mid-file, and can require a
token.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_sources import metamon_upload_row

from pokeagent.data import hub as hubmod
from pokeagent.data import hub_fetch, hub_filter
from pokeagent.data.hub import DownloadConfig, HubError, download
from pokeagent.data.hub_filter import path_hints
from pokeagent.data.sources import _js_date, format_id, iter_replays

# ---------------------------------------------------------------- the stand-in Hub


class FakeHub:
    """Dataset repos by id: refs (name -> commit) and commits (sha -> {path: bytes})."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.drop_after: dict[str, int] = {}  # sha256 -> bytes sent before the connection drops
        self.busy_once: set[str] = set()  # sha256s answered once with 503 (a busy server)
        self.token: str | None = None  # when set, API and resolve calls need it
        self.page_size = 3  # tree entries per page: the client must follow Link headers
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def add_repo(
        self, repo_id: str, files: dict[str, bytes], tags=("v1",), main: dict | None = None
    ) -> str:
        """A repo whose tags (and `main`) point at one commit holding `files`; with `main`
        given, `main` has moved on to a later commit holding those files instead."""
        commits = {}
        for content in (files, main):
            if content is not None:
                blob = b"".join(content[p] for p in sorted(content))
                commits[hashlib.sha1(repo_id.encode() + blob).hexdigest()] = content
                for data in content.values():
                    self.blobs[hashlib.sha256(data).hexdigest()] = data
        sha, head = next(iter(commits)), list(commits)[-1]
        self.repos[repo_id] = {
            "refs": {"main": head, **{t: sha for t in tags}},
            "tags": list(tags),
            "commits": commits,
        }
        return sha

    def count(self, kind: str) -> int:
        """Requests of one kind: 'cdn' (file bytes), 'resolve', 'tree', 'info'."""
        with self.lock:
            return sum(1 for _, path, _ in self.requests if _kind(path) == kind)

    def ranges(self) -> list[str | None]:
        with self.lock:
            return [rng for _, path, rng in self.requests if _kind(path) == "cdn"]


def _kind(path: str) -> str:
    if path.startswith("/cdn/"):
        return "cdn"
    if "/resolve/" in path:
        return "resolve"
    if "/tree/" in path:
        return "tree"
    if path.endswith("/refs"):
        return "refs"
    return "info"


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(".parquet")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head=False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data, headers=None):
        self._send(
            200, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _error(self, status: int, code: str, message: str, head=False):
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message}, head)

    def _serve(self, head: bool):
        url = urlsplit(self.path)
        path = url.path
        hub = self.hub
        with hub.lock:
            hub.requests.append((self.command, path, self.headers.get("Range")))
        if path.startswith("/cdn/"):
            return self._cdn(path.removeprefix("/cdn/"), head)
        if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
            return self._error(401, "RepoNotFound", "Repository not found", head)
        parts = path.strip("/").split("/")
        api = parts[0] == "api"
        if api:
            parts = parts[1:]
        if len(parts) < 3 or parts[0] != "datasets":
            return self._error(404, "RepoNotFound", "Repository not found", head)
        repo_id = f"{parts[1]}/{parts[2]}"
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        rest = parts[3:]
        if api and rest == ["refs"]:
            return self._json(
                {
                    "branches": [
                        {
                            "name": "main",
                            "ref": "refs/heads/main",
                            "targetCommit": repo["refs"]["main"],
                        }
                    ],
                    "converts": [],
                    "tags": [
                        {"name": t, "ref": f"refs/tags/{t}", "targetCommit": repo["refs"][t]}
                        for t in repo["tags"]
                    ],
                }
            )
        if api and not rest:  # repo info without a revision: main
            rest = ["revision", "main"]
        if len(rest) < 2:
            return self._error(404, "EntryNotFound", "not found", head)
        revision = unquote(rest[1])
        sha = repo["refs"].get(revision) or (revision if revision in repo["commits"] else None)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        files = repo["commits"][sha]
        if api and rest[0] == "revision":
            siblings = [{"rfilename": p} for p in sorted(files)]
            return self._json({"id": repo_id, "sha": sha, "private": False, "siblings": siblings})
        if api and rest[0] == "tree":
            return self._tree(files, "/".join(unquote(p) for p in rest[2:]), url.query)
        if not api and rest[0] == "resolve":
            return self._resolve(sha, files, "/".join(unquote(p) for p in rest[2:]), head)
        return self._error(404, "EntryNotFound", "not found", head)

    def _tree(self, files: dict[str, bytes], prefix: str, query: str):
        params = parse_qs(query)
        recursive = params.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            inner = path[len(prefix) + 1 :] if prefix else path
            pieces = inner.split("/")
            for depth in range(1, len(pieces)):
                folder = "/".join(([prefix] if prefix else []) + pieces[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append(
                        {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder}
                    )
            if not recursive and len(pieces) > 1:
                continue
            data = files[path]
            entry = {"type": "file", "oid": _git_oid(data), "size": len(data), "path": path}
            if _is_lfs(path):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        cursor = int(params.get("cursor", ["0"])[0])
        page = entries[cursor : cursor + self.hub.page_size]
        headers = {}
        if cursor + self.hub.page_size < len(entries):
            query = f"recursive={str(recursive).lower()}&cursor={cursor + self.hub.page_size}"
            host = self.headers.get("Host")
            headers["Link"] = f'<http://{host}{urlsplit(self.path).path}?{query}>; rel="next"'
        self._json(page, headers)

    def _resolve(self, sha: str, files: dict[str, bytes], path: str, head: bool):
        data = files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", head)
        headers = {"X-Repo-Commit": sha}
        if _is_lfs(path):
            oid = hashlib.sha256(data).hexdigest()
            headers.update(
                {
                    "Location": f"/cdn/{oid}",
                    "X-Linked-Etag": f'"{oid}"',
                    "X-Linked-Size": len(data),
                    "ETag": f'"{_git_oid(data)}"',
                }
            )
            return self._send(302, b"", headers, head)
        headers["ETag"] = f'"{_git_oid(data)}"'
        return self._send(200, data, headers, head)

    def _cdn(self, oid: str, head: bool):
        data = self.hub.blobs.get(oid)
        if data is None:
            return self._send(404, b"no such blob", head=head)
        start, end = 0, len(data)
        status, headers = 200, {"Accept-Ranges": "bytes", "ETag": f'"{oid}"'}
        rng = self.headers.get("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first)
            end = int(last) + 1 if last else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        with self.hub.lock:
            busy = oid in self.hub.busy_once
            self.hub.busy_once.discard(oid)
        if busy:
            return self._send(503, b"busy", head=head)
        with self.hub.lock:
            cut = self.hub.drop_after.pop(oid, None) if not rng else None
        if cut is None:
            return self._send(status, body, headers, head)
        # Announce the whole body, send part of it, and hang up: a dropped connection.
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    hub = FakeHub()
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(hub_fetch, "RETRY_WAIT_S", 0.01)
    monkeypatch.setattr(hub_filter, "BATCH_ROWS", 3)  # row groups hold 4: batches cut across them
    yield hub
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- datasets built from the shared replays


def _records(shared_replays: Path) -> list[dict]:
    paths = sorted((shared_replays / "human").glob("*.json")) + sorted(
        (shared_replays / "serverlogs").glob("*.json")
    )
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def _served(record: dict) -> dict:
    """The served replay shape of a fixture (server logs converted to it)."""
    if isinstance(record["log"], str):  # a served replay already is one
        return record
    sides = [record.get("p1rating"), record.get("p2rating")]
    known = [s["rpr"] for s in sides if isinstance(s, dict)]
    return {
        "id": (record.get("roomid") or record["id"]).removeprefix("battle-"),
        "format": record["format"],
        "players": [record["p1"], record["p2"]],
        "log": "\n".join(record["log"]),
        "uploadtime": _js_date(record["timestamp"]),
        "formatid": record.get("formatid") or format_id(record["format"]),
        "rating": min(known) if known else None,
    }


IMPORTED = "gen7challengecup1v1"
"""Battles the Metamon stand-in holds as Metamon imported them from PokéChamp."""


def _metamon_row(record: dict) -> dict:
    """A Metamon raw row as its uploader writes it: strings, `"MISSING"` where absent.

    The `IMPORTED` format's battles come as Metamon's PokéChamp importer wrote them: id
    `<gamemode>-<number>`, `format`, `uploadtime` 0 (the date did not parse) and the log only
    (with a `|t:|` line, as the replay site's logs have); one of them has lost its `format` too
    (`None`), so only the log's `|tier|` names it.
    """
    served = _served(record)
    if served["formatid"] == IMPORTED:
        first, rest = served["log"].split("\n", 1)
        served = {
            "id": served["id"],
            "format": None if served["id"].endswith("-9") else IMPORTED,
            "uploadtime": 0,
            "log": f"{first}\n|t:|{served['uploadtime']}\n{rest}",
        }
    return metamon_upload_row(served)


BANDS = ["1000-1199", "1200-1399", "1400-1599", "1600-1799", "1800+", "<1000"]
MONTHS = ["January2024", "February2024", "March2024"]


def _pokechamp_row(index: int, record: dict) -> dict:
    """PokéChamp's shape: `battle_id` is the game number and a date, `904469859-2024-01-07`."""
    row = _served(record)
    number = row["id"].rsplit("-", 1)[1]
    return {
        "battle_id": f"{number}-2024-0{index % 3 + 1}-{index % 28 + 1:02d}",
        "gamemode": row["formatid"],
        "elo": BANDS[index % len(BANDS)],
        "month_year": MONTHS[index % len(MONTHS)],
        "text": row["log"],
    }


def _rows(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def _parquet(rows: list[dict], row_group_size: int = 4) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=row_group_size)
    return buf.getvalue()


README = b"---\nlicense: mit\n---\n# stand-in\n"


@pytest.fixture
def metamon(fake_hub, shared_replays):
    """metamon-raw-replays at tag v6: rows sorted by formatid as stored ("MISSING" first) over
    data/train-0000X-of-00003.parquet. `main` has moved on to a later commit (one more file)."""
    rows = sorted(
        (_metamon_row(r) for r in _records(shared_replays)), key=lambda r: (r["formatid"], r["id"])
    )
    files = {"README.md": README, ".gitattributes": b"*.parquet filter=lfs\n"}
    for i in range(3):
        files[f"data/train-{i:05d}-of-00003.parquet"] = _parquet(rows[i * 8 : (i + 1) * 8])
    later = {k: v for k, v in files.items() if not k.endswith("00002-of-00003.parquet")}
    later["data/train-00002-of-00004.parquet"] = _parquet(rows[16:20])
    later["data/train-00003-of-00004.parquet"] = _parquet(rows[20:])
    sha = fake_hub.add_repo("jakegrigsby/metamon-raw-replays", files, tags=("v5", "v6"), main=later)
    return fake_hub, files, sha


@pytest.fixture
def pokechamp(fake_hub, shared_replays):
    """pokechamp: data/train-*.parquet (2 files) and data/test-*.parquet (1 file), the ladder
    battles of the fixtures (PokéChamp has no tournament games)."""
    records = [r for r in _records(shared_replays) if not r.get("id", "").startswith("smogtours")]
    rows = [_pokechamp_row(i, r) for i, r in enumerate(records)]
    assert len(rows) == 21
    files = {
        "README.md": README,
        "data/train-00000-of-00002.parquet": _parquet(rows[:9]),
        "data/train-00001-of-00002.parquet": _parquet(rows[9:18]),
        "data/test-00000-of-00001.parquet": _parquet(rows[18:]),
    }
    fake_hub.add_repo("milkkarten/pokechamp", files)
    return fake_hub, files, rows


def _champ_id(row: dict) -> str:
    """The id `sources` gives a PokéChamp row: the replay server's `<formatid>-<number>`."""
    return f"{row['gamemode']}-{row['battle_id'].split('-')[0]}"


def _write_all(files: dict[str, bytes], folder: Path) -> Path:
    """The whole dataset on local disk: the reference the filters are checked against."""
    for path, data in files.items():
        if path.endswith(".parquet"):
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return folder


def _output_ids(out: Path) -> list[str]:
    return [r.id for r in iter_replays([out / "replays"])]


# ---------------------------------------------------------------- tests


def test_metamon_filters_select_exactly_the_expected_games(metamon, tmp_path):
    hub, files, sha = metamon
    cfg = DownloadConfig(
        dataset="metamon-raw",
        formats=["gen9ubers", "[Gen 1] OU"],
        min_rating=1500,
        out=tmp_path / "out",
    )
    summary = download(cfg, progress=False)

    reference = _write_all(files, tmp_path / "all")
    expected = [
        r.id for r in iter_replays([reference], formats=["gen9ubers", "gen1ou"], min_rating=1500)
    ]
    assert _output_ids(cfg.out) == expected
    # By hand: gen1ou-2 and gen9ubers-11478 are rated 1900/1750; smogtours-gen1ou-733374 is
    # unrated; gen9ubers-11479 and -11480 have a 1450.
    assert expected == ["gen1ou-2", "gen9ubers-11478"]
    assert summary.commit == sha and summary.games == 2
    assert summary.games_by_format == {"gen1ou": {"1600-1799": 1}, "gen9ubers": {"1600-1799": 1}}
    assert summary.filtered["rating below min"] == 2 and summary.filtered["no rating"] == 1
    assert summary.rows_read == 16 and summary.filtered["format"] == 16 - 5

    # Only files whose footer statistics allow gen1ou or gen9ubers were downloaded.
    wanted_files = {
        path
        for path, data in files.items()
        if path.endswith(".parquet")
        and {"gen1ou", "gen9ubers"}
        & set(pq.read_table(io.BytesIO(data)).column("formatid").to_pylist())
    }
    assert len(wanted_files) == 2  # rows are sorted by format: the middle file has neither
    assert summary.files["pruned by stats"] == 3 - len(wanted_files)
    full_gets = [rng for rng in hub.ranges() if rng is None]
    assert len(full_gets) == len(wanted_files) == summary.files["downloaded"]
    assert summary.bytes["downloaded"] == sum(len(files[p]) for p in wanted_files)

    saved = json.loads((cfg.out / "summary.json").read_text())
    assert saved["games"] == 2 and saved["commit"] == sha
    assert saved["games_by_format"]["gen9ubers"] == {"1600-1799": 1}
    assert saved["sources"] and all(s["path"] in wanted_files for s in saved["sources"])


def test_pokechamp_months_splits_and_max_games(pokechamp, tmp_path):
    hub, _, rows = pokechamp
    cfg = DownloadConfig(
        dataset="pokechamp", months=["2024-02"], splits=["train"], out=tmp_path / "a"
    )
    summary = download(cfg, progress=False)
    expected = [_champ_id(r) for r in rows[:18] if r["month_year"] == "February2024"]
    assert _output_ids(cfg.out) == expected and summary.games == len(expected) > 3
    assert summary.files["pruned by path (split)"] == 1  # test-00000-of-00001.parquet, never read
    assert all(
        r["elo"] for r in pq.read_table(cfg.out / "replays").to_pylist()
    )  # columns kept as is
    assert not [p for _, p, _ in hub.requests if "test-00000" in p]
    assert set(pq.read_schema(next((cfg.out / "replays").glob("*.parquet"))).names) == set(rows[0])

    capped = DownloadConfig(
        dataset="milkkarten/pokechamp", max_games=3, out=tmp_path / "b", shard_rows=2
    )
    summary = download(capped, progress=False)
    # Files in path order: data/test-* comes before data/train-*.
    assert _output_ids(capped.out) == [_champ_id(r) for r in rows[18:21]]
    assert [s["rows"] for s in summary.shards] == [2, 1]  # shard_rows splits the output
    assert summary.games_by_format and summary.games == 3
    assert summary.files["unneeded (max games)"] == 2  # both train files


def test_placeholders_and_unknown_upload_times_keep_their_rows(metamon, tmp_path, shared_replays):
    _, files, sha = metamon
    rows = [r for p, d in files.items() if p.endswith(".parquet") for r in _rows(d)]
    imported = [r for r in rows if r["formatid"] == "MISSING"]
    assert len(imported) == 5 and {r["uploadtime"] for r in imported} == {"0"}
    assert [r["format"] for r in imported].count("None") == 1
    assert {r["players"] for r in imported} == {"MISSING"}
    # May 2019 from the logs' |t:| lines: never 1970-01, never "missing" as a format.
    cfg = DownloadConfig(
        dataset="metamon-raw", formats=[IMPORTED], months=["2019-05"], out=tmp_path / "a"
    )
    summary = download(cfg, progress=False)
    assert sorted(_output_ids(cfg.out)) == sorted(r["id"] for r in imported)
    assert summary.games_by_format == {IMPORTED: {"unrated": 5}}
    assert summary.revision == "v6" and summary.commit == sha  # the pinned tag, not main
    epoch = download(
        DownloadConfig(dataset="metamon-raw", months=["1970-01"], out=tmp_path / "b"),
        progress=False,
    )
    assert epoch.games == 0 and epoch.filtered["month"] == 24
    # The served replays' uploadtime is a string of digits: months filter on it too.
    may = download(
        DownloadConfig(dataset="metamon-raw", months=["2019-05"], out=tmp_path / "c"),
        progress=False,
    )
    served = map(_served, _records(shared_replays))
    in_may = [r for r in served if hub_filter.month_of(r["uploadtime"]) == "2019-05"]
    assert may.games == len(in_may) >= 10  # 5 of them known by their |t:| line only


def test_default_revision_is_the_pinned_tag(metamon, tmp_path):
    hub, _, sha = metamon
    assert hub.repos["jakegrigsby/metamon-raw-replays"]["refs"]["main"] != sha
    pinned = download(DownloadConfig(dataset="metamon-raw", out=tmp_path / "a"), progress=False)
    assert (pinned.revision, pinned.commit, pinned.files["listed"]) == ("v6", sha, 3)
    moved = download(
        DownloadConfig(dataset="metamon-raw", revision="main", out=tmp_path / "b"), progress=False
    )
    assert moved.commit != sha and moved.files["listed"] == 4 and moved.games == 24
    assert DownloadConfig(dataset="pokechamp", out=tmp_path).revision == "main"


def test_dropped_connection_resumes_and_a_rerun_fetches_nothing(metamon, tmp_path):
    hub, files, _ = metamon
    target = "data/train-00001-of-00003.parquet"
    oid = hashlib.sha256(files[target]).hexdigest()
    cut = len(files[target]) // 3
    hub.drop_after[oid] = cut
    busy = hashlib.sha256(files["data/train-00002-of-00003.parquet"]).hexdigest()
    hub.busy_once.add(busy)  # a 503 is waited out, not fatal
    cfg = DownloadConfig(dataset="metamon-raw", out=tmp_path / "out", workers=2)
    first = download(cfg, progress=False)
    assert first.games == 24 and first.files["downloaded"] == 3
    ids = _output_ids(cfg.out)
    assert len(ids) == 24

    # The dropped file continued from the bytes it had, not from zero.
    assert [rng for rng in hub.ranges() if rng] == [f"bytes={cut}-"]
    assert not hub.busy_once and hub.count("cdn") == 3 + 2  # one resumed, one retried
    blob = Path(
        tmp_path
        / "hf-home"
        / "pokeagent"
        / "datasets--jakegrigsby--metamon-raw-replays"
        / "blobs"
        / oid
    )
    assert blob.read_bytes() == files[target]

    before = list(hub.requests)
    second = download(cfg, progress=False)
    new = hub.requests[len(before) :]
    assert [_kind(p) for _, p, _ in new if _kind(p) in ("cdn", "resolve")] == []  # no file bytes
    assert second.up_to_date and second.games == 24
    assert _output_ids(cfg.out) == ids  # outputs intact

    # Filters changed: files come from the cache (verified), nothing is fetched.
    third = download(
        DownloadConfig(dataset="metamon-raw", out=tmp_path / "out", formats=["gen9ubers"]),
        progress=False,
    )
    assert third.files["reused"] >= 1 and third.files.get("downloaded", 0) == 0
    assert hub.count("cdn") == len([r for _, p, r in before if _kind(p) == "cdn"])
    assert third.games == 3


def test_interrupted_run_continues_on_the_next_run(metamon, tmp_path):
    hub, files, _ = metamon
    target = "data/train-00002-of-00003.parquet"
    oid = hashlib.sha256(files[target]).hexdigest()
    cut = len(files[target]) // 2
    hub.drop_after[oid] = cut
    cfg = DownloadConfig(dataset="metamon-raw", out=tmp_path / "out", retries=0, workers=1)
    with pytest.raises(HubError, match=r"broke off at .* run the same command again"):
        download(cfg, progress=False)
    blobs = (
        tmp_path / "hf-home" / "pokeagent" / "datasets--jakegrigsby--metamon-raw-replays" / "blobs"
    )
    assert (blobs / f"{oid}.part").stat().st_size == cut

    summary = download(cfg, progress=False)
    assert summary.games == 24 and summary.files["reused"] == 2 and summary.files["downloaded"] == 1
    assert hub.ranges()[-1] == f"bytes={cut}-"  # the rerun asked only for the missing part
    assert (blobs / oid).read_bytes() == files[target] and not (blobs / f"{oid}.part").exists()


def test_a_corrupted_cached_file_is_fetched_again(metamon, tmp_path):
    hub, files, _ = metamon
    cfg = DownloadConfig(dataset="metamon-raw", out=tmp_path / "out")
    download(cfg, progress=False)
    fetched = hub.count("cdn")
    blobs = (
        tmp_path / "hf-home" / "pokeagent" / "datasets--jakegrigsby--metamon-raw-replays" / "blobs"
    )
    target = hashlib.sha256(files["data/train-00000-of-00003.parquet"]).hexdigest()
    data = bytearray((blobs / target).read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    (blobs / target).write_bytes(bytes(data))
    (tmp_path / "out" / "summary.json").unlink()  # not the up-to-date shortcut: check the cache
    summary = download(cfg, progress=False)
    assert hub.count("cdn") == fetched + 1 and summary.files["downloaded"] == 1
    assert (blobs / target).read_bytes() == files["data/train-00000-of-00003.parquet"]


def test_output_packs_into_shards(metamon, tmp_path):
    from pokeagent.data.pack import PackConfig, pack

    cfg = DownloadConfig(
        dataset="metamon-raw", formats=["gen7ubers", "gen9ubers", "gen1ou"], out=tmp_path / "dl"
    )
    summary = download(cfg, progress=False)
    packed = pack(
        PackConfig(
            sources=[str(cfg.out / "replays")], out=tmp_path / "shards", workers=1, val_fraction=0.0
        ),
        progress=False,
    )
    assert packed.replays_read == summary.games == 13  # 8 gen7ubers, 3 gen9ubers, 2 gen1ou
    assert packed.battles_packed + sum(packed.skipped.values()) == 13
    assert packed.battles_packed >= 5 and packed.trajectories["train"] == 2 * packed.battles_packed
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert set(manifest["formats"]) == {"gen1ou", "gen7ubers", "gen9ubers"}
    assert sum(s["samples"] for s in manifest["shards"]["train"]) == 2 * packed.battles_packed


def test_metamon_and_pokechamp_pack_each_battle_once(metamon, pokechamp, tmp_path):
    from pokeagent.data.pack import PackConfig, pack
    from pokeagent.data.shards import read_shard

    outs = {}
    for dataset in ("metamon-raw", "pokechamp"):
        outs[dataset] = tmp_path / dataset
        download(DownloadConfig(dataset=dataset, out=outs[dataset]), progress=False)
    champ_ids = set(_output_ids(outs["pokechamp"]))
    assert len(champ_ids) == 21 and champ_ids < set(_output_ids(outs["metamon-raw"]))

    def packed(sources, out):
        cfg = PackConfig(sources=[str(s / "replays") for s in sources], out=out, workers=1)
        summary = pack(cfg, progress=False)
        keys = [s["key"] for shard in sorted(out.glob("*.tar")) for s in read_shard(shard)]
        assert len(keys) == len(set(keys))
        return summary, set(keys)

    both, keys = packed([outs["metamon-raw"], outs["pokechamp"]], tmp_path / "both")
    alone, alone_keys = packed([outs["metamon-raw"]], tmp_path / "alone")
    assert both.replays_read == 24 + 21 and both.skipped.pop("duplicate battle") == 21
    assert both.skipped == alone.skipped and both.battles_packed == alone.battles_packed > 10
    assert keys == alone_keys


def test_token_is_sent_from_hf_token(metamon, tmp_path, monkeypatch):
    hub, _, _ = metamon
    hub.token = "hf_secret"
    cfg = DownloadConfig(dataset="metamon-raw", formats=["gen1ou"], out=tmp_path / "out")
    with pytest.raises(HubError, match="HF_TOKEN"):
        download(cfg, progress=False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert download(cfg, progress=False).games == 2  # gen1ou-2, smogtours-gen1ou-733374


def test_unknown_dataset_and_missing_revision_are_clear(metamon, tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'pokemon'.*metamon-raw.*pokechamp"):
        DownloadConfig(dataset="pokemon", out=tmp_path)
    cfg = DownloadConfig(dataset="metamon-raw", revision="v9", out=tmp_path / "out")
    with pytest.raises(
        HubError, match=r"revision 'v9' does not exist .*\(it has: main, v5, v6\).*--revision"
    ):
        download(cfg, progress=False)
    tagged = download(
        DownloadConfig(dataset="metamon-raw", revision="v6", out=tmp_path / "t"), progress=False
    )
    assert tagged.revision == "v6" and tagged.games == 24


def test_no_network_and_full_disk_are_clear(metamon, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    cfg = DownloadConfig(
        dataset="metamon-raw", out=tmp_path / "out", endpoint=f"http://127.0.0.1:{closed}"
    )
    with pytest.raises(HubError, match=r"cannot reach the Hugging Face Hub .* HF_ENDPOINT"):
        download(cfg, progress=False)

    class Usage:
        free = 10_000

    disk_usage = hubmod.shutil.disk_usage
    monkeypatch.setattr(hubmod.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(HubError, match=r"not enough disk space .* --cache-dir"):
        download(DownloadConfig(dataset="metamon-raw", out=tmp_path / "out"), progress=False)
    monkeypatch.setattr(hubmod.shutil, "disk_usage", disk_usage)

    def full(self, table):  # the disk fills up while the output is written
        raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / "x.parquet"))

    monkeypatch.setattr(hub_filter.ShardWriter, "write", full)
    with pytest.raises(HubError, match=r"disk is full .*x\.parquet.* run the same command again"):
        download(DownloadConfig(dataset="metamon-raw", out=tmp_path / "out"), progress=False)


def test_path_hints_rule_out_files_by_format_month_and_split():
    assert path_hints("data/train-00000-of-00046.parquet") == {
        "formats": set(),
        "months": set(),
        "splits": {"train"},
    }
    assert path_hints("gamemode=gen9ou/March2024/part-0.parquet") == {
        "formats": {"gen9ou"},
        "months": {"2024-03"},
        "splits": set(),
    }
    assert path_hints("gen1ou/2024-11/test.parquet")["months"] == {"2024-11"}
    assert path_hints("data/general-notes.parquet")["formats"] == set()
    cfg = DownloadConfig(
        dataset="pokechamp", formats=["gen1ou"], months=["2024-01..2024-03"], out=Path("x")
    )
    assert hub_filter.path_reason("gen9ou/2024-02.parquet", cfg) == "format"
    assert hub_filter.path_reason("gen1ou/2024-05.parquet", cfg) == "month"
    assert hub_filter.path_reason("gen1ou/2024-02.parquet", cfg) == ""
    assert cfg.months == ["2024-01", "2024-02", "2024-03"]


def test_footer_statistics_rule_out_files_by_format_and_month(tmp_path):
    champ = _parquet(
        [{"battle_id": "x", "gamemode": "gen9ou", "month_year": m, "text": "|"} for m in MONTHS[:2]]
    )
    meta = pq.read_metadata(io.BytesIO(champ))
    spec = hubmod.DATASETS["pokechamp"]

    def rules_out(metadata, spec, **filters):
        return hub_filter.stats_rule_out(metadata, spec, DownloadConfig(out=tmp_path, **filters))

    assert rules_out(meta, spec, dataset="pokechamp", months=["2024-03"])  # March2024 > max
    assert not rules_out(meta, spec, dataset="pokechamp", months=["2024-02"])
    assert rules_out(meta, spec, dataset="pokechamp", formats=["gen1ou"])
    assert not rules_out(meta, spec, dataset="pokechamp", formats=["gen9ou"], months=["2024-01"])
    assert rules_out(meta, spec, dataset="pokechamp", formats=["gen9ou"], months=["2023-12"])

    march = 1709251200  # 2024-03-01 00:00 UTC: metamon months come from uploadtime seconds
    raw = _parquet(
        [
            {"id": "x", "formatid": "gen1ou", "uploadtime": t, "log": "|"}
            for t in (march, march + 99)
        ]
    )
    meta, spec = pq.read_metadata(io.BytesIO(raw)), hubmod.DATASETS["metamon-raw"]
    assert not rules_out(meta, spec, dataset="metamon-raw", months=["2024-03"])
    assert rules_out(meta, spec, dataset="metamon-raw", months=["2024-02", "2024-04"])
    odd = _parquet([{"id": "x", "formatid": "Gen 1 OU", "uploadtime": march, "log": "|"}])
    assert not rules_out(  # statistics that are not format ids prune nothing
        pq.read_metadata(io.BytesIO(odd)), spec, dataset="metamon-raw", formats=["gen9ou"]
    )


def test_cli_download_verb(metamon, tmp_path, capsys):
    from pokeagent.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "download",
            "--dataset",
            "metamon-raw",
            "--formats",
            "gen1ou",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and _output_ids(out) == ["gen1ou-2", "smogtours-gen1ou-733374"]
    assert "kept 2 games (gen1ou 2)" in capsys.readouterr().out
    assert main(["download", "--dataset", "nope", "--out", str(out)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
