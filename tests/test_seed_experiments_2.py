"""The seed's translation and deep-RL experiments: data, model, update rule and quick runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import poptrain
from poptrain.errors import ConfigError


# --- translation -----------------------------------------------------------------------------
def test_numbers_are_rendered_by_the_rules() -> None:
    from experiments.translate import english, german, number_corpus

    assert " ".join(english(42506)) == "forty two thousand five hundred six"
    assert " ".join(german(42506)) == "zwei und vierzig tausend fünf hundert sechs"
    assert " ".join(german(1001)) == "ein tausend eins" and " ".join(german(21)) == "ein und zwanzig"
    source, target = number_corpus(50, seed=3)
    assert len(set(source)) == 50 and all(len(s.split()) >= 1 for s in target)


def test_parallel_files_are_read_tokenized_and_padded(tmp_path: Path) -> None:
    from experiments.translate import EOS, PAD, UNK, make_corpus, read_parallel

    (tmp_path / "a.en").write_text("Hello, world!\nThe house.\n\nA cat sat.\n")
    (tmp_path / "a.de").write_text("Hallo, Welt!\nDas Haus.\n\nEine Katze saß.\n")
    source, target = read_parallel(tmp_path / "a.en", tmp_path / "a.de")
    assert source == ["Hello, world!", "The house.", "A cat sat."]  # the empty pair dropped
    corpus = make_corpus(source, target, held_out=1, vocab=8, length=5)
    assert corpus.val_refs == ["hallo , welt !"]
    assert corpus.train_src.shape == (2, 5) and corpus.train_src[0, -1] == PAD
    assert EOS in corpus.train_tgt[0].tolist() and UNK in corpus.val_src[0].tolist()  # unseen words map to <unk>
    (tmp_path / "b.de").write_text("eins\n")
    with pytest.raises(ConfigError, match="has 4 lines and .* has 1; a parallel corpus needs aligned lines"):
        read_parallel(tmp_path / "a.en", tmp_path / "b.de")
    with pytest.raises(ConfigError, match="does not exist"):
        read_parallel(tmp_path / "nope.en", tmp_path / "a.de")


def test_seq2seq_has_the_seeds_layers_and_attention_masks_padding() -> None:
    from experiments.translate import PAD, Seq2Seq

    model = Seq2Seq(50, 60).eval()
    src = torch.tensor([[5, 6, 7, PAD, PAD]])
    tgt_in = torch.tensor([[1, 9, 9]])
    logits = model(src, tgt_in)
    assert logits.shape == (1, 3, 60)
    assert (model.encoder.hidden_size, model.dense.in_features, model.src_embed.embedding_dim) == (96, 192, 100)
    changed = src.clone()
    changed[0, 3:] = 0  # only padding differs
    torch.testing.assert_close(model(changed, tgt_in), logits)


def test_translation_quick_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from experiments import translate

    assert translate.main(["--quick", "--root", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| pbt |" in table and "| fixed hyperparameters |" in table and "Not comparable" in table
    samples = json.loads((tmp_path / "pbt" / "translations.json").read_text())
    assert len(samples) == 5 and all(len(s) == 3 for s in samples)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pbt"][0]["best"] > 5.0  # BLEU: it learns something in 4 steps
    assert "reference:" in capsys.readouterr().out


def test_translation_from_parallel_files(tmp_path: Path) -> None:
    from experiments import translate

    source, target = translate.number_corpus(200, seed=1)
    (tmp_path / "c.en").write_text("\n".join(source))
    (tmp_path / "c.de").write_text("\n".join(target))
    assert (
        translate.main(
            [
                "--quick",
                "--src",
                str(tmp_path / "c.en"),
                "--tgt",
                str(tmp_path / "c.de"),
                "--root",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    with pytest.raises(ConfigError, match="give both --src and --tgt"):
        translate.main(["--src", str(tmp_path / "c.en")])


# --- deep reinforcement learning ------------------------------------------------------------------
def test_double_sarsa_updates_one_network_toward_the_others_estimate() -> None:
    from experiments.rl import CartPoleSarsa

    member = CartPoleSarsa()
    member.setup({"lr": 1e-2, "gamma": 0.99}, poptrain.TrainContext("rl", 0, 0))
    before = [p.detach().clone() for q in member.q for p in q.parameters()]
    member.episodes = 1
    member.step()
    after = [p.detach() for q in member.q for p in q.parameters()]
    changed = [not torch.equal(a, b) for a, b in zip(after, before)]
    assert any(changed[:4]) and any(changed[4:])  # both networks learn, each from the other
    assert member.episodes_done == 1 and member.epsilon() < 1.0
    scores = member.evaluate()
    assert scores["return"] >= 1.0 and 0.1 <= scores["epsilon"] <= 1.0


def test_rl_quick_mode(tmp_path: Path) -> None:
    from experiments import rl

    assert rl.main(["--quick", "--root", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "CartPole-v1" in table and "| pbt |" in table and "| no exploit/explore |" in table
    assert (tmp_path / "pbt" / "schedules.png").is_file()


@pytest.mark.parametrize("module", ["translate", "rl"])
def test_experiments_run_from_the_command_line(module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    code = main(
        [
            "run",
            f"experiments.{module}",
            "--root",
            str(tmp_path),
            "--population",
            "2",
            "--steps",
            "1",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
