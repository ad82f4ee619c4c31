"""The fortunes text corpus (`vdjax.data.text`): documents, the character vocabulary, the split by
document and the next-character windows, on small hand-made corpora and on Debian's `fortunes`."""

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest

from vdjax.data import text
from vdjax.data.core import Dataset

from helpers import REQUIRE_REAL


def real_fortunes_dir() -> str:
    """Debian's `fortunes` (not `fortunes-min` alone: 3 of the 43 files)."""
    if not os.path.isfile(os.path.join(text.FORTUNES_DIR, "science")):
        if REQUIRE_REAL:
            pytest.fail(f"{text.FORTUNES_DIR} is missing or partial: apt-get install fortunes")
        pytest.skip("Debian's fortunes is not installed")
    return text.FORTUNES_DIR


def write_corpus(root: Path, files: dict[str, str]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (root / name).write_text(body, encoding="utf-8")
    return str(root)


SMALL = {
    "alpha": "First one.\n%\n\nSecond,\n\ttwo lines.\n\n%\n%\nThird 100%.\n%\n",
    "beta": "Fourth.\n%\nFirst   one.\n%\nFifth, no final separator",
    "alpha.dat": "\x00\x00binary index\n%\nnot a document\n",
    "alpha.u8": "a link to alpha\n%\n",
}


def test_vocabulary_round_trips_and_marks_unknowns():
    assert text.VOCAB_SIZE == 99 == len(set(text.VOCAB))
    printable = "".join(chr(c) for c in range(32, 127)) + "\t\n"
    ids = text.encode(printable)
    assert ids.dtype == np.int32 and ids.min() > text.UNKNOWN and ids.max() < text.VOCAB_SIZE
    assert text.decode(ids) == printable
    assert [text.VOCAB[i] for i in ids] == list(printable)
    unknown = text.encode("a\x07é€\r")
    np.testing.assert_array_equal(unknown[1:], text.UNKNOWN)
    assert text.decode(unknown) == "a" + "\x1a" * 4
    with pytest.raises(ValueError, match=r"\[0, 99\)"):
        text.decode([0, 99])


def test_documents_are_the_pieces_between_percent_lines():
    assert text.split_documents(SMALL["alpha"]) == ["First one.", "Second,\n\ttwo lines.", "Third 100%."]
    assert text.split_documents(SMALL["beta"])[-1] == "Fifth, no final separator"
    assert text.clean("_\bu_\bn bold: B\bBo\bol\bld\bd\x1e") == "un bold: Bold\x1a"


def test_reader_skips_indices_links_and_subfolders_and_drops_repeats(tmp_path):
    root = write_corpus(tmp_path / "f", SMALL)
    write_corpus(tmp_path / "f" / "off", {"rude": "Ebg13 grkg.\n%\n"})
    docs = text.read_fortunes(root)
    # "First   one." repeats "First one." up to whitespace: the first copy is kept.
    assert docs == ["First one.", "Second,\n\ttwo lines.", "Third 100%.", "Fourth.", "Fifth, no final separator"]


def test_a_missing_corpus_says_how_to_install_it(tmp_path):
    for root in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(FileNotFoundError, match=re.escape(f"{root}: apt-get install fortunes")):
            text.fortunes_arrays(root=str(root))


def test_split_by_document_is_a_seeded_partition():
    parts = text.split_by_document(1000, seed=3)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    joined = np.concatenate(list(parts.values()))
    np.testing.assert_array_equal(np.sort(joined), np.arange(1000))
    again, other = text.split_by_document(1000, seed=3), text.split_by_document(1000, seed=4)
    np.testing.assert_array_equal(parts["test"], again["test"])
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(ValueError, match="leave a split empty"):
        text.split_by_document(5)


def test_windows_are_shifted_by_one_and_reconstruct_the_stream():
    docs = ["ab", "cde", "f"]
    stream = text.token_stream(docs)
    assert text.decode(stream) == "ab\x1ecde\x1ef\x1e"
    x, y = text.windows(stream, 2)
    assert x.shape == y.shape == (3, 2) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x, [text.encode("ab"), text.encode("cd"), text.encode("\x1ef")])
    np.testing.assert_array_equal(y, [text.encode("b\x1e"), text.encode("de"), text.encode("f\x1e")])
    whole = np.concatenate([x, y[:, -1:]], axis=1).ravel()  # each window of T + 1, back to back
    np.testing.assert_array_equal(whole, stream[:9])
    assert len(text.windows(stream, 2, max_windows=2)[0]) == 2


def test_small_corpus_splits_into_windows(tmp_path):
    files = {f"topic{k}": "".join(f"Document {k}-{i} says {'la ' * i}.\n%\n" for i in range(40)) for k in range(3)}
    root = write_corpus(tmp_path / "f", files)
    arrays = text.fortunes_arrays(seq_len=16, root=root)
    assert set(arrays) == {f"{v}_{s}" for v in "xy" for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        assert x.shape[1] == 16 and x.shape == y.shape and x.dtype == np.int32
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert len(arrays["x_train"]) > 6 * len(arrays["x_test"])


@pytest.fixture(scope="module")
def fortunes():
    root = real_fortunes_dir()
    docs = text.read_fortunes(root)
    return root, docs, text.split_by_document(len(docs), seed=0)


def test_real_corpus_no_document_in_two_splits(fortunes):
    _, docs, parts = fortunes
    assert len(docs) > 10_000
    by_words = {s: {" ".join(docs[i].split()) for i in idx} for s, idx in parts.items()}
    assert sum(len(v) for v in by_words.values()) == len(docs)
    assert not (by_words["train"] & by_words["val"] or by_words["train"] & by_words["test"]
                or by_words["val"] & by_words["test"])


def test_real_corpus_windows_reconstruct_the_test_documents(fortunes):
    root, docs, parts = fortunes
    arrays = text.fortunes_arrays(seq_len=64, seed=0, root=root)
    x, y = arrays["x_test"], arrays["y_test"]
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    stream = np.concatenate([x, y[:, -1:]], axis=1).ravel()
    pieces = text.decode(stream).split("\x1e")
    expected = [text.decode(text.encode(docs[i])) for i in parts["test"]]  # unknowns as "\x1a"
    # Whole documents, in split order, up to the one the last window cuts.
    assert pieces[:-1] == expected[: len(pieces) - 1]
    assert expected[len(pieces) - 1].startswith(pieces[-1])
    assert (text.encode("".join(expected)) == text.UNKNOWN).mean() < 1e-3
    for split in ("train", "val", "test"):
        assert arrays[f"x_{split}"].min() >= 0 and arrays[f"x_{split}"].max() < text.VOCAB_SIZE
    capped = text.fortunes_arrays(seq_len=64, root=root, max_windows=10)
    assert all(len(v) == 10 for v in capped.values())
    np.testing.assert_array_equal(capped["x_train"], arrays["x_train"][:10])


@pytest.mark.skipif("inputs" not in {f.name for f in dataclasses.fields(Dataset)},
                    reason="vdjax.data.core.Dataset has no token inputs yet")
def test_fortunes_dataset_holds_token_windows(fortunes):
    root, _, _ = fortunes
    data = text.fortunes_dataset(seq_len=32, root=root, max_windows=50)
    assert data.name == "fortunes" and data.num_classes == text.VOCAB_SIZE
    assert data.x_train.shape == data.y_train.shape == (50, 32) and data.n_val == 50
    assert data.x_train.dtype == data.y_train.dtype == np.int32
