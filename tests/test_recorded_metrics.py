"""The models moved onto the model interface give the numbers they gave before it: metrics of
short runs recorded with the code before the move (tests/recorded_metrics.json says which)
against the same runs now. Exact on the processor they were recorded on; other processors'
BLAS and SIMD kernels round differently (up to 7e-6 relative, measured on an AVX2 build), so
the comparison allows 1e-4 relative and active units exactly."""
import json
from pathlib import Path

import pytest

from tinyvae import train as T

RECORDED = json.loads((Path(__file__).parent / "recorded_metrics.json").read_text())
ADDED_SINCE = {"seconds", "time", "kl_per_dim", "total_correlation"}   # metrics the records predate (timings, then new ones)


@pytest.mark.slow
@pytest.mark.parametrize("case", RECORDED["cases"], ids=lambda c: f"{c['model']}-{'-'.join(map(str, c['options'].values()))}")
def test_metrics_match_the_code_before_model_families(case, tmp_path):
    run = T.RunOptions(epochs=2, batch_size=64, train_size=320, test_size=200, seed=3)
    history = T.train(case["model"], case["options"], run, str(tmp_path), progress=False, log=lambda *a: None)
    got = [{k: v for k, v in r.items() if k not in ADDED_SINCE} for r in history]
    want = case["epochs"]
    assert [set(r) for r in got] == [set(r) for r in want]
    for g, w in zip(got, want):
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
            else:
                assert g[key] == value, key
