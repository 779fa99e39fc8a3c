import math

import numpy as np

from monosemantic.data.ngram import baselines, bigram_nll, unigram_logprobs


def test_unigram_add_one_by_hand():
    lp = unigram_logprobs(np.array([0, 0, 1]), vocab_size=3)
    # counts (2, 1, 0) + 1 over 3 + 3
    assert np.allclose(np.exp(lp), [3 / 6, 2 / 6, 1 / 6])


def test_bigram_absolute_discounting_by_hand():
    train = np.array([0, 1, 0, 1, 0, 2])
    # pairs: (0,1) x2, (1,0) x2, (0,2) x1; c(0)=3 with 2 types; p_uni = (3+1, 2+1, 1+1)/(6+3)
    p_uni = np.array([4, 3, 2]) / 9
    d = 0.75
    p_0_1 = (2 - d) / 3 + d * 2 / 3 * p_uni[1]
    p_0_0 = 0 + d * 2 / 3 * p_uni[0]  # unseen pair backs off to the unigram
    p_2_1 = p_uni[1]  # unseen context: the unigram alone
    got = bigram_nll(train, np.array([0, 0, 2]), np.array([1, 0, 1]), vocab_size=3)
    assert math.isclose(got, -np.mean(np.log([p_0_1, p_0_0, p_2_1])))


def test_bigram_beats_unigram_on_structured_text():
    rng = np.random.default_rng(0)
    seq = np.tile(np.arange(10), 500) + (rng.random(5000) < 0.05)  # mostly deterministic successor
    b = baselines(seq[:4000], seq[4000:].reshape(-1, 100), vocab_size=12)
    assert b["bigram_loss"] < 0.5 * b["unigram_loss"]
