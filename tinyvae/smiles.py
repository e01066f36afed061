"""SMILES strings as token sequences: the character-level tokenisation of the MOSES molecules
(Polykovskiy et al. 2020) that the sequence VAE reads and writes.

Every character is a token except the two-character atoms ``Cl`` and ``Br`` (so ``C`` followed
by ``l`` is never two tokens). The vocabulary is four special tokens, then the 25 characters
the MOSES training set uses:

    0 <pad>   after the end, ignored by every loss
    1 <bos>   the decoder's first input
    2 <eos>   the end of the string
    3 <unk>   a dropped decoder input (word dropout, Bowman et al. 2016)

A molecule of n tokens is stored as its n tokens, <eos>, then <pad> up to ``LENGTH`` (the
longest MOSES string has 57 tokens, so 58 positions hold every one).
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
ATOMS = ("c", "C", "(", ")", "1", "O", "2", "N", "n", "=", "3", "F", "-", "S", "s", "o", "Cl", "[", "H", "]",
         "#", "4", "Br", "5", "6")     # the MOSES training set's tokens, most frequent first
VOCABULARY = SPECIAL + ATOMS
LENGTH = 58

_TOKEN = re.compile(r"Cl|Br|.", re.DOTALL)


class SmilesError(ValueError):
    """A string holds a character outside the vocabulary, or is too long."""


def tokenize(smiles: str) -> list:
    """The tokens of one SMILES string ('CCl' → ['C', 'Cl'])."""
    return _TOKEN.findall(smiles)


def encode(strings: Sequence[str], vocabulary: Sequence[str] = VOCABULARY, length: int = LENGTH,
           where: str = "SMILES") -> np.ndarray:
    """Token ids [N, length] int64: each string's tokens, <eos>, <pad>s. SmilesError naming the
    first string (by its 1-based number in ``where``) with a token outside the vocabulary or
    more than length − 1 tokens."""
    index = {token: i for i, token in enumerate(vocabulary)}
    out = np.full((len(strings), length), PAD, np.int64)
    for row, text in enumerate(strings):
        tokens = tokenize(text)
        unknown = [t for t in tokens if t not in index or index[t] < len(SPECIAL)]
        if unknown:
            raise SmilesError(f"{where} line {row + 1}: {unknown[0]!r} in {text!r} is not a SMILES token of the "
                              f"vocabulary ({' '.join(vocabulary[len(SPECIAL):])})")
        if len(tokens) >= length:
            raise SmilesError(f"{where} line {row + 1}: {text!r} has {len(tokens)} tokens; at most {length - 1} fit")
        out[row, :len(tokens)] = [index[t] for t in tokens]
        out[row, len(tokens)] = EOS
    return out


def decode(ids: np.ndarray, vocabulary: Sequence[str] = VOCABULARY) -> list:
    """The strings of token ids [N, T]: each row's tokens up to its first <eos> (or the end),
    special tokens other than <eos> left out."""
    strings = []
    for row in np.asarray(ids):
        ends = np.flatnonzero(row == EOS)
        kept = row[:ends[0]] if len(ends) else row
        strings.append("".join(vocabulary[i] for i in kept if i >= len(SPECIAL)))
    return strings


def lengths(ids: np.ndarray) -> np.ndarray:
    """Positions up to and including each row's <eos> (the tokens a loss counts), [N]."""
    return (np.asarray(ids) != PAD).sum(axis=1)


def read_csv(lines: Iterable[str], where: str, limit=None) -> list:
    """The SMILES of a MOSES csv: a header line naming the column SMILES, then one string a
    line; the first ``limit`` strings (all if None)."""
    lines = iter(lines)
    header = next(lines, "").strip()
    if header.split(",")[0] != "SMILES":
        raise SmilesError(f"{where}: expected a header line 'SMILES', found {header[:40]!r}")
    strings = []
    for line in lines:
        if limit is not None and len(strings) >= limit:
            break
        text = line.strip().split(",")[0]
        if text:
            strings.append(text)
    return strings
