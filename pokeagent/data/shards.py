"""One trajectory <-> one WebDataset sample of pre-tokenized arrays (DESIGN.md, "Shards").

A sample is a group of tar members sharing a key (`<battle id>_<side>`), one `.npy` per array, so
the training loop only memory-maps numbers (no JSON):

    tokens.npy    int16  [T, 12, 8]    dex ids (vocabularies < 32k)
    features.npy  float16 [T, 12, F]   HP fractions, flags, boosts/6: float16 keeps 3 digits
    globals.npy   float16 [T, G]
    legal.npy     uint8  [T, N_ACTIONS]
    action.npy    int8   [T]           label, -1 unknown
    kind.npy      int8   [T]           team preview / turn / forced switch
    turn.npy      int16  [T]
    info.npy      int32  [5]           gen, own rating, opponent rating (-1 unknown),
                                       outcome x2 (0 loss, 1 tie, 2 win), parser version
    format.txt    the format id, for read-time filters

Keys are sanitised: WebDataset splits a member name at its first dot.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import numpy as np

from pokeagent.data.parse import Trajectory

ARRAY_FIELDS = ("tokens", "features", "globals", "legal", "action", "kind", "turn", "info")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(trajectory: Trajectory) -> str:
    return _UNSAFE.sub("-", f"{trajectory.battle_id}_{trajectory.side}")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def trajectory_arrays(trajectory: Trajectory) -> dict[str, np.ndarray]:
    """Stack a parsed+encoded trajectory into the sample's arrays."""
    decisions = trajectory.decisions
    if not decisions or decisions[0].obs is None:
        raise ValueError(f"{trajectory.battle_id} {trajectory.side}: no encoded decisions")
    info = np.array(
        [
            trajectory.gen,
            -1 if trajectory.rating is None else trajectory.rating,
            -1 if trajectory.opponent_rating is None else trajectory.opponent_rating,
            round(trajectory.outcome * 2),
            trajectory.parser_version,
        ],
        dtype=np.int32,
    )
    stacked = trajectory.arrays or {
        "tokens": np.stack([d.obs["tokens"] for d in decisions]),
        "features": np.stack([d.obs["features"] for d in decisions]),
        "globals": np.stack([d.obs["globals"] for d in decisions]),
        "legal": np.stack([d.legal for d in decisions]),
    }
    return {
        "tokens": stacked["tokens"].astype(np.int16),
        "features": stacked["features"].astype(np.float16),
        "globals": stacked["globals"].astype(np.float16),
        "legal": stacked["legal"].astype(np.uint8),
        "action": np.array([d.action for d in decisions], dtype=np.int8),
        "kind": np.array([d.kind for d in decisions], dtype=np.int8),
        "turn": np.array([d.turn for d in decisions], dtype=np.int16),
        "info": info,
    }


def encode_sample(trajectory: Trajectory) -> dict[str, bytes | str]:
    """The tar members of one sample (WebDataset's `__key__` plus one entry per file)."""
    sample: dict[str, bytes | str] = {"__key__": sample_key(trajectory)}
    for name, array in trajectory_arrays(trajectory).items():
        sample[f"{name}.npy"] = _npy(array)
    sample["format.txt"] = trajectory.format.encode()
    return sample


def decode_sample(members: dict[str, bytes]) -> dict[str, np.ndarray | str]:
    """Tar members -> arrays (and `format`, `key`). Raises ValueError on a malformed sample."""
    out: dict[str, np.ndarray | str] = {}
    for name in ARRAY_FIELDS:
        raw = members.get(f"{name}.npy")
        if raw is None:
            raise ValueError(f"sample {members.get('__key__')!r} lacks {name}.npy")
        out[name] = load_npy(raw)
    out["format"] = members.get("format.txt", b"").decode()
    out["key"] = members.get("__key__", "")
    steps = len(out["action"])
    for name in ("tokens", "features", "globals", "legal", "kind", "turn"):
        if len(out[name]) != steps:
            raise ValueError(
                f"sample {out['key']!r}: {name} has {len(out[name])} steps, action has {steps}"
            )
    return out


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(
    r"'descr':\s*'([^']+)'.*'fortran_order':\s*(True|False).*'shape':\s*\(([^)]*)\)"
)


def load_npy(raw: bytes) -> np.ndarray:
    """np.load for the npy members we write, without np.load's literal_eval of the header
    (a third of the loader's time). Read-only view of `raw`; falls back to np.load."""
    if raw[:6] == _NPY_MAGIC and raw[6] == 1:
        header_len = int.from_bytes(raw[8:10], "little")
        match = _NPY_HEADER.search(raw[10 : 10 + header_len].decode("latin1"))
        if match and match.group(2) == "False":
            shape = tuple(int(x) for x in match.group(3).split(",") if x.strip())
            return np.frombuffer(
                raw, dtype=np.dtype(match.group(1)), offset=10 + header_len
            ).reshape(shape)
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _tar_members(stream) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of an uncompressed tar stream, in order.

    A minimal ustar reader (with pax and GNU long names): tarfile builds a TarInfo object and
    parses every header field, which costs more than the loader's whole decode.
    """
    long_name = None
    while True:
        header = stream.read(512)
        if not header or header == b"\0" * 512:
            return
        if len(header) < 512:
            raise ValueError("truncated tar header")
        try:
            size = int(header[124:136].rstrip(b"\0 ").decode() or "0", 8)
        except ValueError as error:
            raise ValueError("corrupt tar header") from error
        kind = header[156:157]
        data = stream.read(size)
        if len(data) < size:
            raise ValueError("truncated tar member")
        stream.read((512 - size % 512) % 512)
        if kind in (b"x", b"L"):
            if kind == b"L":
                long_name = data.rstrip(b"\0").decode()
            else:
                for record in data.decode().splitlines():
                    _, _, keyval = record.partition(" ")
                    if keyval.startswith("path="):
                        long_name = keyval[5:]
            continue
        if kind not in (b"0", b"\0"):
            long_name = None
            continue
        name = long_name
        if name is None:
            prefix = header[345:500].rstrip(b"\0").decode() if header[257:262] == b"ustar" else ""
            name = header[:100].rstrip(b"\0").decode()
            name = f"{prefix}/{name}" if prefix else name
        long_name = None
        yield name, data


def read_shard(path) -> Iterator[dict[str, np.ndarray | str]]:
    """Decoded samples of one shard, in order, streaming. Raises ValueError naming the shard
    when it is truncated or corrupt (the loader reports and skips such a shard)."""
    current_key, members = None, {}
    try:
        with open(path, "rb", buffering=1 << 20) as stream:
            for name, data in _tar_members(stream):
                key, _, suffix = name.partition(".")
                if current_key is not None and key != current_key:
                    yield decode_sample({"__key__": current_key, **members})
                    members = {}
                current_key = key
                members[suffix] = data
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: corrupt or truncated shard ({error})") from error
    if current_key is not None:
        yield decode_sample({"__key__": current_key, **members})
