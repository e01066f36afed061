"""Chemistry of generated SMILES, through RDKit where it is installed (the ``chem`` extra:
``pip install -e ".[chem]"``): the MOSES generation metrics (Polykovskiy et al. 2020) and
drawings of molecules. Without RDKit, ``rdkit()`` is None and the callers say, in one line
(``NO_RDKIT``), what they skip.

  valid   share of the samples RDKit parses into a molecule (an empty string is not one)
  unique  share of distinct canonical SMILES among the valid ones (MOSES's unique@k, k = all)
  novel   share of those distinct canonical SMILES not in the training set
"""
from __future__ import annotations

from typing import Iterable, Optional

NO_RDKIT = ("RDKit is not installed, so the chemistry metrics (valid, unique, novel) and the molecule drawings are "
           "skipped; pip install -e '.[chem]' adds them")


def rdkit():
    """RDKit's Chem module with its log quietened (it prints a line for every unparsable
    sample), or None when RDKit is not installed."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        return None
    RDLogger.DisableLog("rdApp.*")
    return Chem


def canonical(strings: Iterable[str], chem) -> list:
    """Each string's canonical SMILES, or None where RDKit cannot parse it."""
    out = []
    for text in strings:
        mol = chem.MolFromSmiles(text) if text else None
        out.append(chem.MolToSmiles(mol) if mol is not None else None)
    return out


def generation_metrics(samples: list, training: Iterable[str], chem) -> dict:
    """valid, unique and novel of ``samples`` (SMILES strings) against the training strings
    (MOSES's are canonical RDKit SMILES already, so they are compared as they are)."""
    forms = [c for c in canonical(samples, chem) if c is not None]
    distinct = set(forms)
    novel = distinct - set(training)
    return {"valid": len(forms) / max(len(samples), 1), "unique": len(distinct) / max(len(forms), 1),
            "novel": len(novel) / max(len(distinct), 1)}


def draw(strings: list, path: str, chem, legends: Optional[list] = None, per_row: int = 6) -> None:
    """A PNG of the molecules, one per tile (an unparsable string gets an empty tile with its
    text as the legend)."""
    from rdkit.Chem import Draw
    mols = [chem.MolFromSmiles(s) if s else None for s in strings]
    legends = legends or [s if m is None else "" for s, m in zip(strings, mols)]
    image = Draw.MolsToGridImage([m if m is not None else chem.Mol() for m in mols], molsPerRow=per_row,
                                 subImgSize=(220, 180), legends=[str(text)[:40] for text in legends])
    image.save(path)
