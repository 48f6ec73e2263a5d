import pytest

from bettersynth.core.sample import Sample
from bettersynth.ops import WordsNumFilter
from bettersynth.ops.words_num_filter import count_words


def test_ops_count_words_ignores_special_tokens_and_punctuation():
    assert count_words("<__dj__image> a red bus , on the street! <|__dj__eoc|>") == 6
    assert count_words("<__dj__image>hello<|__dj__eoc|><__dj__image> world -- ...") == 2
    assert count_words("don't stop") == 2
    assert count_words("“quoted” — dash") == 2
    assert count_words("<__dj__image> <|__dj__eoc|>") == 0


def _sample(n_words: int) -> Sample:
    return Sample(id=str(n_words), text="<__dj__image> " + " ".join(["w"] * n_words) + " <|__dj__eoc|>", images=["x.png"])


def test_ops_words_num_closed_bounds():
    op = WordsNumFilter(WordsNumFilter.Config(min_num=3, max_num=5))
    batch = [_sample(n) for n in (2, 3, 4, 5, 6)]
    decisions = op.process(batch)
    assert [d.keep for d in decisions] == [False, True, True, True, False]
    assert [s.stats["num_words"] for s in batch] == [2, 3, 4, 5, 6]
    assert decisions[0].bound == "min_num=3" and decisions[0].value == 2 and decisions[0].stat == "num_words"
    assert decisions[4].bound == "max_num=5"
    assert decisions[1].bound is None


def test_ops_words_num_defaults_and_validation():
    cfg = WordsNumFilter.Config()
    assert cfg.min_num == 10 and cfg.max_num > 10**15
    with pytest.raises(ValueError, match="min_num"):
        WordsNumFilter.Config(min_num=5, max_num=4)
    with pytest.raises(ValueError, match="extra"):
        WordsNumFilter.Config(min_words=5)
