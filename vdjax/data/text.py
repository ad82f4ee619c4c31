"""Real English text for a character-level language model: Debian's `fortunes` corpus.

The corpus (`apt-get install fortunes`) is a directory of strfile text files, each a list of
short documents (quotations, jokes, poems) separated by lines holding only `%`. Read here: every
regular file directly in the directory except strfile's `.dat` indices and the `.u8` links to the
same files; subdirectories are not entered, so the offensive `off/` collection (a separate
package, stored rot13'ed) is never read. Backspace overstriking (311 backspaces: underlined and
bold words) is resolved to the characters a terminal shows (`clean`).

Counts for Debian's `fortunes` and `fortunes-min` 1:1.99.1-7.3 (43 files, 2,576,627 characters
before cleaning; `fortunes-min` alone installs 3 of them), `seed=0`, T=64:

    documents           15,100 (of 15,217; 117 repeats across files dropped)
    split               train 12,080 / val 1,510 / test 1,510 documents
    characters          train 2,004,548 / val 255,095 / test 252,746 (2,512,389 in all)
    tokens              train 2,016,628 / val 256,605 / test 254,256 (characters + one END a document)
    windows (T=64)      train 31,025 / val 3,947 / test 3,911 (65 tokens each)
    unknown             101 tokens of 2,527,489 (0.004%: bell characters, a few mis-encoded bytes)
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from vdjax.data.core import Dataset

FORTUNES_DIR = "/usr/share/games/fortunes"

# The vocabulary, id -> character. Id 0 ends a document (ASCII "record separator"), id 1 stands for
# every character outside the vocabulary (ASCII "substitute"); then tab, newline and the 95
# printable ASCII characters. Tabs are kept: the corpus indents attributions with them.
END, UNKNOWN = 0, 1
VOCAB: tuple[str, ...] = ("\x1e", "\x1a", "\t", "\n", *(chr(c) for c in range(32, 127)))
VOCAB_SIZE = len(VOCAB)  # 99

_IDS = np.full(128, UNKNOWN, dtype=np.int32)
_IDS[[ord(c) for c in VOCAB]] = np.arange(VOCAB_SIZE, dtype=np.int32)
_CHARS = np.array([ord(c) for c in VOCAB], dtype=np.uint32)
_OVERSTRUCK = re.compile(r"[^\n]\x08")  # "_\bA" (underline) and "A\bA" (bold) print as "A"


def encode(text: str) -> np.ndarray:
    """Character ids, int32 [len(text)]; a character outside `VOCAB` becomes `UNKNOWN`."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, _IDS[np.minimum(codes, 127)], UNKNOWN).astype(np.int32)


def decode(ids: Any) -> str:
    """The text of character ids (`UNKNOWN` as "\\x1a", a document end as "\\x1e")."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"character ids must lie in [0, {VOCAB_SIZE}), found [{ids.min()}, {ids.max()}]")
    return _CHARS[ids.astype(np.int64).ravel()].tobytes().decode("utf-32-le")


def clean(text: str) -> str:
    """What a terminal shows: overstruck characters resolved to the last one struck, and the
    vocabulary's two control characters (kept for the end and unknown tokens) made unknown."""
    while True:
        resolved = _OVERSTRUCK.sub("", text)
        if resolved == text:
            break
        text = resolved
    return text.replace("\x1e", "\x1a")


def split_documents(text: str) -> list[str]:
    """The documents of one strfile text: the pieces between lines holding only `%`, each without
    its leading and trailing blank lines; empty ones are dropped."""
    docs, lines = [], []
    for line in text.split("\n") + ["%"]:
        if line == "%":
            doc = "\n".join(lines).strip("\n")
            if doc.strip():
                docs.append(doc)
            lines = []
        else:
            lines.append(line)
    return docs


def corpus_files(root: str = FORTUNES_DIR) -> list[str]:
    """The corpus's text files, sorted by name; a missing corpus raises FileNotFoundError."""
    hint = f"no fortunes corpus at {root}: apt-get install fortunes"
    if not os.path.isdir(root):
        raise FileNotFoundError(hint)
    names = sorted(n for n in os.listdir(root) if not n.endswith((".dat", ".u8")) and not n.startswith("."))
    files = [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))]
    if not files:
        raise FileNotFoundError(hint)
    return files


def read_fortunes(root: str = FORTUNES_DIR) -> list[str]:
    """Every cleaned document of the corpus, in file order, each once: a fortune filed under two
    topics (or twice with other spacing) would otherwise land in two splits. Repeats are found by
    their words (whitespace ignored); the first copy is kept."""
    seen: dict[str, str] = {}
    for path in corpus_files(root):
        with open(path, encoding="utf-8", errors="replace") as f:
            for doc in split_documents(clean(f.read())):
                seen.setdefault(" ".join(doc.split()), doc)
    return list(seen.values())


def split_by_document(n_docs: int, seed: int = 0,
                      fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Document indices for 'train', 'val' and 'test': one seeded permutation cut in three, so no
    document (and no window of one) is in two splits."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n_docs)
    n_train, n_val = (int(round(f * n_docs)) for f in fractions[:2])
    if min(n_train, n_val, n_docs - n_train - n_val) < 1:
        raise ValueError(f"{n_docs} documents leave a split empty at fractions {fractions}")
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def token_stream(docs: list[str]) -> np.ndarray:
    """The documents' ids one after another, each followed by `END`: int32 [sum(len(doc) + 1)].
    The model learns where a document ends, and what follows an `END` starts a new document."""
    pieces = [np.append(encode(doc), np.int32(END)) for doc in docs]
    return np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)


def windows(stream: np.ndarray, seq_len: int, max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of `seq_len + 1` tokens cut from the start of `stream` (a shorter
    tail is dropped): inputs x = window[:-1] and next-token targets y = window[1:], int32 [N, T]."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    n = len(stream) // (seq_len + 1)
    if max_windows is not None:
        n = min(n, int(max_windows))
    w = np.asarray(stream[: n * (seq_len + 1)], dtype=np.int32).reshape(n, seq_len + 1)
    return w[:, :-1].copy(), w[:, 1:].copy()


def fortunes_arrays(seq_len: int = 64, seed: int = 0, root: str = FORTUNES_DIR,
                    max_windows: int | None = None) -> dict[str, np.ndarray]:
    """x_/y_ train, val and test as int32 [N, seq_len] next-character windows of the fortunes
    corpus split by document (80/10/10, seeded); `max_windows` keeps at most that many windows
    of each split, from its start."""
    docs = read_fortunes(root)
    out = {}
    for split, idx in split_by_document(len(docs), seed).items():
        x, y = windows(token_stream([docs[i] for i in idx]), seq_len, max_windows)
        if len(x) == 0:
            raise ValueError(f"the {split} split of {root} holds no window of {seq_len + 1} characters")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def fortunes_dataset(seq_len: int = 64, seed: int = 0, root: str = FORTUNES_DIR,
                     max_windows: int | None = None) -> Dataset:
    """`fortunes_arrays` as a token-input `vdjax.data.core.Dataset` with per-position targets
    (`num_classes` = the vocabulary size); the vocabulary is `VOCAB` (`encode` / `decode`)."""
    arrays = fortunes_arrays(seq_len, seed, root, max_windows)
    return Dataset(name="fortunes", num_classes=VOCAB_SIZE, inputs="tokens", **arrays)
