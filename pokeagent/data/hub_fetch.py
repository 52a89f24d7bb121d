"""The Hub side of `pokeagent download` (`pokeagent.data.hub`): one dataset repository pinned to
one commit, its parquet listing, footers read with HTTP Range requests, and a content-addressed
blob cache filled by resumable downloads that are verified (sha256 or git blob id) before they
are kept. Hub failures become `HubError`s that say what to do.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (
    WeakFileLock,
    build_hf_headers,
    get_session,
    hf_raise_for_status,
)

if TYPE_CHECKING:
    from pokeagent.data.hub import DownloadConfig
    from pokeagent.progress import Progress

FOOTER_PROBE = 64 * 1024
"""Bytes read from the end of a parquet file to find its footer (one more request if bigger)."""
CHUNK = 1 << 22
"""Bytes per read when hashing a file."""
RETRY_WAIT_S = 1.0
"""First wait before resuming a broken download; doubled after each failure in a row."""
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
"""HTTP answers worth waiting out (rate limits, a busy or restarting server)."""


class HubError(RuntimeError):
    """A download that cannot go on; the message says what to do."""


@dataclass
class HubFile:
    """One parquet file of the repository at the pinned commit."""

    path: str
    size: int
    sha256: str | None
    git_oid: str

    @property
    def key(self) -> str:
        return self.sha256 or self.git_oid


class HubRepo:
    """The Hub as this run sees it: one repository at one commit, and the local blob cache."""

    def __init__(self, cfg: DownloadConfig, byte_counts: Counter[str]):
        self.cfg = cfg
        self.byte_counts = byte_counts
        """The run's byte counters (`DownloadSummary.bytes`): footer requests add to `footers`."""
        self.repo_id = cfg.spec.repo_id
        self.endpoint = (
            cfg.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        ).rstrip("/")
        home = os.environ.get("HF_HOME") or constants.HF_HOME
        root = cfg.cache_dir or Path(home).expanduser() / "pokeagent"
        self.cache = root / f"datasets--{self.repo_id.replace('/', '--')}"
        self.api = HfApi(endpoint=self.endpoint, token=cfg.token)
        self.headers = build_hf_headers(token=cfg.token)
        self.headers["Accept-Encoding"] = "identity"  # byte ranges of the file, never of a gzip
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.commit = ""

    # -- metadata

    def call(self, what: str, fn: Callable):
        """Run a Hub API call; turn its failures into errors that say what to do."""
        try:
            return fn()
        except RevisionNotFoundError:
            pinned = self.cfg.spec.revision
            raise HubError(
                f"revision {self.cfg.revision!r} does not exist in dataset {self.repo_id}"
                f"{self._refs_hint()}: pass an existing branch, tag or commit to --revision"
                + (
                    f", or leave --revision out for {pinned}"
                    if self.cfg.revision != pinned
                    else f" ({pinned} is the default)"
                )
            ) from None
        except (RepositoryNotFoundError, GatedRepoError):
            raise HubError(
                f"dataset {self.repo_id} was not found at {self.endpoint}, or it is gated or "
                "private and no valid token was sent: accept its terms on the Hub and set "
                "HF_TOKEN (or run `hf auth login`); if HF_ENDPOINT is set, check that the "
                "mirror has it"
            ) from None
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else "?"
            raise HubError(
                f"the Hub at {self.endpoint} answered HTTP {status} to {what} of {self.repo_id}: "
                f"{str(err).splitlines()[0]}; retry later (files already fetched are kept)"
            ) from None
        except httpx2.TransportError as err:
            raise self.offline(err) from None
        except OfflineModeIsEnabled:
            raise HubError(
                "HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it for `pokeagent "
                "download` (the files it writes are then read offline by `pokeagent pack`)"
            ) from None

    def offline(self, err: Exception) -> HubError:
        return HubError(
            f"cannot reach the Hugging Face Hub at {self.endpoint} ({type(err).__name__}: "
            f"{err}): check the network connection and proxy settings (HTTPS_PROXY), or set "
            "HF_ENDPOINT to a reachable mirror; files fetched so far stay in "
            f"{self.cache} and a rerun continues from them"
        )

    def _refs_hint(self) -> str:
        try:
            refs = self.api.list_repo_refs(self.repo_id, repo_type="dataset")
        except Exception:  # the hint is a courtesy; the error it decorates is the point
            return ""
        names = [r.name for r in refs.branches] + [r.name for r in refs.tags]
        return f" (it has: {', '.join(names)})" if names else ""

    def resolve(self) -> str:
        info = self.call(
            "the revision lookup",
            lambda: self.api.dataset_info(self.repo_id, revision=self.cfg.revision),
        )
        if not info.sha:
            raise HubError(f"the Hub at {self.endpoint} gave no commit for {self.repo_id}")
        self.commit = info.sha
        return info.sha

    def list_files(self) -> list[HubFile]:
        entries = self.call(
            "the file listing",
            lambda: list(
                self.api.list_repo_tree(
                    self.repo_id, repo_type="dataset", revision=self.commit, recursive=True
                )
            ),
        )
        files = [
            HubFile(e.path, e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
            for e in entries
            if isinstance(e, RepoFile) and e.path.lower().endswith(".parquet")
        ]
        return sorted(files, key=lambda f: f.path)

    # -- bytes

    def url(self, file: HubFile) -> str:
        return hf_hub_url(
            self.repo_id,
            file.path,
            repo_type="dataset",
            revision=self.commit,
            endpoint=self.endpoint,
        )

    def blob(self, file: HubFile) -> Path:
        return self.cache / "blobs" / file.key

    def cached(self, file: HubFile) -> bool:
        """The blob is here and verifies (hashed once, then trusted while size and mtime hold)."""
        blob = self.blob(file)
        if not blob.is_file():
            return False
        stamp = blob.with_name(blob.name + ".ok")
        stat = blob.stat()
        mark = f"{stat.st_size} {stat.st_mtime_ns}"
        if stamp.is_file() and stamp.read_text() == mark and stat.st_size == file.size:
            return True
        if stat.st_size == file.size and _digest(blob, file) == file.key:
            stamp.write_text(mark)
            return True
        blob.unlink()
        stamp.unlink(missing_ok=True)
        return False

    def get_range(self, file: HubFile, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file (one request)."""
        headers = {**self.headers, "Range": f"bytes={start}-{end - 1}"}
        try:
            response = get_session().get(
                self.url(file), headers=headers, follow_redirects=True, timeout=60
            )
            hf_raise_for_status(response)
        except httpx2.TransportError as err:
            raise self.offline(err) from None
        except HfHubHTTPError as err:
            raise HubError(f"reading the footer of {file.path}: {err}") from None
        data = response.content
        if response.status_code == 200:  # a server that ignores Range sends the whole file
            data = data[start:end]
        if len(data) != end - start:
            raise HubError(f"{file.path}: asked for {end - start} bytes, got {len(data)}")
        with self.lock:
            self.byte_counts["footers"] += len(data)
        return data

    def footer(self, file: HubFile) -> pq.FileMetaData:
        """The parquet metadata of a file: from the cached blob, the footer cache, or 1-2 requests."""
        if self.cached(file):
            return pq.read_metadata(self.blob(file))
        saved = self.cache / "footers" / file.key
        if saved.is_file():
            return _footer_metadata(saved.read_bytes())
        probe = min(file.size, FOOTER_PROBE)
        tail = self.get_range(file, file.size - probe, file.size)
        if tail[-4:] != b"PAR1":
            raise HubError(f"{self.repo_id}:{file.path} is not a parquet file (no PAR1 footer)")
        length = int.from_bytes(tail[-8:-4], "little") + 8
        if length > file.size - 4:
            raise HubError(f"{self.repo_id}:{file.path}: footer length {length} is impossible")
        if length > probe:
            tail = self.get_range(file, file.size - length, file.size - probe) + tail
        footer = tail[-length:]
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(saved.name + ".tmp")
        tmp.write_bytes(footer)
        os.replace(tmp, saved)
        return _footer_metadata(footer)

    def fetch(self, file: HubFile, progress: Progress) -> Path:
        """Download one file into the blob cache, resuming a `.part` left by an earlier try.

        A file lock keeps two processes sharing the cache (an array job) off the same `.part`.
        """
        blob = self.blob(file)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(blob.with_name(blob.name + ".lock")):
            if self.cached(file):  # another process finished it meanwhile
                return blob
            return self._fetch(file, blob, progress)

    def _fetch(self, file: HubFile, blob: Path, progress: Progress) -> Path:
        part = blob.with_name(blob.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > file.size:
            part.unlink()
            have = 0
        failures = 0
        with self.lock:
            progress.update(have)
        while have < file.size:
            if self.stop.is_set():
                raise _Stopped
            headers = dict(self.headers)
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with get_session().stream(
                    "GET", self.url(file), headers=headers, follow_redirects=True, timeout=60
                ) as response:
                    hf_raise_for_status(response)
                    if have and response.status_code == 200:  # Range ignored: start over
                        with self.lock:
                            progress.update(-have)
                        have = 0
                    with open(part, "ab" if have else "wb") as sink:
                        # No chunk size: a buffered chunk would be lost when the connection drops.
                        for chunk in response.iter_bytes():
                            if self.stop.is_set():
                                raise _Stopped
                            sink.write(chunk)
                            have += len(chunk)
                            failures = 0
                            with self.lock:
                                progress.update(len(chunk))
            except (httpx2.TransportError, HfHubHTTPError) as err:
                status = getattr(getattr(err, "response", None), "status_code", None)
                if isinstance(err, HfHubHTTPError) and status not in RETRY_STATUSES:
                    raise HubError(f"downloading {self.repo_id}:{file.path}: {err}") from None
                failures += 1
                if failures > self.cfg.retries:
                    raise HubError(
                        f"download of {self.repo_id}:{file.path} broke off at {have:,} of "
                        f"{file.size:,} bytes ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "run the same command again to continue from there"
                    ) from None
                time.sleep(min(RETRY_WAIT_S * 2 ** (failures - 1), 60.0))
        if have != file.size or _digest(part, file) != file.key:
            part.unlink()
            raise HubError(
                f"{self.repo_id}:{file.path} did not match its checksum after download (the "
                "partial file was removed): run the same command again to fetch it afresh"
            )
        os.replace(part, blob)
        stat = blob.stat()
        blob.with_name(blob.name + ".ok").write_text(f"{stat.st_size} {stat.st_mtime_ns}")
        return blob


class _Stopped(Exception):
    """A download abandoned because enough games were kept (its `.part` stays for later)."""


def _digest(path: Path, file: HubFile) -> str:
    """sha256 for LFS files, the git blob id (sha1 of a `blob <size>` header + bytes) otherwise."""
    if file.sha256:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _footer_metadata(data: bytes) -> pq.FileMetaData:
    return pq.read_metadata(pa.BufferReader(b"PAR1" + data))
