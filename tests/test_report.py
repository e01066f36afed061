"""``tinyvae report``: one self-contained HTML page comparing runs, checked as text and, where
Chromium is installed, rendered headless to a screenshot."""
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tinyvae import cli

SMALL = ["--train-size", "128", "--test-size", "64", "--batch-size", "64", "--no-progress", "--seed", "5"]


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    assert run("train", "--epochs", 2, "--beta", 1, "--out", root / "beta1", *SMALL) == 0
    assert run("train", "--epochs", 2, "--beta", 4, "--out", root / "beta4", *SMALL) == 0
    assert run("report", root / "beta1", root / "beta4", "-o", root / "report.html") == 0
    return root / "report.html"


def test_the_report_is_one_self_contained_page(page):
    text = page.read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)   # nothing fetched
    assert "http://" not in text and "https://" not in text
    assert "<b>beta=1.0</b>" in text and "<b>beta=4.0</b>" in text       # what differs, in bold
    rows = re.findall(r"<tr><td>(beta\d)</td>", text)
    assert rows == ["beta1", "beta4"]
    assert text.count("<details>") == 2 and "&quot;model&quot;: &quot;vae&quot;" in text   # each config.json, escaped


def test_the_report_refuses_a_file_that_is_not_html(tmp_path, capsys):
    assert run("report", tmp_path, "-o", tmp_path / "r.pdf") == 2
    assert "name an .html file" in capsys.readouterr().err


def test_the_report_renders_in_a_browser(page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), np.float64)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 20                             # text, tables and plots, not an empty page
    assert (pixels < 100).mean() > 0.01                  # dark ink: the page's text and images drew
