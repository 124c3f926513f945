"""The seed's GAN, translation and reinforcement-learning experiments, reduced for the suite.

- ``gan``: PBT ranks on the digits-classifier Inception-style score of 500 samples drawn from one
  fixed noise batch; the selection and test splits score 500 and 2000 samples from noise batches
  no ranking ever drew (different seeds).
- ``translate``: PBT ranks on BLEU over the validation sentences; selection and test are 150 and
  300 further number sentences, none of them in training or validation.
- ``rl``: PBT ranks on the mean return of 3 greedy episodes (seeds 10000-10002, as in
  ``experiments.rl``); selection and test are 5 and 10 greedy episodes with seeds 20000+ and
  30000+, never used for ranking.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

import poptrain
from experiments.quality.task import SELECTION, TEST, Task

GAN_SPLITS = {"validation": 12345, SELECTION: 2024, TEST: 4048}  # noise-batch seeds
GAN_SAMPLES = {SELECTION: 500, TEST: 2000}


def _gan_scorer(trainable: poptrain.Trainable, split: str) -> float:
    from experiments import gan

    noise = torch.randn(GAN_SAMPLES[split], gan.NOISE, generator=torch.Generator().manual_seed(GAN_SPLITS[split]))
    model = trainable.generator  # type: ignore[attr-defined]
    model.eval()
    with torch.no_grad():
        return gan.inception_score(model(noise))


def gan(quick: bool = False) -> Task:
    """The digits DCGAN (``experiments.gan``): generator and discriminator learning rates, beta1."""
    from experiments import gan as seed_gan

    population, steps = (4, 2) if quick else (6, 4)
    return Task(
        name="gan",
        scale=f"population {population} (the seed's 20), {steps} steps of {seed_gan.GENERATOR_STEPS} generator "
        "updates, ready every 2",
        held_out="the score of 2000 samples from a noise batch ranking never drew (selection: another 500)",
        trainable=seed_gan.DigitsGAN,
        space=seed_gan.SPACE,
        population=population,
        steps=steps,
        ready=2,
        metric="score",
        noise=GAN_SCORE_NOISE,
        score=_gan_scorer,
        splits={name: frozenset({seed}) for name, seed in GAN_SPLITS.items()},
        explore=poptrain.perturb((0.8, 1.2)),
    )


# the score's spread over noise batches of 500 samples for one generator (measured: about 0.05)
GAN_SCORE_NOISE = 0.05

TRANSLATE_SELECTION, TRANSLATE_TEST, TRANSLATE_VAL, TRANSLATE_TRAIN = 150, 300, 300, 1500


@functools.cache
def translate_corpus() -> dict[str, Any]:
    """Distinct number sentences: selection, test, then validation and training (``make_corpus``)."""
    from experiments import translate as seed

    held = TRANSLATE_SELECTION + TRANSLATE_TEST
    source, target = seed.number_corpus(held + TRANSLATE_VAL + TRANSLATE_TRAIN, seed=1)
    corpus = seed.make_corpus(source[held:], target[held:], held_out=TRANSLATE_VAL, length=16)
    encode = corpus.src_vocab.encode

    def part(lo: int, hi: int) -> tuple[torch.Tensor, list[str]]:
        tokens = [seed.tokenize(s) for s in source[lo:hi]]
        refs = [" ".join(seed.tokenize(t)) for t in target[lo:hi]]
        return torch.tensor([encode(s, corpus.length) for s in tokens]), refs

    return {
        "corpus": corpus,
        SELECTION: part(0, TRANSLATE_SELECTION),
        TEST: part(TRANSLATE_SELECTION, held),
        "sentences": {
            SELECTION: frozenset(source[:TRANSLATE_SELECTION]),
            TEST: frozenset(source[TRANSLATE_SELECTION:held]),
            "validation": frozenset(source[held : held + TRANSLATE_VAL]),
            "train": frozenset(source[held + TRANSLATE_VAL :]),
        },
    }


def _translate_scorer(trainable: poptrain.Trainable, split: str) -> float:
    import sacrebleu

    src, refs = translate_corpus()[split]
    data = trainable.data  # type: ignore[attr-defined]
    model = trainable.model  # type: ignore[attr-defined]
    model.eval()
    with torch.no_grad():
        hypotheses = [data.tgt_vocab.decode(row.tolist()) for row in model.greedy(src, data.length)]
    return float(sacrebleu.corpus_bleu(hypotheses, [refs], tokenize="none", force=True).score)


def translate(quick: bool = False) -> Task:
    """The GRU translation model with attention (``experiments.translate``) on English-to-German numbers."""
    from experiments import translate as seed

    corpus = translate_corpus()["corpus"]
    population, steps = (4, 2) if quick else (6, 6)
    return Task(
        name="translate",
        scale=f"population {population} (the seed's 8), {steps} steps of {seed.Translator.batches} batches, "
        f"ready every 2; {TRANSLATE_TRAIN} training sentences",
        held_out=f"corpus BLEU on {TRANSLATE_TEST} unseen sentences (selection: {TRANSLATE_SELECTION} more); PBT "
        f"ranks on BLEU over {TRANSLATE_VAL} validation sentences",
        trainable=seed._corpus_trainable(corpus),
        space=seed.SPACE,
        population=population,
        steps=steps,
        ready=2,
        metric="bleu",
        noise=1.0,  # BLEU points: the spread of corpus BLEU over 300-sentence samples (about 1)
        score=_translate_scorer,
        splits=translate_corpus()["sentences"],
        explore=poptrain.perturb((0.8, 1.2)),
    )


RL_EPISODES = {SELECTION: (20_000, 5), TEST: (30_000, 10)}  # first seed, episodes


def greedy_return(trainable: Any, first_seed: int, episodes: int) -> float:
    """Mean return of greedy episodes with seeds ``first_seed, first_seed + 1, ...``."""
    returns = []
    for episode in range(episodes):
        state, _ = trainable.env.reset(seed=first_seed + episode)
        total, done = 0.0, False
        while not done:
            state, reward, terminated, truncated, _ = trainable.env.step(trainable._act(state, 0.0))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def _rl_scorer(trainable: poptrain.Trainable, split: str) -> float:
    return greedy_return(trainable, *RL_EPISODES[split])


def rl(quick: bool = False) -> Task:
    """Double SARSA on CartPole (``experiments.rl``'s quick trainable): lr and gamma."""
    from experiments import rl as seed

    population = 4 if quick else 6
    steps = 2 if quick else seed.CartPoleSarsa.total_rounds
    return Task(
        name="rl",
        scale=f"CartPole, population {population}, {steps} rounds of {seed.CartPoleSarsa.episodes} episodes, "
        "ready every round",
        held_out="mean return of 10 greedy episodes with seeds 30000-30009 (selection: 5 with seeds 20000+); PBT "
        "ranks on 3 episodes with seeds 10000-10002",
        trainable=seed.CartPoleSarsa,
        space=seed.SPACE,
        population=population,
        steps=steps,
        ready=1,
        metric="return",
        noise=RL_RETURN_NOISE,
        score=_rl_scorer,
        splits={
            "validation": frozenset(range(10_000, 10_003)),
            **{name: frozenset(range(first, first + n)) for name, (first, n) in RL_EPISODES.items()},
        },
        explore=poptrain.perturb((0.8, 1.2)),
    )


# the spread of a 3-episode mean return of one greedy CartPole policy over episode seeds (measured)
RL_RETURN_NOISE = 20.0
