"""Token ids <-> text for Whisper's byte-level BPE vocabulary, plus its special tokens.

Decoding (ids -> text) is all the decoder needs, from vocabulary.txt: one
token per line, line number = id, in GPT-2's printable byte alphabet.
Encoding text (a prompt) needs the BPE merges: the model directory's
tokenizer.json, read by Hugging Face `tokenizers` (its Rust BPE is exact
and fast; a hand-written merge loop would be neither).

Multilingual models have one `<|xx|>` token per language right after
<|startoftranscript|>, in the order of the manifest's `languages`.
"""

from __future__ import annotations

import codecs

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from edge.errors import ModelError


class TokenizerError(ModelError):
    """The model directory's vocabulary or config is missing or malformed."""


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte -> printable character map, inverted.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are
    shifted to code points 256.. in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in set(printable)]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


def token_texts(tokens: Sequence[str], eot: int) -> list[str | None]:
    """Each text token's own UTF-8 text, None where it is only part of a character (one byte of
    "张"): for tables over the vocabulary built once per model."""
    table = unicode_to_byte()
    texts: list[str | None] = []
    for token in tokens[:eot]:
        try:
            texts.append(bytes(table[ch] for ch in token).decode("utf-8"))
        except (KeyError, UnicodeDecodeError):
            texts.append(None)
    return texts


@dataclass(frozen=True)
class Tokenizer:
    """Vocabulary and the special ids the decoder needs."""

    tokens: tuple[str, ...]
    eot: int
    sot: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    sot_sequence: tuple[int, ...]
    suppress_ids: tuple[int, ...]
    suppress_ids_begin: tuple[int, ...]
    languages: tuple[str, ...] = ("en",)  # codes whose <|xx|> tokens follow <|startoftranscript|> (multilingual)
    transcribe: int | None = None  # <|transcribe|>; None for English-only models
    bpe_path: Path | None = None  # tokenizer.json, for encoding prompts

    @classmethod
    def from_dir(cls, model_dir: Path) -> "Tokenizer":
        """Read vocabulary.txt and config.json of a model directory."""
        model_dir = Path(model_dir)
        try:
            tokens = tuple((model_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n"))
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TokenizerError(f"{model_dir}: cannot read the vocabulary/config ({exc})") from None
        if not isinstance(config, dict):
            raise TokenizerError(f"{model_dir / 'config.json'}: not a JSON object")
        if tokens and tokens[-1] == "":
            tokens = tokens[:-1]
        bpe = model_dir / "tokenizer.json"
        return replace(cls.from_vocabulary(tokens, config), bpe_path=bpe if bpe.is_file() else None)

    @classmethod
    def from_vocabulary(cls, tokens: tuple[str, ...], config: dict) -> "Tokenizer":
        """Find the special tokens by name so that any Whisper vocabulary works."""
        index = {token: i for i, token in enumerate(tokens)}

        def special(name: str) -> int:
            if name not in index:
                raise TokenizerError(f"vocabulary has no {name} token")
            return index[name]

        no_speech_name = "<|nospeech|>" if "<|nospeech|>" in index else "<|nocaptions|>"
        sot = special("<|startoftranscript|>")
        multilingual = "<|en|>" in index and index["<|en|>"] == sot + 1 and len(tokens) >= 51865
        languages = language_codes(tokens, sot) if multilingual else ("en",)
        sot_sequence = (sot, sot + 1, special("<|transcribe|>")) if multilingual else (sot,)
        return cls(
            tokens=tuple(tokens),
            eot=special("<|endoftext|>"),
            sot=sot,
            sot_prev=special("<|startofprev|>"),
            no_speech=special(no_speech_name),
            no_timestamps=special("<|notimestamps|>"),
            timestamp_begin=special("<|0.00|>"),
            sot_sequence=sot_sequence,
            suppress_ids=tuple(int(i) for i in config.get("suppress_ids", ())),
            suppress_ids_begin=tuple(int(i) for i in config.get("suppress_ids_begin", ())),
            languages=languages,
            transcribe=special("<|transcribe|>") if multilingual else None,
        )

    @property
    def multilingual(self) -> bool:
        return self.transcribe is not None

    def language_token(self, code: str) -> int:
        """<|code|>; a TokenizerError for a code this model does not know."""
        if code not in self.languages:
            raise TokenizerError(f"this model has no language {code!r}")
        return self.sot + 1 + self.languages.index(code)

    def start_sequence(self, language: str | None) -> tuple[int, ...]:
        """<|startoftranscript|><|lang|><|transcribe|> (multilingual), or <|startoftranscript|> (English-only)."""
        if not self.multilingual or language is None:
            return self.sot_sequence
        return (self.sot, self.language_token(language), self.transcribe)

    def encode(self, text: str) -> tuple[int, ...]:
        """Text tokens of `text` (a prompt); needs the model's tokenizer.json."""
        return _bpe(self.bpe_path)(text)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def is_text(self, token: int) -> bool:
        return 0 <= token < self.eot

    def decode(self, ids: list[int]) -> str:
        """Text of the ordinary tokens in `ids`; special and timestamp tokens are skipped. A character
        cut off at the end (a Chinese one is 3 bytes, often 2 tokens: a partial, or a sample that
        stopped mid-character) is left out rather than shown as U+FFFD."""
        table = unicode_to_byte()
        data = bytearray()
        for token in ids:
            if self.is_text(token):
                data.extend(table[ch] for ch in self.tokens[token])
        return codecs.getincrementaldecoder("utf-8")("replace").decode(bytes(data), final=False)

    def cut_character(self, ids: Sequence[int]) -> int:
        """How many of the last text tokens of `ids` it takes to hold the start of a character that
        they end in the middle of (0 if none): a timestamp can fall between the 2-3 tokens of one
        Chinese character, and each segment is decoded on its own."""
        table = unicode_to_byte()
        pieces = [bytes(table[ch] for ch in self.tokens[t]) for t in ids if self.is_text(t)]
        missing = _started_bytes(b"".join(pieces[-4:]))
        count = 0
        while missing > 0:
            missing -= len(pieces[-1 - count])
            count += 1
        return count

    def timestamp_seconds(self, token: int) -> float:
        """Time of a timestamp token (Whisper's 20 ms steps)."""
        return (token - self.timestamp_begin) * 0.02


def _started_bytes(data: bytes) -> int:
    """How many bytes at the end of `data` begin a UTF-8 character that is not complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a character's first byte
            length = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return back if length > back else 0
    return 0


def language_codes(tokens: tuple[str, ...], sot: int) -> tuple[str, ...]:
    """The `<|xx|>` codes right after <|startoftranscript|>, up to the first non-language token."""
    codes = []
    for token in tokens[sot + 1 :]:
        code = token[2:-2] if token.startswith("<|") and token.endswith("|>") else ""
        if not code or not code.replace("-", "").isalpha() or code in ("translate", "transcribe"):
            break
        codes.append(code)
    return tuple(codes)


@lru_cache(maxsize=4)
def _bpe(path: Path | None):  # noqa: ANN202 - a tokenizers.Tokenizer.encode wrapper
    if path is None:
        raise TokenizerError("this model directory has no tokenizer.json: rebuild it with scripts/build_model.py")
    from tokenizers import Tokenizer as BpeTokenizer

    bpe = BpeTokenizer.from_file(str(path))
    # Text is text: a term or prompt "<|endoftext|>" became the end token, and at weight 5 cut every
    # transcript to its first word (tokenizers >= 0.19 has this switch)
    bpe.encode_special_tokens = True
    return lambda text: tuple(bpe.encode(text, add_special_tokens=False).ids)
