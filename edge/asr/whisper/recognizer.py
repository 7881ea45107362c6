"""The Whisper `Recognizer`: 16 kHz audio -> `Transcript`, on any `WhisperBackend`.

Short audio (<= 30 s) is encoded at its real length plus a short pad of
silence, not as a 30 s window. Longer audio goes through Whisper's seek loop
(decode a window with timestamps, move on by its last complete segment) over
windows that end in a pause and are padded the same way.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from edge.asr.base import Interrupt, Segment, Transcript
from edge.asr.text import SCRIPTS, UNSPACED, as_written, spellings, tidy
from edge.asr.whisper.bias import (
    GLOSSARY_TOKENS, BiasTrie, build_trie, glossary, glossary_size, glossary_terms, glossary_tokens, idle_forms,
    ordinary_forms, recital,
)
from edge.asr.whisper.graph import WhisperBackend
from edge.asr.whisper.decoding import (
    LOGPROB_THRESHOLD,
    MAX_PROMPT_TOKENS,
    MAX_SAMPLE_TOKENS,
    DecodeOptions,
    DecodeResult,
    Decoder,
    compression_ratio,
)
from edge.asr.whisper.features import (
    DYNAMIC_RANGE,
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    MIN_WINDOW_SECONDS,
    N_FFT,
    N_FRAMES,
    N_SAMPLES,
    PAD_SECONDS,
    encoder_window,
    log_mel,
    quietest_frame,
    window_frames,
)
from edge.asr.whisper.tokenizer import Tokenizer
from edge.audio.base import SAMPLE_RATE
from edge.errors import ModelError
from edge.manifest import read, tuning
from edge.vocabulary import Cue, Respelling, Vocabulary, cues, respelling, without_forms

MODEL_FILES = ("manifest.json", "encoder.onnx", "decoder.onnx", "vocabulary.txt", "config.json")
# Hard cap on sampled tokens per window, well above fast speech (~5 tokens/s).
TOKENS_PER_SECOND = 10
MIN_TOKEN_BUDGET = 16
# Mel frames per timestamp step (20 ms): the seek loop's unit.
FRAMES_PER_TIMESTAMP = 2
# A window whose text ends this long before the window does has its tail decoded again
# (`Recognizer._unheard_tail`). 0.5, 1.0 and 1.5 s gave the same longform_en WER (2.9) and
# joined zh CER (19.4); 0.5 s cost longform_zh 0.7 CER; 1.5 s decodes the fewest tails.
TAIL_RECHECK_SECONDS = 1.5
VOICE_FRAMES = 10  # 100 ms: the loudest stretch of a tail that `_has_voice` compares
# Seek-loop windows hold at most LONG_WINDOW_SECONDS of audio, end at the quietest
# point of their last CUT_SEARCH_SECONDS and are padded with silence like a short
# utterance, so no window ends mid-word. On longform_en (INT8, beam 5) this gave
# 2% WER against 10% for Whisper's 30 s windows, and encoding 20 s instead of 30 s
# halves the encoder's ~100 MiB attention peak.
LONG_WINDOW_SECONDS = 18
CUT_SEARCH_SECONDS = 5.0
# Below this peak level (-80 dBFS) the input is digital silence, on which Whisper
# still "hears" a confident "you": skip the model.
SILENT_PEAK = 1e-4
# Temperatures above this make the text too unreliable to condition the next window on.
PROMPT_RESET_TEMPERATURE = 0.5
# Frames before a seek point that its first STFT frame reads (N_FFT / 2 samples back).
STFT_REACH_FRAMES = -(-(N_FFT // 2) // HOP_LENGTH)
# vocabulary.prompt: auto gives a list as the glossary when all of it fits: ~10 names (10 terms of
# scripts/vocab/terms_en.txt: 35-55 tokens). The glossary runs as a second decoder stream, so a
# longer one costs more: with the 39-term list (156 tokens used) finals took 1.65x the decode
# time of no list and recalled 71 % of the terms, against 1.5x and 85 % for 10-term lists; a
# 50-term list may cost at most 1.25x (issue 11), so auto gives a long list the prefix tree alone.
AUTO_GLOSSARY_TOKENS = 64


@dataclass(frozen=True)
class WhisperOptions:
    """Whisper's own options.

    `beam_size`: the beam of a full decode (partials are always greedy).
    `language`: a code of the model's, or None to detect it per call (per file in long-form).
    `prompt`: text tokens given as "said before" ahead of any context (Whisper's initial prompt).
    `bias`: the vocabulary's prefix tree, or None for no vocabulary.
    `glossary`: the vocabulary's terms as a prompt, put before `prompt` in a second decoder
    stream whose only use is to lift the terms' tokens, in full decodes and the windows of long
    audio (not in partials: a second stream would double a greedy decode).
    `script`: how Chinese text is shown, a key of `edge.asr.text.SCRIPTS`; `written`: the
    vocabulary's terms that are shown as written in it (`edge.asr.text.as_written`).
    """

    beam_size: int = 5
    language: str | None = None
    prompt: tuple[int, ...] = ()
    bias: BiasTrie | None = None
    glossary: tuple[int, ...] = ()
    recital: re.Pattern[str] | None = None  # a result that recites the glossary (bias.recital)
    script: str = "simplified"
    written: tuple[tuple[str, str], ...] = ()
    respell: Respelling | None = None  # the vocabulary's sounds-like forms shown as their terms
    cues: tuple[Cue, ...] = ()  # terms whose ordinary forms, heard in a final, have it decoded again (`_rechecked`)


@dataclass(frozen=True)
class _Biasing:
    """What one vocabulary becomes for this model: `shown` is the list less its sounds-like forms of ordinary
    words, which are `cues` instead (the tree favours and the rewrite shows the other forms) for the terms that
    are not in the glossary already."""

    glossary: tuple[int, ...]
    trie: BiasTrie | None
    recital: re.Pattern[str] | None
    shown: Vocabulary
    cues: tuple[Cue, ...]


def token_budget(seconds: float) -> int:
    """Most tokens worth sampling for this much audio: stops runaway output early."""
    return min(MAX_SAMPLE_TOKENS, int(TOKENS_PER_SECOND * seconds) + MIN_TOKEN_BUDGET)


def check_model_dir(model_dir: Path) -> None:
    """Fail early, in one line, on a directory that is not a built model."""
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist (build it with scripts/build_model.py)")
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(f"model directory {model_dir} is incomplete: missing {', '.join(missing)}")
    try:  # as load.read_manifest says it, which this family cannot import: load imports the family
        read(model_dir)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir / 'manifest.json'} is not a valid model manifest ({exc})") from None


def prompted(vocabulary: Vocabulary, language: str, languages: tuple[str, ...]) -> bool:
    """vocabulary.prompt: always, never, or (auto) where the speech is known to be English.

    As a second decoder stream (decoding.py), 10-term lists recalled 85 % of scripts/vocab's
    English terms instead of 40 % with the tree alone, and unrelated 10-term lists changed
    no word of any eval set; long files with their own terms: 83 % instead of 38 %, WER
    16.9 -> 8.4 (docs/benchmarks.md, "the glossary as a second stream"). Each final then
    takes ~1.5x the decode time. whisper-base on Mandarin gains too (10-term lists: 89 %
    instead of 79 %, zh eval set +0.1 CER) but at 1.8x the decode time, which takes its
    streaming finals past the latency target on 2 cores (p50/p95 476/805 ms with a 19-term
    list, 425/471 without the prompt): there `true` is the operator's choice.
    """
    if vocabulary.glossary == "auto":
        return language == "en" or languages == ("en",)
    return bool(vocabulary.glossary)


def vocabulary_advice(vocabulary: Vocabulary, tokenizer: Tokenizer, language: str) -> str | None:
    """What a technician should know of how the model uses the list (None: nothing): the glossary's and
    the sounds-like forms' advice, as one message."""
    parts = (glossary_advice(vocabulary, tokenizer, language), forms_advice(vocabulary, tokenizer, language))
    return "; ".join(part for part in parts if part) or None


def forms_advice(vocabulary: Vocabulary, tokenizer: Tokenizer, language: str, shown: int = 6) -> str | None:
    """A warning naming the sounds-like forms of ordinary words (`bias.ordinary_forms`) that can do nothing (None:
    there are none). Such a form is never shown as its term (the same words said by anyone would become it); it
    only has a final decoded again with its term as a prompt (`Recognizer._rechecked`), which vocabulary.prompt:
    false, or auto on speech not known to be English, rules out, and which a word as common as "me" never gets
    (`bias.idle_forms`)."""
    ordinary = ordinary_forms(vocabulary, tokenizer)
    inert = idle_forms(ordinary, tokenizer) if prompted(vocabulary, language, tokenizer.languages) else ordinary
    if not inert:
        return None
    named = ", ".join(f'"{form}" ({term})' for term, form in inert[:shown])
    more = f" and {len(inert) - shown} more" if len(inert) > shown else ""
    return (f"vocabulary: {len(inert)} sounds-like form(s) are or start with ordinary words and do nothing here: "
            f"{named}{more}. Such a form is never shown as its term; where it is heard, the final is decoded again "
            "with the term as a prompt, but not under vocabulary.prompt: false (or auto, on speech not known to be "
            "English), nor for a word as common as \"me\"")


def glossary_advice(vocabulary: Vocabulary, tokenizer: Tokenizer, language: str) -> str | None:
    """What a technician should know of how much of the list the glossed pass gets (None: all of it, or none
    was asked for): `auto` leaves a list over AUTO_GLOSSARY_TOKENS to the prefix tree alone, and `true` keeps
    the heaviest terms within GLOSSARY_TOKENS, silently otherwise. On scripts/vocab (tiny.en) that is the
    difference between 40 % of the names with the tree alone and 85 % with a 10-name list as the glossary."""
    if not vocabulary or not prompted(vocabulary, language, tokenizer.languages):
        return None
    count, tokens = len(vocabulary.terms), glossary_size(vocabulary, tokenizer)
    if vocabulary.glossary == "auto":  # decided as `_biasing` decides it
        if glossary_terms(vocabulary, tokenizer, AUTO_GLOSSARY_TOKENS, whole=True):
            return None
        return (f"vocabulary: the {count} terms take {tokens} of the model's tokens as a prompt, more than the "
                f"{AUTO_GLOSSARY_TOKENS} (about 10 names) that vocabulary.prompt: auto hands the model, so only the "
                "prefix tree favours them: on our English test set that got 40 % of the names right, against 85 % "
                "with a list of the 10 names of one meeting. Keep the list to the names this room needs now (an app "
                "can send each meeting's list over the socket), or set vocabulary.prompt: true (transcribe: "
                "--vocabulary-prompt true; the whole 39-name list: 71 %, each final about 1.65x the decode time)")
    named = len(glossary_terms(vocabulary, tokenizer, GLOSSARY_TOKENS))
    if named < count:
        return (f"vocabulary: the {count} terms take {tokens} of the model's tokens as a prompt; vocabulary.prompt: "
                f"true hands the model at most {GLOSSARY_TOKENS}, so {named} of them (the heaviest first) are in the "
                f"prompt and the other {count - named} only get the prefix tree's bonus: raise the weight of a term "
                "that must be in it, or shorten the list")
    return None


class Recognizer:
    """Audio in, text out; knows nothing of the hardware behind `backend`."""

    def __init__(
        self,
        backend: WhisperBackend,
        tokenizer: Tokenizer,
        *,
        pad_seconds: float = PAD_SECONDS,
        min_window_seconds: float = MIN_WINDOW_SECONDS,
        long_window_seconds: float = LONG_WINDOW_SECONDS,
        use_context: bool = True,
    ) -> None:
        """`use_context`: give the text said before as a prompt (the model's manifest tuning says)."""
        self.backend = backend
        self.use_context = use_context
        self.tokenizer = tokenizer
        self.decoder = Decoder(backend, tokenizer)
        self.pad_seconds = pad_seconds
        self.min_window_seconds = min_window_seconds
        self.long_window_frames = min(N_FRAMES, int(long_window_seconds * FRAMES_PER_SECOND))
        self.cut_search_frames = int(CUT_SEARCH_SECONDS * FRAMES_PER_SECOND)
        self.tail_recheck_frames = int(TAIL_RECHECK_SECONDS * FRAMES_PER_SECOND)
        self.short_rest_frames = self.tail_recheck_frames  # `_unsure_rest`
        self._biases: dict[Vocabulary, _Biasing] = {}
        self._biases_lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: Path | str, threads: int = 0) -> "Recognizer":
        """CPU recognizer for a model directory; any problem with it is a `ModelError`."""
        from edge.asr.whisper.ort import OrtWhisperBackend

        model_dir = Path(model_dir)
        check_model_dir(model_dir)
        try:
            tokenizer = Tokenizer.from_dir(model_dir)
            backend = OrtWhisperBackend(model_dir, threads=threads)
        except ModelError as exc:  # a TokenizerError, or a decoder of an older build
            raise ModelError(str(exc)) from None
        except Exception as exc:  # onnxruntime raises its own untyped errors for a corrupt graph
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"cannot load the model in {model_dir}: {reason}") from None
        return cls(backend, tokenizer, use_context=tuning(model_dir).context)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def languages(self) -> tuple[str, ...]:
        return self.tokenizer.languages

    def options(
        self, *, beam_size: int = 5, language: str = "auto", prompt: str = "", vocabulary: Vocabulary = Vocabulary(),
        script: str = "simplified",
    ) -> WhisperOptions:
        if language != "auto" and language not in self.languages:
            raise ValueError(f"language {language!r} is not one this model knows ({', '.join(self.languages)})")
        if script not in SCRIPTS:
            raise ValueError(f"script {script!r} is not one of: {', '.join(SCRIPTS)}")
        biasing = self._biasing(vocabulary)
        glossed = prompted(vocabulary, language, self.languages)
        glossary = biasing.glossary if glossed else ()
        recheck = biasing.cues if glossed else ()
        return WhisperOptions(
            beam_size=beam_size,
            language=None if language == "auto" else language,
            prompt=self.tokenizer.encode(prompt) if prompt else (),
            bias=biasing.trie if vocabulary.bonus or glossary or recheck else None,  # bonus 0: the tree carries gains
            glossary=glossary,
            recital=biasing.recital,
            script=script,
            written=(written := as_written((term.text for term in vocabulary.terms), script)),
            respell=_respelling(biasing.shown, script, written),
            cues=recheck,
        )

    def vocabulary_advice(self, vocabulary: Vocabulary, language: str) -> str | None:
        return vocabulary_advice(vocabulary, self.tokenizer, language)

    def _biasing(self, vocabulary: Vocabulary) -> "_Biasing":
        """The glossary prompt, the prefix tree and the recital check, made once per list:
        partials and finals share them, and a reload with the same list reuses them."""
        with self._biases_lock:  # the streaming worker and a reload may both ask (a one-entry cache)
            built = self._biases.get(vocabulary)
            if built is None:
                auto = vocabulary.glossary == "auto"
                limit = AUTO_GLOSSARY_TOKENS if auto else GLOSSARY_TOKENS
                named = glossary_terms(vocabulary, self.tokenizer, limit, whole=auto) if vocabulary.glossary else ()
                prompt = glossary_tokens(named, self.tokenizer) if named else ()
                ordinary = ordinary_forms(vocabulary, self.tokenizer)
                idle = idle_forms(ordinary, self.tokenizer)
                shown = without_forms(vocabulary, ordinary)
                cued = [(term, form) for term, form in ordinary if (term, form) not in idle and term not in named]
                built = _Biasing(prompt, build_trie(shown, self.tokenizer), recital(vocabulary) if prompt else None,
                                 shown, cues(vocabulary, cued))
                self._biases = {vocabulary: built}
            return built

    def transcribe(self, audio: np.ndarray, *, partial: bool = False, context: Sequence[int] = (),
                   options: object | None = None, interrupt: Interrupt | None = None) -> Transcript:
        """Transcribe up to 30 s; `partial` = greedy with no fallback (cheap, for live partials).

        `context`: text tokens said just before, given as Whisper's previous-text prompt,
        which keeps a short utterance cut off at a pause consistent with what preceded it.
        `interrupt`: raises `Interrupted` once set, as soon as the backend can stop.
        """
        with self.backend.interruptible(interrupt) if interrupt else nullcontext():
            return self._transcribe(audio, partial, context, _whisper_options(options))

    def _transcribe(self, audio: np.ndarray, partial: bool, context: Sequence[int], wanted: WhisperOptions) -> Transcript:
        """`transcribe`, with the options read."""
        context = context if self.use_context else ()
        if partial:
            wanted = replace(wanted, beam_size=1)
        audio = _checked(audio)
        if len(audio) > N_SAMPLES:
            return self.transcribe_long(audio, options=replace(wanted, prompt=(*wanted.prompt, *context)))
        if is_digital_silence(audio):
            return Transcript.empty(1.0, wanted.language or "")
        cross = self.backend.encode(self._window(self._mel(audio), 0, len(audio) // HOP_LENGTH))
        seconds = len(audio) / SAMPLE_RATE
        request = DecodeOptions(
            beam_size=wanted.beam_size,
            max_tokens=token_budget(seconds),
            prompt=(*wanted.prompt, *context),
            glossary=() if partial else wanted.glossary,
            recital=wanted.recital,
            language=wanted.language,
            bias=wanted.bias,
        )
        if partial:
            result = self.decoder.decode(cross, request)
        else:
            result = self.decoder.decode_with_fallback(cross, request)
            if len(result.tokens) >= request.max_tokens and not result.looped:
                # the text ran past the budget, not into a loop: fast speech in a long utterance (the
                # fastest reference of ../shared/eval/zh is 8.3 base tokens a second: 232 in 28 s, against
                # MAX_SAMPLE_TOKENS 224). The timestamped windows go on where one stops.
                return self.transcribe_long(audio, options=replace(wanted, prompt=request.prompt))
        if shows_nothing(result, partial):
            return Transcript.empty(result.no_speech_prob, result.language)
        shown = self._shown(result, seconds, wanted)
        heard = () if partial else tuple(cue for cue in wanted.cues if cue.heard(shown.text, shown.alternatives))
        again = self._rechecked(cross, request, result, heard) if heard else None
        second = self._shown(again, seconds, wanted) if again else None
        return second if second and any(cue.shown.search(second.text) for cue in heard) else shown

    def _shown(self, result: DecodeResult, seconds: float, wanted: WhisperOptions) -> Transcript:
        """One window's result as one segment."""
        text = result.text.strip()
        return self._transcript(text, [result], ((0.0, round(seconds, 3), text),), wanted)

    def _rechecked(self, cross: np.ndarray, request: DecodeOptions, first: DecodeResult, heard: tuple[Cue, ...]
                   ) -> DecodeResult | None:
        """A final decoded again with the `heard` cues' terms as the glossary: the first decode (the tree alone, a
        long list under `prompt: auto`) wrote an ordinary-word form of theirs, and only the prompted model can tell
        the name from the words. It starts where the first form does (`_lead`), in one attempt at temperature 0.
        None where it would need a fallback, recites the terms, shows nothing or runs past the budget; the caller
        keeps the first result too where the second shows none of the terms: it is there to find a name, and the
        words around one may come out otherwise ("We captured the traffic with wiresharp before the Timosora
        site" -> "... Wireshark before the Temus or site").

        Measured on scripts/vocab (tiny.en, the whole 39-term list, forms learned from 6 recordings a name,
        docs/benchmarks.md "ordinary forms as cues"): names recalled 37/52 -> 43/52 offline, 33/52 -> 39/52 in
        the daemon's finals; with that list the other English eval sets kept every word, at 1.03x the time.
        """
        if first.likely_no_speech:  # the prefill would drop the glossary: the same decode again
            return None
        chosen = Vocabulary(tuple(cue.term for cue in heard))
        asked = replace(request, glossary=glossary(chosen, self.tokenizer), recital=recital(chosen),
                        lead=self._lead(first, heard))
        again = self.decoder.decode(cross, asked)  # one attempt: a fallback would sample without the glossary
        if again.needs_fallback or asked.recital.search(again.text) or shows_nothing(again, False) \
                or len(again.tokens) >= request.max_tokens:
            return None
        return again

    def _lead(self, first: DecodeResult, heard: tuple[Cue, ...]) -> tuple[int, ...]:
        """The first result's text tokens before the first place one of the `heard` forms starts in its text: the
        words before it need no second decode (none where a form was heard only in another reading of the beam).

        On scripts/vocab (9 of 25 clips decoded again, docs/benchmarks.md "ordinary forms as cues") the second
        decodes took 2.5 s instead of 3.4 s from the start, and recalled the same names.
        """
        starts = [found.start() for cue in heard if (found := cue.forms.search(first.text))]
        text = [token for token in first.tokens if self.tokenizer.is_text(token)]
        if not starts or len(text) != len(first.tokens):
            return ()
        lead, start = 0, min(starts)
        while lead < len(text) and len(self.tokenizer.decode(text[:lead + 1])) <= start:
            lead += 1
        return tuple(text[:lead])

    def transcribe_stream(
        self,
        chunks: Iterable[np.ndarray],
        *,
        options: object | None = None,
        progress: Callable[[float], None] | None = None,
        timed: bool = False,
    ) -> Transcript:
        """`transcribe` of all of `chunks` joined, holding no more than one window of them at a time.

        Long audio is read twice (see `_seek_loop`), so `chunks` must start again at each
        `iter()`: a list, an `AudioReader`; a generator is refused. `timed`: audio up to 30 s
        goes through the seek loop too, for its timestamped segments.
        """
        if iter(chunks) is chunks:
            raise TypeError("transcribe_stream reads the audio twice: pass a list or an AudioReader, not an iterator")
        tell = progress or _ignore
        head = _Lookahead(chunks).window(0, N_SAMPLES + 1)
        if timed or len(head) > N_SAMPLES:
            return self._seek_loop(chunks, _whisper_options(options), tell)
        transcript = self.transcribe(head, options=options)
        tell(len(head) / SAMPLE_RATE)
        return transcript

    def transcribe_long(self, audio: np.ndarray, *, options: WhisperOptions | None = None) -> Transcript:
        """Whisper's seek loop over audio already in memory (see `_seek_loop`)."""
        return self._seek_loop((audio,), options or WhisperOptions(), _ignore)

    def _seek_loop(
        self, chunks: Iterable[np.ndarray], wanted: WhisperOptions, tell: Callable[[float], None]
    ) -> Transcript:
        """Whisper's seek loop: decode a window with timestamps, move on by its last full segment.

        Each window's log-mel is computed from the window's own audio plus the STFT's
        reach on either side, so memory does not grow with the length.
        Whisper clamps every log-mel value to 8 decades below the loudest of the whole
        input, so a first pass finds that level: with each window clamped to its own
        loudest instead, longform_zh's CER went from 10.2 % to 19.0 % (a quiet first
        window lost 10 s of text). With `language` None, the first window that has
        speech decides it for the rest.
        """
        loudest = _loudest(chunks)
        audio = _Lookahead(chunks)
        horizon = (self.long_window_frames + 1) * HOP_LENGTH  # samples: more than a window means more follows
        seek, heard = 0, _Heard(wanted.language)
        while True:
            tell(seek / FRAMES_PER_SECOND)
            lead = min(seek, STFT_REACH_FRAMES)  # audio before the seek point, which its first STFT frame reads
            ahead = audio.window((seek - lead) * HOP_LENGTH, horizon + lead * HOP_LENGTH)
            content = len(ahead) // HOP_LENGTH
            if content <= lead:
                break
            mel = _at_level(self._mel(ahead), loudest)
            frames = self._window_content(mel, lead, content)
            if is_digital_silence(ahead[lead * HOP_LENGTH : (lead + frames) * HOP_LENGTH]):
                seek += frames
                continue
            result = self._decode_window(mel, lead, frames, heard.options(wanted), loudest)
            heard.no_speech = min(heard.no_speech, result.no_speech_prob)
            if result.is_silence or self._unsure_rest(result, seek, frames):
                seek += frames
                continue
            advance = self._take(heard, result, seek, frames)
            self._recheck_tails(heard, result, mel, seek - lead, lead, frames, wanted, loudest)
            seek += advance
        if not heard.segments:
            return Transcript.empty(heard.no_speech, heard.language or "")
        return self._transcript(" ".join(s[2] for s in heard.segments), heard.results, tuple(heard.segments), wanted)

    def _recheck_tails(self, heard: "_Heard", result: DecodeResult, mel: np.ndarray, origin: int, start: int,
                       length: int, wanted: WhisperOptions, loudest: float) -> None:
        """Decode a window's unheard tail (`_unheard_tail`) as a window of its own, and that one's, and so on.

        A tail's text counts only where the model thinks someone speaks (no-speech p <= 0.6)
        and is sure of what it heard (no temperature fallback still wanted): after the digits
        that end vosk_test.wav tiny.en read "8, 0, 3. 8, 0, 3. 8, 0, 0, 3." (no-speech 0.83;
        Whisper's silence rule keeps it, avg log-prob -0.46), and in a 1.4 s tail of longform_02
        "Thank you. Thank You. Bye. ..." (temperature 0.8, avg log-prob -2.8).
        """
        unheard = self._unheard_tail(result.tokens, mel[:, start : start + length])
        while unheard:
            start, length = start + length - unheard, unheard
            result = self._decode_window(mel, start, length, heard.options(wanted), loudest)
            if result.likely_no_speech or result.needs_fallback:
                return
            advance = self._take(heard, result, origin + start, length)
            # A tail whose text goes on past its last closed segment (no closing timestamp, or out of
            # tokens) is followed from there, as the seek loop does: its last words were dropped.
            unheard = (self._unheard_rest(mel[:, start : start + length], advance) if advance < length
                       else self._unheard_tail(result.tokens, mel[:, start : start + length]))

    def _take(self, heard: "_Heard", result: DecodeResult, seek: int, frames: int) -> int:
        """Add a window's text (the window began `seek` frames in) to what was heard; the frames it consumed."""
        heard.language = result.language
        found, advance = self._split(result.tokens, seek / FRAMES_PER_SECOND, frames)
        heard.segments.extend(s for s in found if has_words(s[2]))
        heard.results.append(result)
        keep = self.use_context and result.temperature <= PROMPT_RESET_TEMPERATURE
        heard.prompt = [*heard.prompt, *result.tokens][-MAX_PROMPT_TOKENS:] if keep else []  # all the decoder reads
        return advance

    def _mel(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel with enough trailing silence for any window `_window` asks for."""
        return log_mel(audio, max(self.pad_seconds, self.min_window_seconds))

    def _window(self, mel: np.ndarray, start: int, content: int, loudest: float | None = None) -> np.ndarray:
        """`content` frames from `start`, then silence: a window that ends like an utterance.

        `loudest`: the whole input's largest log-mel value, when `mel` holds only a piece of it.
        """
        length = window_frames(content, self.pad_seconds, self.min_window_seconds)
        return encoder_window(mel, start, content, length, loudest)

    def _window_content(self, mel: np.ndarray, seek: int, content: int) -> int:
        """Frames for the window at `seek`: the rest of the audio, or up to a pause near the window's end."""
        if content - seek <= self.long_window_frames:
            return content - seek
        end = seek + self.long_window_frames
        return quietest_frame(mel, end - self.cut_search_frames, end) - seek

    def _decode_window(
        self, mel: np.ndarray, seek: int, frames: int, wanted: WhisperOptions, loudest: float
    ) -> DecodeResult:
        cross = self.backend.encode(self._window(mel, seek, frames, loudest))
        seconds = frames / FRAMES_PER_SECOND
        request = DecodeOptions(
            beam_size=wanted.beam_size,
            timestamps=True,
            max_timestamp=seconds,
            max_tokens=token_budget(seconds),
            prompt=wanted.prompt,
            glossary=wanted.glossary,
            recital=wanted.recital,
            language=wanted.language,
            bias=wanted.bias,
        )
        return self.decoder.decode_with_fallback(cross, request)

    def _split(self, tokens: tuple[int, ...], offset: float, frames: int) -> tuple[list[Segment], int]:
        """Segments between timestamp pairs, and how many frames the window really consumed."""
        tok = self.tokenizer
        is_ts = [t >= tok.timestamp_begin for t in tokens]
        pair_ends = [i for i in range(1, len(tokens)) if is_ts[i] and is_ts[i - 1]]
        if not pair_ends:
            stamps = [t for t in tokens if t > tok.timestamp_begin]
            end = tok.timestamp_seconds(stamps[-1]) if stamps else frames / FRAMES_PER_SECOND
            return [self._segment(tokens, offset, 0.0, end)], frames
        single_ending = len(tokens) >= 2 and is_ts[-1] and not is_ts[-2]
        cuts = pair_ends + ([len(tokens)] if single_ending else [])
        found, start, carried = [], 0, ()
        for cut in cuts:
            piece, carried = self._with_whole_characters((tokens[start], *carried, *tokens[start + 1 : cut]), cut == cuts[-1])
            found.append(
                self._segment(piece, offset, tok.timestamp_seconds(piece[0]), tok.timestamp_seconds(piece[-1]))
            )
            start = cut
        advance = (tokens[start - 1] - tok.timestamp_begin) * FRAMES_PER_TIMESTAMP
        return found, frames if single_ending or advance <= 0 else min(advance, frames)

    def _with_whole_characters(self, piece: tuple[int, ...], last: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """`piece` less the text tokens of a character it ends in the middle of, and those tokens, which
        go to the next segment: decoded apart, "翡" of "翡翠" split by a timestamp was lost and the next
        segment began with U+FFFD."""
        moved = 0 if last else self.tokenizer.cut_character(piece)
        if not moved:
            return piece, ()
        text_at = [i for i, token in enumerate(piece) if self.tokenizer.is_text(token)][-moved:]
        return tuple(t for i, t in enumerate(piece) if i not in text_at), tuple(piece[i] for i in text_at)

    def _unheard_tail(self, tokens: tuple[int, ...], mel: np.ndarray) -> int:
        """Frames at the end of a window (`mel`: its log-mel) to decode again as a window of their own.

        Whisper takes a window whose text ends on a single timestamp as all heard: the
        model said "nothing more here". It can be wrong: every build of tiny.en, fp32 too,
        ended longform_01's last window at 45.02 s and so dropped "What joy there is in
        living." (45.5-47.3 s); whisper-base ended Mandarin windows 5-17 s early. So a tail
        longer than TAIL_RECHECK_SECONDS is decoded again if it is loud enough to hold
        speech (`_has_voice`). Measured (scripts/bench_long_joined.py): longform_en WER 4.5 -> 2.9,
        ../shared/eval/zh clips joined into 40-60 s files CER 24.6 -> 19.4, the English sets
        joined alike unchanged; decode time 1.01x (English), 1.05x (Mandarin).
        """
        begin = self.tokenizer.timestamp_begin
        if len(tokens) < 2 or tokens[-1] < begin or tokens[-2] >= begin:
            return 0
        return self._unheard_rest(mel, (tokens[-1] - begin) * FRAMES_PER_TIMESTAMP)

    def _unheard_rest(self, mel: np.ndarray, heard: int) -> int:
        """The frames of `mel` after the `heard` ones, if longer than TAIL_RECHECK_SECONDS and loud enough
        to hold speech (`_has_voice`); else 0."""
        frames = mel.shape[-1]
        if not 0 < heard < frames - self.tail_recheck_frames:
            return 0
        return frames - heard if _has_voice(mel[:, heard:], mel[:, :heard]) else 0

    def _unsure_rest(self, result: DecodeResult, seek: int, frames: int) -> bool:
        """Whether a short last window's text is dropped: under `short_rest_frames` (the
        TAIL_RECHECK_SECONDS a window's early-ending text must leave before its tail is decoded
        again), after earlier windows, it counts only where the model thinks someone speaks and is
        sure of the text on its own (temperature 0, average log-probability of at least -1.0
        without the vocabulary's bonus).

        Windows are cut at least 13 s long, so a short one is what the audio has left after the
        previous window's last closed segment. Whisper decodes it like any other. In a joined file
        of scripts/bench_vocab_long.py (seed 1, the 8th) the last window closed "What joy there is
        in living?" at 17.00 s of 17.73, and the 0.73 s left, the end of "living" and silence, came
        out as "Developing." (no-speech 0.00, avg log-prob -1.74 after a fallback; "Sloping.",
        -1.64, with the file's terms as a list, which vouched for it). A short word said clearly
        there still counts.
        """
        if seek == 0 or frames >= self.short_rest_frames:
            return False
        return result.likely_no_speech or result.temperature > 0.0 or result.avg_logprob < LOGPROB_THRESHOLD

    def _transcript(self, text: str, results: list[DecodeResult], segments: tuple[Segment, ...],
                    wanted: WhisperOptions) -> Transcript:
        """Combine window results: token-weighted log-prob, first window's no-speech probability.

        The text is shown as its language is written (Chinese in `wanted.script`, no spaces between
        Han characters); the tokens stay the model's own, as context for what follows.
        """
        language = results[0].language
        text_tokens = tuple(t for r in results for t in r.tokens if self.tokenizer.is_text(t))
        weights = np.array([len(r.tokens) + 1 for r in results], dtype=np.float64)
        avg = float(np.dot(weights, [r.avg_logprob for r in results]) / weights.sum())
        show = partial(tidy, language=language, script=wanted.script, written=wanted.written)
        shown, words = show(text), [show(words) for _, _, words in segments]
        others = [show(other) for other in results[0].alternatives] if len(results) == 1 else []
        if wanted.respell:
            shown, words = wanted.respell(shown), wanted.respell.segments(words, "" if language in UNSPACED else " ")
            others = [wanted.respell(other) for other in others]
        return Transcript(shown, text_tokens, avg, results[0].no_speech_prob, compression_ratio(text),
                          _joined(segments, words), language, results[0].language_prob, tuple(others))

    def _segment(self, tokens: tuple[int, ...], offset: float, start: float, end: float) -> Segment:
        return (round(offset + start, 3), round(offset + end, 3), self.tokenizer.decode(list(tokens)).strip())


@lru_cache(maxsize=8)
def _respelling(vocabulary: Vocabulary, script: str, written: tuple[tuple[str, str], ...]) -> Respelling | None:
    """The list's sounds-like forms as their terms on a box showing Chinese in `script`; made once per
    list and script, for partials and finals alike."""
    return respelling(vocabulary, partial(spellings, script=script, written=written))


def _joined(segments: Sequence[Segment], words: Sequence[str]) -> tuple[Segment, ...]:
    """`segments` with their shown `words`; one the rewrite emptied (its words were the rest of a form the
    one before now shows as the term) lends its end to that one."""
    joined: list[Segment] = []
    for (start, end, _), text in zip(segments, words):
        if text or not joined:
            joined.append((start, end, text))
        else:
            joined[-1] = (joined[-1][0], end, joined[-1][2])
    return tuple(joined)


def is_digital_silence(audio: np.ndarray) -> bool:
    return len(audio) == 0 or float(np.abs(audio).max()) < SILENT_PEAK


def shows_nothing(result: DecodeResult, partial: bool) -> bool:
    """Silence by Whisper's rule, no words, or a partial where the model thinks nobody speaks.

    A partial (greedy, no fallback) shows nothing where no-speech p > 0.6 even with confident
    text: tiny.en wrote "I'm sorry," (average log-prob -0.7, no-speech 0.89) for
    ../shared/eval/nonspeech/clicks_10s.wav. The final, with its beam and fallback, decides.
    Of 479 partials of speech (the English eval clips' prefixes every 0.5 s) this withheld 2,
    both in the first 1.5 s.
    """
    return result.is_silence or (partial and result.likely_no_speech) or not has_words(result.text)


def _has_voice(tail: np.ndarray, heard: np.ndarray) -> bool:
    """Whether a window's unheard tail (log-mel) has a stretch as loud as the speech heard before it.

    Its loudest 100 ms (frames' mean log-mel) must be above the heard part's median frame.
    The point is to not decode silence: on the silent 2.7 s that ended a file, tiny.en wrote
    "Thank you." (no-speech 0.96, avg log-prob -0.67: Whisper's silence rule keeps it).
    Measured on the tails of eval clips joined with pauses (scripts/bench_long_joined.py): the
    ones with speech were 0.22-0.52 above that median (0.9-2 decades of power; English and
    Mandarin), the silent ones 0.08-0.09 below.
    """
    levels = tail.mean(axis=0)
    loudest = np.convolve(levels, np.ones(VOICE_FRAMES) / VOICE_FRAMES, "valid").max()
    return bool(loudest > np.median(heard.mean(axis=0)))


def has_words(text: str) -> bool:
    """Punctuation-only output (". . . .") is what Whisper produces for noise, not speech."""
    return any(ch.isalnum() for ch in text)


def _checked(audio: np.ndarray) -> np.ndarray:
    """Accept only what the pipeline produces: 1-D 16 kHz float samples."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D 16 kHz mono samples, got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {audio.dtype}")
    return audio.astype(np.float32, copy=False)


def _whisper_options(options: object | None) -> WhisperOptions:
    if options is None:
        return WhisperOptions()
    if not isinstance(options, WhisperOptions):
        raise TypeError(f"a Whisper recognizer takes WhisperOptions, got {type(options).__name__}")
    return options


def _ignore(seconds: float) -> None:
    """No one is watching the progress."""


def _loudest(chunks: Iterable[np.ndarray]) -> float:
    """The largest log-mel value of all the audio, computed 30 s at a time."""
    audio, start, loudest = _Lookahead(chunks), 0, -np.inf
    while len(piece := audio.window(start, N_SAMPLES)):
        loudest = max(loudest, float(log_mel(piece, pad_seconds=0.0).max()))
        start += len(piece)
    return loudest


def _at_level(mel: np.ndarray, loudest: float) -> np.ndarray:
    """A window's log-mel as that of the whole input would be: clamped `DYNAMIC_RANGE` below `loudest`.

    The silence padded after a window is set from `loudest` too (`_window`): a 0.004 lower
    silence moved longform_01's first timestamps.
    """
    return np.maximum(mel, loudest - DYNAMIC_RANGE / 4)  # log_mel's scale: (log10 + 4) / 4


@dataclass
class _Heard:
    """What the seek loop has heard so far, and what the next window is decoded with."""

    language: str | None
    prompt: list[int] = field(default_factory=list)
    no_speech: float = 1.0
    segments: list[Segment] = field(default_factory=list)
    results: list[DecodeResult] = field(default_factory=list)

    def options(self, wanted: WhisperOptions) -> WhisperOptions:
        return replace(wanted, language=self.language, prompt=(*wanted.prompt, *self.prompt))


class _Lookahead:
    """Audio pulled from `chunks` only as far as a window needs; what lies before the window is let go."""

    def __init__(self, chunks: Iterable[np.ndarray]) -> None:
        self._chunks = iter(chunks)
        self._held = np.zeros(0, np.float32)
        self._start = 0  # the sample that _held[0] is

    def window(self, start: int, length: int) -> np.ndarray:
        """Samples [start, start + length), fewer only where the audio ends; `start` never moves back."""
        parts = [self._held[start - self._start :]]
        self._start, have = start, len(parts[0])
        while have < length and (chunk := next(self._chunks, None)) is not None:
            parts.append(_checked(chunk))
            have += len(chunk)
        self._held = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return self._held[:length]
