"""ClipTokenizer against open_clip's CLIP tokenizer, the reference's (OpenAI CLIP) algorithm and table."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from muse_tvr.engine.tokenizer import DEFAULT_BPE_PATH, EOT_ID, SOT_ID, ClipTokenizer  # noqa: E402

MAX_WORDS = 32

CORPUS = [
    "a man is driving a car down the road",
    "A Woman Sings On STAGE",
    "two dogs play in the snow, then run away!",
    "cooking show: chef slices onions (fast)...",
    "what's going on? it's 5:30 pm -- they're late; don't wait",
    "I'll say we've done it, you'd agree I'm right",
    "scores 3-2 in 1998; 100,000 fans; 3.14159 and 42nd street",
    "café crème brûlée naïve façade jalapeño",
    "Straße in München, Ölfässer",
    "一个男人在厨房里做饭",
    "日本語のテキストと한국어 텍스트",
    "emoji time 😀🎉👍🏽 and flags 🇯🇵",
    "tom &amp; jerry &lt;3 &quot;quoted&quot; &amp;amp; twice",
    "mojibake: cafÃ© and doesnâ€™t and Ã¼ber",
    "multiple   spaces\n\nnew lines\tand\ttabs   ",
    "  leading and trailing whitespace  ",
    "a" * 60,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "hyphen-ated words, under_scores, slashes/and\\backslashes, #hashtags @mentions",
    "url http://example.com/path?q=1&x=2 and email someone@example.org",
    "Ω≈ç√∫˜µ≤≥÷ mathematical ∑∏ symbols ½ ⅓",
    "zero\u200bwidth and combining e\u0301 accents",
    "ﬁne ligatures and Ⅻ roman numerals",
    "مرحبا بالعالم and привет мир",
    " ".join(f"word{i}" for i in range(40)),  # far beyond 30 tokens: truncated
    "the quick brown fox jumps over the lazy dog " * 8,
]


@pytest.fixture(scope="module")
def ours() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def ref():
    return open_clip.get_tokenizer("ViT-B-32", context_length=MAX_WORDS)


def test_special_ids(ours):
    assert (SOT_ID, EOT_ID) == (49406, 49407)
    assert ours.vocab_size == 49408
    assert ours.encoder["<|startoftext|>"] == SOT_ID and ours.encoder["<|endoftext|>"] == EOT_ID


def test_vocabulary_matches_open_clip(ours, ref):
    # open_clip names its special tokens differently; every other entry must agree id for id.
    ref_tokens = [ref.decoder[i] for i in range(49406)]
    assert ours.decoder[:49406] == ref_tokens


def test_shipped_table_is_open_clips_file():
    shipped = Path(DEFAULT_BPE_PATH).read_bytes()
    upstream = (Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(upstream).hexdigest()


@pytest.mark.parametrize("i", range(len(CORPUS)))
def test_batch_row_matches_open_clip(ours, ref, i):
    got = ours(CORPUS[i], max_words=MAX_WORDS)
    want = ref(CORPUS[i])
    assert got.dtype == torch.long and got.shape == (1, MAX_WORDS)
    assert got.tolist() == want.tolist(), CORPUS[i]


def test_whole_corpus_batch_matches_open_clip(ours, ref):
    assert torch.equal(ours(CORPUS, max_words=MAX_WORDS), ref(CORPUS))


def test_encode_matches_open_clip(ours, ref):
    for text in CORPUS:
        assert ours.encode(text) == ref.encode(text), text


def test_random_strings_match_open_clip(ours, ref):
    rng = random.Random(1234)
    pieces = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,!?'\"-&;:()") + [
        "é", "ß", "中", "한", "😀", "👍🏽", "\u200b", "\t", "\n", "&amp;", "'s", "'re", "'t", "Ã©", "\u0301", "½"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(1500)]
    texts += ["".join(chr(rng.randint(32, 0x2FFFF)) for _ in range(rng.randint(1, 12))) for _ in range(500)]
    # Text made of real vocabulary entries exercises long merge chains.
    texts += [ref.decode([rng.randint(0, 49405) for _ in range(rng.randint(1, 8))]) for _ in range(1000)]
    got = ours._encode_many(texts)
    for text, ids in zip(texts, got):
        assert ids == ref.encode(text), repr(text)


def test_truncation_convention(ours, ref):
    long = " ".join(f"word{i}" for i in range(40))
    tokens = ours.encode(long)
    assert len(tokens) > MAX_WORDS
    row = ours(long, max_words=MAX_WORDS)[0].tolist()
    assert row == [SOT_ID, *tokens[:MAX_WORDS - 2], EOT_ID]
    assert row[-1] == EOT_ID
    # open_clip cuts to the context and overwrites the last slot with EOT: the same row.
    assert ref(long)[0].tolist() == row


def test_padding_and_eot_is_argmax(ours):
    ids = ours(["a dog", "a cat runs"], max_words=MAX_WORDS)
    for row, text in zip(ids, ["a dog", "a cat runs"]):
        n = len(ours.encode(text))
        assert row[0] == SOT_ID and row[n + 1] == EOT_ID
        assert (row[n + 2:] == 0).all()
        assert int(row.argmax()) == n + 1


def test_other_max_words(ours):
    ids = ours("the quick brown fox", max_words=3)
    assert ids.tolist() == [[SOT_ID, ours.encode("the")[0], EOT_ID]]
    assert ours("a dog", max_words=77).shape == (1, 77)


def test_literal_special_token_follows_openai(ours):
    # The reference tokenizer (OpenAI CLIP / CLIP4Clip) maps the literal text to the special id.
    a, b = ours.encode("a")[0], ours.encode("b")[0]
    assert ours.encode("a <|endoftext|> b") == [a, EOT_ID, b]
    assert ours.encode("<|startoftext|>") == [SOT_ID]


@pytest.mark.parametrize("texts, index", [
    ("", 0),
    (["a dog", "   \n\t "], 1),
    (["a dog", "a cat", ""], 2),
])
def test_empty_caption_raises_with_index(ours, texts, index):
    with pytest.raises(ValueError, match=f"caption {index} is empty"):
        ours(texts)


@pytest.mark.parametrize("max_words", [2, 0, -1, 3.5, True])
def test_bad_max_words_raises(ours, max_words):
    with pytest.raises(ValueError, match="max_words"):
        ours("a dog", max_words=max_words)


def test_bad_texts_raise(ours):
    with pytest.raises(ValueError, match="caption 1 is a int"):
        ours(["a dog", 3])
    with pytest.raises(ValueError, match="no captions"):
        ours([])
    with pytest.raises(ValueError, match="must be a str"):
        ours.encode(b"bytes")


@pytest.mark.parametrize("text", [
    "a man is driving a car down the road",
    "two dogs play in the snow",
    "weird ~~ !? punctuation",
])
def test_decode_roundtrip(ours, text):
    # Words, and punctuation runs between spaces, survive; digits and "'s" come back space-separated.
    assert ours.decode(ours.encode(text)).strip() == text
    assert ours.decode(torch.tensor(ours.encode(text))).strip() == text


def test_decode_rejects_out_of_range(ours):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([1, 49408])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([-1])


def test_long_query_truncation_is_reported():
    import warnings

    from muse_tvr.engine.tokenizer import ClipTokenizer, TextTruncatedWarning

    tok = ClipTokenizer()
    long_query = "a man " * 40 + "plays guitar"
    with pytest.warns(TextTruncatedWarning, match="a man a man"):
        ids = tok(long_query, 32)
    assert ids.shape == (1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok("a short query", 32)
