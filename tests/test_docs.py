"""The docs must not rot. docs/walkthrough.md points readers at file:line: each reference
(`path.py:N`, or `:N` for the file named last) must land on the `def` or `class` line of a
name quoted next to it (the nearest `name` before or after the reference). The README's
Python API example must run as printed."""
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
README = ROOT / "README.md"
REF = re.compile(r"`((?:[\w/]+\.py)?):(\d+)`")
NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


def references():
    text = WALKTHROUGH.read_text()
    current = None
    for match in REF.finditer(text):
        current = match.group(1) or current
        before = [m.group(1) for m in NAME.finditer(text, max(0, match.start() - 200), match.start())]
        after = NAME.search(text, match.end(), match.end() + 40)
        names = ([before[-1]] if before else []) + ([after.group(1)] if after else [])
        yield current, int(match.group(2)), [n.split(".")[-1] for n in names], match.group(0)


def test_walkthrough_has_references():
    assert len(list(references())) >= 25


def test_every_walkthrough_reference_lands_on_the_named_definition():
    wrong = []
    for path, line, names, ref in references():
        source = (ROOT / path).read_text().splitlines()
        text = source[line - 1] if line <= len(source) else ""
        if not any(re.search(rf"\b(def|class)\s+{re.escape(n)}\b", text) for n in names):
            wrong.append(f"{ref} -> {path}:{line} is {text.strip()!r}, expected def/class of {names}")
    assert not wrong, "\n".join(wrong)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)                 # it writes ckpt.safetensors
    exec(compile(code, str(README), "exec"), {})
    assert "digraph" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "ckpt.safetensors")
