"""Molecules: the MOSES loader and SMILES tokeniser, the sequence VAE's pieces (the posterior
read at <eos>, word dropout, the aggressive phase and its mutual-information stop), the
chemistry metrics with and without RDKit, and the command line on a trained ``seq-vae``."""
import gzip
import json
import os
import sys

import numpy as np
import pytest

from tinyvae import checkpoint, cli, data, models, molecules, objectives, smiles
from tinyvae.models.base import StepContext

from test_data import shared_root

SMALL = ["--dataset", "moses", "--train-size", "300", "--test-size", "60", "--batch-size", "50", "--no-progress",
         "--hidden", "16", "--embed-dim", "8", "--latent-dim", "4"]


def test_tokenisation_round_trips_the_first_10000_test_molecules():
    with gzip.open(shared_root() / "moses" / "test.csv.gz", "rt") as f:
        strings = smiles.read_csv(f, "test.csv", limit=10000)
    assert len(strings) == 10000
    ids = smiles.encode(strings)
    assert ids.shape == (10000, smiles.LENGTH) and smiles.decode(ids) == strings
    lengths = smiles.lengths(ids)
    assert np.all(ids[np.arange(10000), lengths - 1] == smiles.EOS)
    assert lengths.tolist() == [len(smiles.tokenize(s)) + 1 for s in strings]


def test_two_character_atoms_are_one_token():
    assert smiles.tokenize("ClCC(Br)c1ccc(Cl)cc1") == ["Cl", "C", "C", "(", "Br", ")", "c", "1", "c", "c", "c", "(",
                                                     "Cl", ")", "c", "c", "1"]
    ids = smiles.encode(["CCl"])
    assert [smiles.VOCABULARY[i] for i in ids[0, :3]] == ["C", "Cl", "<eos>"]


@pytest.mark.parametrize("text, what", [("CCLi", "'L'"), ("C C", "' '"), ("CC<eos>", "'<'"), ("c1ccccc1Q", "'Q'")])
def test_a_character_outside_the_vocabulary_is_one_line_naming_it(text, what):
    with pytest.raises(smiles.SmilesError) as err:
        smiles.encode(["CCO", text], where="mine.csv")
    message = str(err.value)
    assert "\n" not in message and "mine.csv line 2" in message and what in message


def test_a_string_too_long_is_refused():
    with pytest.raises(smiles.SmilesError, match="has 58 tokens; at most 57 fit"):
        smiles.encode(["C" * 58])


def test_moses_loads_with_its_documented_sizes():
    test = data.load_split("moses", "test")
    assert test.x.shape == (176074, smiles.LENGTH) and test.spec.kind == "tokens"
    assert test.x.dtype == np.int64 and int(test.x.max()) < len(smiles.VOCABULARY)
    train = data.load_split("moses", "train", limit=1000)
    assert len(train) == 1000 and smiles.decode(train.x[:1]) == ["CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1"]


def test_missing_moses_names_its_files(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", {**data.MIRRORS, "moses": ["file:///nonexistent/"]})
    with pytest.raises(data.DataError) as err:
        data.load_split("moses", "test", data_dir=str(tmp_path))
    assert "train.csv.gz and test.csv.gz" in str(err.value) and "moses/test.csv.gz" in str(err.value)


def test_moses_downloads_into_the_cache_and_is_verified(tmp_path, monkeypatch):
    """The download path, with a local mirror (file:// URL) standing in for the MOSES repository."""
    monkeypatch.delenv("TINYVAE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "test.csv.gz").write_bytes((shared_root() / "moses" / "test.csv.gz").read_bytes())
    monkeypatch.setattr(data, "MIRRORS", {**data.MIRRORS, "moses": ["file:///broken/", mirror.as_uri() + "/"]})
    assert len(data.load_split("moses", "test", limit=5)) == 5
    assert (tmp_path / "home/.cache/tinyvae/moses/test.csv.gz").is_file()


def test_altered_moses_fails_the_checksum(tmp_path):
    (tmp_path / "moses").mkdir()
    with gzip.open(shared_root() / "moses" / "test.csv.gz", "rb") as f:
        raw = bytearray(f.read())
    raw[100] = ord("Q")                                     # a character no tokeniser would take either
    (tmp_path / "moses" / "test.csv.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.DataError, match="fails its SHA-256 check"):
        data.load_split("moses", "test", data_dir=str(tmp_path))


def test_image_models_refuse_molecules_and_seq_vae_refuses_images():
    with pytest.raises(ValueError, match="model 'vae' reads images; moses holds tokens"):
        models.build("vae", {}, data.SPECS["moses"])
    with pytest.raises(ValueError, match="model 'seq-vae' reads tokens; mnist holds images"):
        models.build("seq-vae", {}, data.SPECS["mnist"])


# ---- the model's pieces ------------------------------------------------------------------------

def tiny(**options):
    return models.build("seq-vae", {"embed_dim": 4, "hidden": 5, "latent_dim": 3, **options}, data.SPECS["moses"],
                        np.random.default_rng(0))


def test_the_posterior_is_read_at_eos_whatever_follows():
    """A molecule's q(z|x) is the same alone or in a batch with a longer one (more pads after
    its <eos>)."""
    model = tiny()
    ids = smiles.encode(["CCO", "c1ccccc1C(=O)NCCCl"])
    alone = model.posterior(ids[:1, :4])
    together = model.posterior(ids)
    np.testing.assert_allclose(together.mu.numpy()[0], alone.mu.numpy()[0], rtol=1e-6)
    np.testing.assert_allclose(together.logvar.numpy()[0], alone.logvar.numpy()[0], rtol=1e-6)


def test_pads_count_nothing_and_word_dropout_only_in_training():
    model = tiny(word_dropout=0.5)
    ids = smiles.encode(["CCO", "c1ccccc1"])
    z = model.as_input(np.zeros((2, 3)))
    log_p = model.token_log_probs(ids, z).numpy()
    assert np.all(log_p[ids == smiles.PAD] == 0) and np.all(log_p[ids != smiles.PAD] < 0)
    np.testing.assert_array_equal(model.token_log_probs(ids, z).numpy(), log_p)      # no dropout: deterministic
    dropped = model.token_log_probs(ids, z, np.random.default_rng(0)).numpy()
    assert not np.array_equal(dropped, log_p) and np.all(dropped[ids == smiles.PAD] == 0)
    assert np.array_equal(dropped[:, 0], log_p[:, 0])            # the first input is <bos>, never dropped


def test_aggressive_phase_steps_the_encoder_alone_then_the_decoder():
    model = tiny(aggressive=True, aggressive_inner=3)
    batch = {"x": smiles.encode(["CCO", "CCN"]), "y": np.zeros(2, np.int64)}
    groups = [list(model.loss(batch, StepContext(step, 1, np.random.default_rng(0)))["loss"]) for step in range(8)]
    assert groups == [["encoder"]] * 3 + [["model"]] + [["encoder"]] * 3 + [["model"]]
    assert set(model.param_groups()) == {"encoder", "model"}
    assert not model.inference.parameters() or all(
        id(p) not in {id(q) for q in model.param_groups()["model"]} for p in model.inference.parameters())


def test_aggressive_phase_ends_when_the_mutual_information_stops_rising():
    model = tiny(aggressive=True)
    for epoch, estimates in enumerate([[1.0, 2.0], [2.0, 3.0], [2.0, 2.5], [9.0]], start=1):
        for step, value in enumerate(estimates):
            model._batch_mi = value
            model.after_step(StepContext(step, epoch, np.random.default_rng(0)))
        # the mean of epoch e is judged at epoch e + 1's first step: 1.5, then 2.5 (rose), then 2.25 (fell)
        assert model.aggressive_on[0] == (1.0 if epoch < 4 else 0.0), epoch
    assert model.mi_best[0] == 2.5
    batch = {"x": smiles.encode(["CCO", "CCN"]), "y": np.zeros(2, np.int64)}
    terms = model.loss(batch, StepContext(0, 5, np.random.default_rng(0)))
    assert terms["aggressive"] == 0.0 and not isinstance(terms["loss"], dict)     # after it: both together


def test_mutual_information_is_zero_for_identical_posteriors_and_log_n_for_separate_ones():
    rng = np.random.default_rng(0)
    n, d = 50, 3
    mu, logvar = np.tile(rng.standard_normal(d), (n, 1)), np.full((n, d), -1.0)
    z = mu + np.exp(0.5 * logvar) * rng.standard_normal((n, d))
    assert abs(objectives.mutual_information(z, mu, logvar)) < 1e-12
    apart = np.arange(n)[:, None] * 100.0 + np.zeros((n, d))
    z = apart + np.exp(0.5 * logvar) * rng.standard_normal((n, d))
    assert objectives.mutual_information(z, apart, logvar) == pytest.approx(np.log(n), abs=1e-9)


def test_generation_is_reproducible_and_well_formed():
    model = tiny()
    one, two = (model.sample(20, np.random.default_rng(7)) for _ in range(2))
    assert np.array_equal(one, two) and one.shape == (20, smiles.LENGTH)
    assert not np.isin(one, [smiles.BOS, smiles.UNK]).any()
    for row in one:                       # after an <eos>, only pads
        ends = np.flatnonzero(row == smiles.EOS)
        assert len(ends) <= 1 and (not len(ends) or np.all(row[ends[0] + 1:] == smiles.PAD))


# ---- chemistry ---------------------------------------------------------------------------------

def test_generation_metrics_by_their_definitions():
    chem = molecules.rdkit()
    assert chem is not None, "the test extra installs RDKit (the chem extra); pip install -e '.[test]'"
    samples = ["CCO", "OCC", "C1CC", "", "c1ccccc1", "C(C)(C)(C)(C)C"]     # C1CC: a ring left open; C5: pentavalent
    metrics = molecules.generation_metrics(samples, ["CCO"], chem)
    assert metrics == {"valid": 3 / 6, "unique": 2 / 3, "novel": 1 / 2}


# ---- the command line ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "seq"
    assert cli.main(["train", "--model", "seq-vae", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


def test_a_run_keeps_its_vocabulary_and_its_molecule_outputs(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["vocabulary"] == list(smiles.VOCABULARY)
    for name in ("samples.txt", "interpolation.txt", "samples.png", "interpolation.png", "learning_curves.png"):
        assert (trained / name).is_file(), name
    assert len((trained / "samples.txt").read_text().splitlines()) == 64
    assert len((trained / "interpolation.txt").read_text().splitlines()) == 12
    record = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"test_elbo", "test_recon_accuracy", "nelbo_per_token", "active_units", "mutual_info", "train_kl",
            "kl_weight"} <= set(record)
    assert not {"aggressive", "batch_mutual_info"} & set(record)        # only aggressive training tracks them


def test_a_checkpoint_with_another_vocabulary_is_refused(trained, tmp_path, capsys):
    state = checkpoint.load(trained / "checkpoint.safetensors")
    state["model_config"]["vocabulary"] = list(reversed(smiles.VOCABULARY))
    (tmp_path / "run").mkdir()
    checkpoint.save(tmp_path / "run" / "checkpoint.safetensors", state)
    assert cli.main(["eval", str(tmp_path / "run"), "--fd-samples", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "vocabulary" in err and "misread" in err and len(err.strip().splitlines()) == 1


def test_eval_reports_the_chemistry_metrics(trained, capsys):
    assert cli.main(["eval", str(trained), "--json", "--fd-samples", "40", "--test-size", "30", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"test_elbo", "test_recon_accuracy", "nelbo_per_token", "valid", "unique", "novel"} <= set(result)
    assert 0 <= result["valid"] <= 1 and result["fd_samples"] == 40
    assert result["nelbo_per_token"] > 0


def test_without_rdkit_the_chemistry_is_skipped_in_one_line(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)                 # import rdkit now fails
    assert molecules.rdkit() is None
    assert cli.main(["eval", str(trained), "--json", "--fd-samples", "40", "--test-size", "30", "--no-progress"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "test_elbo" in result and "valid" not in result
    notes = [line for line in out.err.splitlines() if "RDKit" in line]
    assert len(notes) == 1 and "skipped" in notes[0]
    assert cli.main(["sample", str(trained), "-o", str(tmp_path / "s.txt"), "--n", "5"]) == 0
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 5
    assert cli.main(["sample", str(trained), "-o", str(tmp_path / "s.png")]) == 2
    assert "RDKit is not installed" in capsys.readouterr().err
    assert cli.main(["plot", str(trained), "-o", str(tmp_path / "plots")]) == 0
    assert sorted(os.listdir(tmp_path / "plots")) == ["interpolation.txt", "learning_curves.png", "samples.txt"]


def test_molecule_commands_and_their_errors(trained, tmp_path, capsys):
    assert cli.main(["sample", str(trained), "-o", str(tmp_path / "s.smi"), "--n", "7", "--seed", "3"]) == 0
    assert cli.main(["sample", str(trained), "-o", str(tmp_path / "again.smi"), "--n", "7", "--seed", "3"]) == 0
    assert (tmp_path / "s.smi").read_text() == (tmp_path / "again.smi").read_text()
    assert cli.main(["interpolate", str(trained), "-o", str(tmp_path / "i.txt"), "--pairs", "2"]) == 0
    assert len((tmp_path / "i.txt").read_text().splitlines()) == 20
    assert cli.main(["interpolate", str(trained), "-o", str(tmp_path / "i.png"), "--pairs", "1"]) == 0
    assert (tmp_path / "i.png").stat().st_size > 0
    capsys.readouterr()
    assert cli.main(["manifold", str(trained), "-o", str(tmp_path / "m.png")]) == 2
    assert cli.main(["sample", str(trained), "-o", str(tmp_path / "s.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "makes molecules, not pictures" in err[0] and "name a .txt or .smi" in err[1]


def test_train_refuses_an_image_model_on_molecules_without_a_run_folder(tmp_path, capsys):
    assert cli.main(["train", "--model", "vae", "--dataset", "moses", "--out", str(tmp_path / "r")]) == 2
    assert "reads images; moses holds tokens" in capsys.readouterr().err and not (tmp_path / "r").exists()
