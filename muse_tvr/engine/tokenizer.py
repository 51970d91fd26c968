"""CLIP's byte-level BPE tokenizer, as the MUSE reference feeds captions to CLIP (docs/model.md section 1).

A caption becomes `[SOT] + tokens[:max_words-2] + [EOT]`, zero-padded to `max_words` (32 in MUSE).
Ids are bit-for-bit those of OpenAI CLIP's tokenizer (and of open_clip's, see `tests/test_tokenizer.py`).

Pipeline: ftfy repair, HTML entities decoded twice, whitespace runs collapsed, lower-cased; then split into
pre-tokens with CLIP's pattern; each pre-token's UTF-8 bytes are mapped onto printable characters and
merged with the BPE table, the last symbol of a word carrying the end-of-word marker `</w>`. The merge
loop itself runs in the HF `tokenizers` BPE model: for this table (every merge ranks after the merges that
build its parts) it yields the same ids as CLIP's pure-Python loop, checked against open_clip on a fuzzed
corpus in the tests.

The table is `data/bpe_simple_vocab_16e6.txt.gz` (provenance in `data/README.md`).
"""
from __future__ import annotations

import gzip
import html
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import ftfy
import numpy as np
import regex
from tokenizers import Tokenizer
from tokenizers.models import BPE

if TYPE_CHECKING:
    import torch

SOT_ID = 49406
EOT_ID = 49407
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
VOCAB_SIZE = 49408

DEFAULT_BPE_PATH = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"

# CLIP's vocabulary keeps only the first 48894 merges of the 262144 in the file, so that the 512 byte
# symbols, the merges and the two special tokens add up to 49408 ids.
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2

# The special tokens come first in the alternation: the reference (OpenAI CLIP, CLIP4Clip, hence MUSE)
# turns a literal "<|endoftext|>" inside a caption into the EOT id. open_clip spells its special tokens
# "<start_of_text>"/"<end_of_text>" instead; plain captions tokenize identically either way.
_PRETOKEN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_SPECIAL_IDS = {SOT_TOKEN: SOT_ID, EOT_TOKEN: EOT_ID}


class TextTruncatedWarning(UserWarning):
    """A caption is longer than the model's text window; its tail is not used."""


@lru_cache(maxsize=1)
def byte_to_symbol() -> dict[int, str]:
    """The 256-entry map from a byte to the printable character standing for it in the BPE table.

    Bytes that are already visible Latin-1 characters stand for themselves; the other 68 (controls,
    space, soft hyphen, ...) are given the code points 256, 257, ... in byte order, so no symbol is
    whitespace and every byte string has a reversible spelling.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in visible}  # insertion order is vocabulary order: visible bytes first
    rest = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(rest)})
    return table


def clean_text(text: str) -> str:
    """CLIP's caption normalisation: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    text = ftfy.fix_text(text)
    # Twice, because scraped captions are often escaped twice ("&amp;amp;").
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


def _read_merges(path: Path) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is a version header.
    body = lines[1:_NUM_MERGES + 1]
    merges = []
    for lineno, line in enumerate(body, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: line {lineno} is not a merge pair: {line!r}")
        merges.append((parts[0], parts[1]))
    if len(merges) != _NUM_MERGES:
        raise ValueError(f"{path}: holds {len(merges)} merges, CLIP's vocabulary needs {_NUM_MERGES}")
    return merges


class ClipTokenizer:
    """Turns captions into CLIP token ids.

    `encode(text) -> list[int]`: BPE ids of one caption, no special tokens.
    `decode(ids) -> str`: text of ids (each word followed by a space, as CLIP decodes).
    `tokenizer(texts, max_words=32) -> torch.LongTensor (N, max_words)`: the model's text input.
    `tokenizer.ids_array(texts, max_words=32) -> numpy int64 (N, max_words)`: the same ids without torch
    (for clients and Triton Python models).
    """

    def __init__(self, bpe_path: str | Path = DEFAULT_BPE_PATH) -> None:
        merges = _read_merges(Path(bpe_path))
        symbols = list(byte_to_symbol().values())
        vocab_list = symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges]
        vocab_list += [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab_list)}
        if len(self.encoder) != VOCAB_SIZE or self.encoder[EOT_TOKEN] != EOT_ID:
            raise ValueError(f"{bpe_path}: merges give a vocabulary of {len(self.encoder)} distinct tokens, "
                             f"expected {VOCAB_SIZE}")
        self.decoder: list[str] = vocab_list
        self._byte_decoder = {sym: b for b, sym in byte_to_symbol().items()}
        # No normaliser or pre-tokenizer: words reach the model already split and spelled, and the model
        # only runs the merges. unk_token stays None because every byte symbol is in the vocabulary.
        self._bpe = Tokenizer(BPE(vocab=self.encoder, merges=merges, end_of_word_suffix=END_OF_WORD))

    @property
    def vocab_size(self) -> int:
        return len(self.decoder)

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        words_per_text = [_PRETOKEN.findall(clean_text(t)) for t in texts]
        # str.translate spells a Latin-1 view of each word's UTF-8 bytes in BPE symbols in one C-level pass.
        spell = byte_to_symbol()
        plain = [[w.encode("utf-8").decode("latin-1").translate(spell) for w in words if w not in _SPECIAL_IDS]
                 for words in words_per_text]
        encodings = self._bpe.encode_batch(plain, is_pretokenized=True, add_special_tokens=False)
        out = []
        for words, enc in zip(words_per_text, encodings):
            if not any(w in _SPECIAL_IDS for w in words):
                out.append(list(enc.ids))
                continue
            # Rare path: splice the special ids back between the BPE ids of the ordinary words.
            per_word: list[list[int]] = [[] for w in words if w not in _SPECIAL_IDS]
            for tid, wid in zip(enc.ids, enc.word_ids):
                per_word[wid].append(tid)
            ordinary = iter(per_word)
            out.append([i for w in words for i in ([_SPECIAL_IDS[w]] if w in _SPECIAL_IDS else next(ordinary))])
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without SOT/EOT; an empty list when nothing survives cleaning."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return self._encode_many([text])[0]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of `ids`. Every end of word becomes a space, so the result usually ends with one."""
        if hasattr(ids, "ndim") and hasattr(ids, "tolist"):  # a torch tensor or numpy array
            if ids.ndim > 1:
                raise ValueError(f"decode takes one sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        symbols = []
        for i in ids:
            if not 0 <= int(i) < len(self.decoder):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self.decoder)})")
            symbols.append(self.decoder[int(i)])
        data = bytes(self._byte_decoder[c] for c in "".join(symbols))
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def __call__(self, texts: str | Sequence[str], max_words: int = 32) -> torch.Tensor:
        """Token ids for a caption or a batch of captions.

        Returns an int64 tensor (N, max_words): row i is `[SOT] + tokens[:max_words-2] + [EOT]`, then zeros.
        Because EOT is the largest id, `ids.argmax(-1)` is the EOT position the text tower pools at.
        """
        import torch

        return torch.from_numpy(self._ids(texts, max_words))

    def ids_array(self, texts: str | Sequence[str], max_words: int = 32) -> np.ndarray:
        """`__call__` without torch: int64 numpy array (N, max_words), the same ids."""
        return self._ids(texts, max_words)

    def _ids(self, texts, max_words: int) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence):
            raise ValueError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 3:
            raise ValueError(f"max_words must be an int >= 3 (SOT, one token, EOT), got {max_words!r}")
        if len(texts) == 0:
            raise ValueError("no captions given (empty sequence)")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"caption {i} is a {type(t).__name__}, not a str")
        encoded = self._encode_many(texts)
        out = np.zeros((len(texts), max_words), dtype=np.int64)
        cut = []
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"caption {i} is empty after cleaning: {texts[i]!r}")
            if len(ids) > max_words - 2:
                cut.append(i)
            row = [SOT_ID, *ids[:max_words - 2], EOT_ID]
            out[i, :len(row)] = row
        if cut:
            # The model only sees max_words-2 tokens (as the reference does); say so rather than
            # silently matching on the first part of a long query. One warning per call, not per caption.
            first = texts[cut[0]]
            shown = first if len(first) <= 80 else first[:77] + "..."
            more = f" and {len(cut) - 1} more caption(s)" if len(cut) > 1 else ""
            warnings.warn(f"query {shown!r} has {len(encoded[cut[0]])} tokens; only the first {max_words - 2} "
                          f"are used{more}", TextTruncatedWarning, stacklevel=3)  # the caller of __call__ / ids_array
        return out
