"""Vocabulary biasing: term recall, WER/CER and decode time without a list, with the terms, with an unrelated list.

Term sets:
- vocab_en: build/eval/vocab_en (made by scripts/make_vocab_set.py): English sentences full of
  rare names, places and product words; tiny.en by default (--en-model for another);
- vocab_zh: the clips of ../shared/eval/zh named in scripts/vocab/terms_zh.tsv; whisper-base, zh.
Modes: `none` (no list), `terms` (the set's own terms: scripts/vocab/terms_en.txt, or the
terms of terms_zh.tsv), `unrelated` (scripts/vocab/unrelated_50.txt). Each file is decoded
in every mode before the next file, the order rotating, so machine load hits all modes alike.
A term counts as recalled when the hypothesis says it after the set's normalisation
(scoring.contains_term: case, punctuation, numbers; Chinese: simplified, characters only).

--general: the shared eval sets (English ones with --en-model, zh with --zh-model, nonspeech
with both) without and with the unrelated 50-term list: the error delta in points, the
output on nonspeech and the decode-time ratio.

--daemon: the term set's clips joined into one WAV (GAP_S of silence after each), played to the
real daemon (`edge-asr run`, file source at real-time pace; scripts/bench_latency.py) once per
mode (default: none, terms) with the list as `vocabulary.file`; every `final` from the socket
goes to the clip its middle lies in. Reports recall and WER/CER of the finals, end of clip ->
final latency, CPU while speaking and peak RSS, next to the offline recall of the same clips at
the daemon's final beam (the model's `stream.final_beam: auto`) and the offline recall of the
daemon's own utterance cuts (each final's start..end decoded alone, the previous one as context):
finals that differ from the first but match the second differ by the cut, not the streaming.

--list-size N: each clip gets a list of N terms (its own and others of the list; the unrelated
mode: a moving slice of the unrelated list) instead of the whole list; with --daemon, one run
per group of consecutive clips whose terms fit in N, with the group's list.

    .venv/bin/python scripts/bench_vocabulary.py                        # vocab_en + vocab_zh, all modes
    .venv/bin/python scripts/bench_vocabulary.py --sets vocab_en --modes none
    .venv/bin/python scripts/bench_vocabulary.py --sets vocab_en --en-model models/whisper-base-int8
    .venv/bin/python scripts/bench_vocabulary.py --general [--sets real_en nonspeech] [--limit 5]
    .venv/bin/python scripts/bench_vocabulary.py --daemon --sets vocab_en    # a few minutes in real time
    .venv/bin/python scripts/bench_vocabulary.py --sets vocab_en --list-size 10 --prompt true
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile
from whisper_normalizer.english import EnglishTextNormalizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_latency  # noqa: E402
import scoring  # noqa: E402
from bench_recognizer import (  # noqa: E402
    DEFAULT_EVAL_DIR, DEFAULT_MODEL, manifest, manifest_rows, nonspeech_output, run_ours, timed,
)
from edge.asr.base import Recognizer  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import AudioFileError, load_audio  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.manifest import tuning  # noqa: E402
from edge.stream.session import CONTEXT_MAX_GAP_S  # noqa: E402
from edge.vocabulary import (  # noqa: E402
    PROMPTS, Vocabulary, VocabularyError, parse_items, read_vocabulary_file, term_line,
)

VOCAB_DIR = REPO / "scripts" / "vocab"
DEFAULT_VOCAB_EN = REPO / "build" / "eval" / "vocab_en"
DEFAULT_ZH_MODEL = REPO / "models" / "whisper-base-int8"
TERM_SETS = ("vocab_en", "vocab_zh")
GENERAL_SETS = ("real_en", "real_meeting", "tts_piper_en", "tts_espeak_en", "longform_en", "zh", "nonspeech")
MODES = ("none", "terms", "unrelated")
DAEMON_MODES = ["none", "terms"]
RATE = 16000  # load_audio's rate, the daemon's
GAP_S = 1.5  # silence after each joined clip: 5x vad.min_silence_ms (300), so every clip ends its utterance


class BenchError(Exception):
    """Missing or inconsistent inputs; str() says which and what to run."""


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str
    terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalSet:
    """Clips decoded with one model; `scored_as` is the shared set whose scoring rules apply."""

    name: str
    scored_as: str
    model: Path
    language: str
    clips: tuple[Clip, ...]
    terms: Vocabulary | None = None  # the `terms` mode's list


Lists = dict[str, Vocabulary | None]  # mode -> its list (None: no list)


@dataclass
class Run:
    """One set under one mode: a hypothesis per clip and the seconds spent decoding."""

    hyps: list[str] = field(default_factory=list)
    seconds: float = 0.0


def vocab_en_set(directory: Path, model: Path, limit: int, terms: Path = VOCAB_DIR / "terms_en.txt") -> EvalSet:
    """The synthesized English term set, its terms from the manifest; `terms`: the `terms` mode's list (the
    same terms; it may add weights or sounds-like forms)."""
    if not (directory / "manifest.jsonl").is_file():
        raise BenchError(f"{directory / 'manifest.jsonl'} not found: run scripts/make_vocab_set.py first")
    rows = manifest_rows(directory.parent, directory.name)
    clips = tuple(Clip(directory / r["audio"], r["text"], tuple(r["terms"])) for r in rows)
    return EvalSet("vocab_en", "vocab_en", model, "en", head(clips, limit), read_vocabulary_file(terms))


def read_terms_tsv(path: Path) -> dict[str, list[str]]:
    """clip -> its terms, from `clip<TAB>term` lines (`#` comments and blank lines skipped)."""
    terms: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        clip, tab, term = line.partition("\t")
        if not tab or not clip.strip() or not term.strip():
            raise BenchError(f"{path} line {number}: expected clip<TAB>term, got {line!r}")
        terms.setdefault(clip.strip(), []).append(term.strip())
    return terms


def vocab_zh_set(eval_dir: Path, model: Path, limit: int, terms: Path | None = None) -> EvalSet:
    """The shared zh clips named in terms_zh.tsv, with their terms; `terms`: the `terms` mode's list (None: those
    terms; a file may add weights or sounds-like forms)."""
    tsv = VOCAB_DIR / "terms_zh.tsv"
    wanted = read_terms_tsv(tsv)
    refs = {row["audio"]: row["text"] for row in manifest_rows(eval_dir, "zh")}
    unknown = sorted(set(wanted) - set(refs))
    if unknown:
        raise BenchError(f"{tsv}: clip(s) not in {eval_dir / 'zh'}: {', '.join(unknown)}")
    clips = tuple(Clip(eval_dir / "zh" / name, refs[name], tuple(terms)) for name, terms in wanted.items())
    every_term = sorted({t for terms in wanted.values() for t in terms})
    listed = read_vocabulary_file(terms) if terms else Vocabulary(parse_items(every_term, str(tsv)))
    return EvalSet("vocab_zh", "zh", model, "zh", head(clips, limit), listed)


def general_sets(names: list[str], args: argparse.Namespace) -> list[EvalSet]:
    """Shared eval sets: zh with the zh model, English with the English one, nonspeech with both."""
    plans = {"zh": [(args.zh_model, "zh")], "nonspeech": [(args.en_model, "en"), (args.zh_model, "zh")]}
    sets = []
    for name in names:
        clips = tuple(Clip(path, text) for path, text in manifest(args.eval_dir, name, args.limit))
        for model, language in plans.get(name, [(args.en_model, "en")]):
            sets.append(EvalSet(name, name, model, language, clips))
    return sets


def head(clips: tuple[Clip, ...], limit: int) -> tuple[Clip, ...]:
    return clips[:limit] if limit > 0 else clips


def term_recall(eval_set: EvalSet, hyps: list[str]) -> tuple[int, int, list[str]]:
    """(occurrences recalled, occurrences said, the missed ones) over every clip's terms: a term its
    reference says twice counts twice (杰西卡 in vocab_zh), and one hit recalls one of them."""
    recalled, said, missed = 0, 0, []
    for clip, hyp in zip(eval_set.clips, hyps):
        for term in dict.fromkeys(clip.terms):
            wanted = max(1, scoring.term_count(eval_set.scored_as, term, clip.text))
            found = min(wanted, scoring.term_count(eval_set.scored_as, term, hyp))
            recalled, said = recalled + found, said + wanted
            missed += [term] * (wanted - found)
    return recalled, said, missed


def mode_lists(eval_set: EvalSet, modes: list[str], unrelated: Vocabulary) -> Lists:
    lists = {"none": None, "terms": eval_set.terms, "unrelated": unrelated}
    return {mode: lists[mode] for mode in modes}


def short_list(vocabulary: Vocabulary, said: Collection[str], number: int, size: int) -> Vocabulary:
    """`size` terms of `vocabulary`: the ones `said`, then others from a start that moves with
    `number`, in an order shuffled per `number` (seeded: the same lists every run).

    A short list of which an utterance says one to three terms is what a meeting room's
    attendee list looks like; the unrelated list's slices hold none of the clips' terms.
    """
    chosen = [term for term in vocabulary.terms if term.text in said]
    others = [term for term in vocabulary.terms if term.text not in said]
    start = number * size % max(len(others), 1)
    chosen += (others[start:] + others[:start])[: max(size - len(chosen), 0)]
    random.Random(number).shuffle(chosen)
    return replace(vocabulary, terms=tuple(chosen))


def term_groups(clips: Sequence[Clip], size: int) -> list[list[int]]:
    """Runs of consecutive clips whose terms together fit in one `size`-term list (0: one run of all)."""
    groups: list[list[int]] = []
    said: set[str] = set()
    for index, clip in enumerate(clips):
        if groups and (not size or len(said | set(clip.terms)) <= size):
            groups[-1].append(index)
            said |= set(clip.terms)
        else:
            groups.append([index])
            said = set(clip.terms)
    return groups


def clip_lists(eval_set: EvalSet, lists: Lists, size: int, groups: list[list[int]]) -> list[Lists]:
    """Each clip's list per mode: the whole list or (`size` > 0) a `short_list` holding the terms of its group."""
    out = [dict(lists) for _ in eval_set.clips]
    for number, group in enumerate(groups if size else []):
        said = {term for index in group for term in eval_set.clips[index].terms}
        for mode, vocabulary in lists.items():
            short = None if vocabulary is None else short_list(vocabulary, said, number, size)
            for index in group:
                out[index][mode] = short
    return out


def list_options(recognizer: Recognizer, eval_set: EvalSet, beam: int, vocabulary: Vocabulary | None) -> object:
    """The recognizer's options for a set at `beam` with a list (None: the recognizer's default, none)."""
    return recognizer.options(beam_size=beam, language=eval_set.language,
                              **({"vocabulary": vocabulary} if vocabulary is not None else {}))


def decode_set(eval_set: EvalSet, recognizer: Recognizer, lists: list[Lists], beam: int) -> dict[str, Run]:
    """Every clip in every mode with its list (`lists[clip]`), the mode order rotating from clip to
    clip; one untimed warm-up per mode."""
    modes = list(lists[0]) if lists else []
    runs = {mode: Run() for mode in modes}
    for index, clip in enumerate(eval_set.clips):
        options = {mode: list_options(recognizer, eval_set, beam, vocab) for mode, vocab in lists[index].items()}
        audio = load_audio(clip.path)
        if index == 0:
            for mode in modes:
                run_ours(recognizer, audio, options[mode])
        for mode in modes[index % len(modes):] + modes[:index % len(modes)]:
            text, seconds = timed(run_ours, recognizer, audio, options[mode])
            runs[mode].hyps.append(text)
            runs[mode].seconds += seconds
            print(f"  {eval_set.name}/{clip.path.name} [{mode}] {seconds:.2f}s | {text!r}", file=sys.stderr)
    return runs


def error_text(eval_set: EvalSet, hyps: list[str]) -> str:
    rate = scoring.error_rate(eval_set.scored_as, [c.text for c in eval_set.clips], hyps)
    return "-" if rate is None else f"{100 * rate:.1f}"


def term_table(results: list[tuple[EvalSet, dict[str, Run]]], beam: int) -> str:
    lines = [f"beam {beam}; recall: terms said in the hypothesis after normalisation / terms in the references; "
             "WER (English) or CER (Chinese) in %; decode time excludes model load",
             "",
             "| set | model | list | clips | terms recalled | recall % | error % | decode s | time vs no list |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for eval_set, runs in results:
        base = runs["none"].seconds if "none" in runs else None
        for mode, run in runs.items():
            recalled, said, _ = term_recall(eval_set, run.hyps)
            ratio = f"{run.seconds / base:.2f}x" if base else "-"
            lines.append(f"| {eval_set.name} | {eval_set.model.name} | {mode} | {len(eval_set.clips)} "
                         f"| {recalled}/{said} | {100 * recalled / max(said, 1):.0f} "
                         f"| {scoring.metric_name(eval_set.scored_as)} {error_text(eval_set, run.hyps)} "
                         f"| {run.seconds:.1f} | {ratio} |")
    lines.append("")
    for eval_set, runs in results:
        for mode, run in runs.items():
            lines.append(f"missed ({eval_set.name}, {mode}): {', '.join(term_recall(eval_set, run.hyps)[2]) or '-'}")
    return "\n".join(lines)


def general_table(results: list[tuple[EvalSet, dict[str, Run]]], beam: int, list_name: str) -> str:
    normalize = EnglishTextNormalizer()
    lines = [f"beam {beam}; list: {list_name}; error: WER (English) or CER (Chinese) in %; delta in points; "
             "output on nonspeech: words (and CJK characters)",
             "",
             "| set | model | error no list | error with list | delta | nonspeech output (no list / list) "
             "| decode s no list | decode s list | time ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for eval_set, runs in results:
        plain, listed = runs["none"], runs["unrelated"]
        refs = [c.text for c in eval_set.clips]
        before, after = (scoring.error_rate(eval_set.scored_as, refs, r.hyps) for r in (plain, listed))
        delta = "-" if before is None else f"{100 * (after - before):+.1f}"
        said = [nonspeech_output(run.hyps, normalize) for run in (plain, listed)]
        quiet = "-" if any(refs) else f"{said[0]} / {said[1]}"
        lines.append(f"| {eval_set.name} | {eval_set.model.name} | {error_text(eval_set, plain.hyps)} "
                     f"| {error_text(eval_set, listed.hyps)} | {delta} | {quiet} | {plain.seconds:.1f} "
                     f"| {listed.seconds:.1f} | {listed.seconds / max(plain.seconds, 1e-9):.2f}x |")
    plain_s = sum(runs["none"].seconds for _, runs in results)
    listed_s = sum(runs["unrelated"].seconds for _, runs in results)
    lines.append(f"| **total** | | | | | | {plain_s:.1f} | {listed_s:.1f} | {listed_s / max(plain_s, 1e-9):.2f}x |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Joined:
    """Clips played one after another: the samples, and each clip's (start, end) in seconds."""

    audio: np.ndarray
    spans: tuple[tuple[float, float], ...]


def join_clips(audios: Sequence[np.ndarray], gap_s: float = GAP_S, rate: int = RATE) -> Joined:
    """The clips in order, each followed by `gap_s` of silence (the last one too: its final then
    comes from the end of speech, not from the end of the file)."""
    gap = np.zeros(round(gap_s * rate), np.float32)
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    at = 0
    for audio in audios:
        spans.append((at / rate, (at + len(audio)) / rate))
        pieces += [np.asarray(audio, np.float32), gap]
        at += len(audio) + len(gap)
    return Joined(np.concatenate([np.zeros(0, np.float32), *pieces]), tuple(spans))


def clip_texts(spans: Sequence[tuple[float, float]], finals: list[dict]) -> list[str]:
    """Each clip's finals joined, so recall is counted per clip as offline: a final belongs to the
    clip nearest its middle (distance 0 inside a clip)."""
    texts: list[list[str]] = [[] for _ in spans]
    for final in finals:
        middle = (final["start_s"] + final["end_s"]) / 2
        nearest = min(range(len(spans)), key=lambda i: max(spans[i][0] - middle, middle - spans[i][1], 0.0))
        texts[nearest].append(final["text"].strip())
    return [" ".join(text for text in clip if text) for clip in texts]


def write_list(vocabulary: Vocabulary, path: Path) -> Path:
    """The list as a vocabulary file (weights and sounds-like forms kept): what the daemon reads as `vocabulary.file`."""
    path.write_text("".join(term_line(term) + "\n" for term in vocabulary.terms), encoding="utf-8")
    return path


@dataclass
class DaemonRun:
    """One daemon run over the joined clips: each clip's finals, and what the stream cost."""

    hyps: list[str]
    latencies: list[float]
    speaking_cpu: float
    peak_rss_mib: float
    finals: list[dict] = field(default_factory=list)
    cut_hyps: list[str] = field(default_factory=list)  # each final's own audio decoded offline (`decode_cuts`)


def decode_cuts(recognizer: Recognizer, joined: Joined, finals: list[dict], options: object) -> list[dict]:
    """Each final's own stretch of audio (its start_s..end_s) decoded offline, with the previous
    one's text as context as the daemon gives it: what the daemon's utterance cuts alone make of
    the clips, apart from its timing and partials."""
    out: list[dict] = []
    context: tuple[int, ...] = ()
    last_end = -CONTEXT_MAX_GAP_S
    for final in finals:
        start, end = final["start_s"], final["end_s"]
        audio = joined.audio[round(start * RATE): round(end * RATE)]
        near = start - last_end <= CONTEXT_MAX_GAP_S
        transcript = recognizer.transcribe(audio, context=context if near else (), options=options)
        if transcript.text:
            context, last_end = transcript.tokens, end
        out.append({**final, "text": transcript.text})
    return out


def run_daemon_on(eval_set: EvalSet, wav: Path, joined: Joined, vocabulary: Vocabulary | None) -> DaemonRun:
    """`edge-asr run` on the joined WAV at real-time pace; the list (None: none) as its vocabulary.file."""
    with tempfile.TemporaryDirectory(prefix="bench-vocab-") as work:
        overrides: dict[str, str] = {"model.language": eval_set.language}
        if vocabulary is not None:
            overrides["vocabulary.file"] = str(write_list(vocabulary, Path(work) / "terms.txt"))
            overrides["vocabulary.prompt"] = vocabulary.glossary
        run = bench_latency.run_daemon(wav, Path(work), eval_set.model, overrides, mic=None)
    segments = bench_latency.audible_segments(wav, [{"start": start, "end": end} for start, end in joined.spans])
    return DaemonRun(clip_texts(joined.spans, run.of("final")), bench_latency.final_latencies(run, segments),
                     bench_latency.speaking_cpu(run, segments), run.peak_rss_mib, run.of("final"))


def daemon_runs(eval_set: EvalSet, lists: list[Lists], groups: list[list[int]],
                recognizer: Recognizer) -> dict[str, DaemonRun]:
    """Each group's clips joined and played to the daemon once per mode with the group's list,
    one run after another; then each run's utterance cuts decoded offline (`decode_cuts`)."""
    runs = {}
    for mode in lists[0]:
        parts = [run_group(eval_set, group, lists[group[0]][mode], mode, recognizer) for group in groups]
        runs[mode] = DaemonRun(
            [text for part in parts for text in part.hyps], [s for part in parts for s in part.latencies],
            sum(part.speaking_cpu * len(part.hyps) for part in parts) / len(eval_set.clips),
            max(part.peak_rss_mib for part in parts), [], [text for part in parts for text in part.cut_hyps])
    return runs


def run_group(eval_set: EvalSet, group: list[int], vocabulary: Vocabulary | None, mode: str,
              recognizer: Recognizer) -> DaemonRun:
    """One daemon run over the clips of `group`, joined, and its cuts decoded offline after it."""
    clips = [eval_set.clips[index] for index in group]
    joined = join_clips([load_audio(clip.path) for clip in clips])
    with tempfile.TemporaryDirectory(prefix="bench-vocab-") as root:
        wav = Path(root) / f"{eval_set.name}.wav"
        soundfile.write(wav, joined.audio, RATE, subtype="PCM_16")
        print(f"  {eval_set.name} [{mode}]: {len(joined.audio) / RATE:.0f} s through the daemon", file=sys.stderr)
        run = run_daemon_on(eval_set, wav, joined, vocabulary)
    options = list_options(recognizer, eval_set, tuning(eval_set.model).final_beam, vocabulary)
    run.cut_hyps = clip_texts(joined.spans, decode_cuts(recognizer, joined, run.finals, options))
    for clip, text, cut in zip(clips, run.hyps, run.cut_hyps):
        print(f"  {eval_set.name}/{clip.path.name} [{mode}, daemon] | {text!r} | cuts offline: {cut!r}", file=sys.stderr)
    return run


def offline_runs(eval_set: EvalSet, lists: list[Lists], recognizer: Recognizer) -> tuple[int, dict[str, Run]]:
    """The same clips decoded one by one at the daemon's final beam (the model's `auto` value)."""
    beam = tuning(eval_set.model).final_beam
    return beam, decode_set(eval_set, recognizer, lists, beam)


def percentiles_ms(values: list[float]) -> str:
    return "/".join(f"{1000 * float(np.percentile(values, q)):.0f}" for q in (50, 95)) if values else "-"


def daemon_table(results: list[tuple[EvalSet, int, dict[str, Run], dict[str, DaemonRun]]]) -> str:
    lines = ["recall: terms said in the finals (each final counted for the clip it lies in) / terms in the references; "
             "offline: the same clips one by one at the daemon's final beam; error: WER (English) or CER (Chinese) "
             "in %, finals joined vs references joined; latency: end of each clip's audible speech -> its final",
             "",
             "| set | model | list | clips | recalled finals | recall % finals | recalled offline (beam) "
             "| recalled offline, the daemon's cuts | error finals | error offline | final p50/p95 ms "
             "| CPU speaking % | peak RSS MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for eval_set, beam, offline, daemon in results:
        references = " ".join(clip.text for clip in eval_set.clips)
        for mode, run in daemon.items():
            recalled, said, _ = term_recall(eval_set, run.hyps)
            offline_recalled = term_recall(eval_set, offline[mode].hyps)[0]
            finals_error = scoring.error_rate(eval_set.scored_as, [references], [" ".join(run.hyps)])
            lines.append(f"| {eval_set.name} | {eval_set.model.name} | {mode} | {len(eval_set.clips)} "
                         f"| {recalled}/{said} | {100 * recalled / max(said, 1):.0f} "
                         f"| {offline_recalled}/{said} ({beam}) | {term_recall(eval_set, run.cut_hyps)[0]}/{said} "
                         f"| {scoring.metric_name(eval_set.scored_as)} {100 * (finals_error or 0):.1f} "
                         f"| {error_text(eval_set, offline[mode].hyps)} | {percentiles_ms(run.latencies)} "
                         f"| {run.speaking_cpu:.0f} | {run.peak_rss_mib:.0f} |")
    lines.append("")
    for eval_set, _, offline, daemon in results:
        for mode, run in daemon.items():
            for where, hyps in (("daemon", run.hyps), ("offline", offline[mode].hyps), ("cuts", run.cut_hyps)):
                missed = term_recall(eval_set, hyps)[2]
                lines.append(f"missed ({eval_set.name}, {mode}, {where}): {', '.join(missed) or '-'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--general", action="store_true", help="shared eval sets without/with the unrelated list")
    parser.add_argument("--sets", nargs="+", help=f"term sets {TERM_SETS} or, with --general, {GENERAL_SETS}")
    parser.add_argument("--daemon", action="store_true", help="term sets through the streaming daemon, in real time")
    parser.add_argument("--modes", nargs="+", choices=MODES,
                        help=f"term sets only (default: all; --daemon: {' '.join(DAEMON_MODES)})")
    parser.add_argument("--en-model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--zh-model", type=Path, default=DEFAULT_ZH_MODEL)
    parser.add_argument("--vocab-en-dir", type=Path, default=DEFAULT_VOCAB_EN)
    parser.add_argument("--unrelated", type=Path, default=VOCAB_DIR / "unrelated_50.txt")
    parser.add_argument("--terms", type=Path, default=VOCAB_DIR / "terms_en.txt",
                        help="vocab_en's list (e.g. with sounds-like forms from edge-asr learn-sounds-like)")
    parser.add_argument("--zh-terms", type=Path,
                        help="vocab_zh's list (default: the terms of scripts/vocab/terms_zh.tsv; e.g. with sounds-like "
                             "forms from edge-asr learn-sounds-like --model models/whisper-base-int8 --language zh)")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="first N files per set (0 = all)")
    parser.add_argument("--prompt", choices=PROMPTS, default="auto",
                        help="vocabulary.prompt of every list (default auto, as config.yaml)")
    parser.add_argument("--list-size", type=int, default=0, metavar="N",
                        help="a list of N terms per clip instead of the whole list: the clip's own terms and "
                             "others of the list (unrelated: a moving N-term slice); --daemon: one run per group "
                             "of consecutive clips whose terms fit in N, with the group's terms")
    args = parser.parse_args(argv)
    if args.general and args.daemon:
        parser.error("--daemon runs the term sets; it does not combine with --general")
    if args.list_size < 0:
        parser.error("--list-size takes a number of terms, 1 or more (0, the default: the whole list)")
    known = GENERAL_SETS if args.general else TERM_SETS
    args.sets = args.sets or list(known)
    unknown = [name for name in args.sets if name not in known]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; {'--general takes' if args.general else 'choose from'} "
                     f"{', '.join(known)}")
    if args.general:
        args.modes = ["none", "unrelated"]
    args.modes = args.modes or (DAEMON_MODES if args.daemon else list(MODES))
    return args


def load_sets(args: argparse.Namespace) -> list[EvalSet]:
    if args.general:
        return general_sets(args.sets, args)
    loaders: dict[str, Callable[[], EvalSet]] = {
        "vocab_en": lambda: vocab_en_set(args.vocab_en_dir, args.en_model, args.limit, args.terms),
        "vocab_zh": lambda: vocab_zh_set(args.eval_dir, args.zh_model, args.limit, args.zh_terms),
    }
    return [loaders[name]() for name in args.sets]


def daemon_main(sets: list[EvalSet], args: argparse.Namespace, unrelated: Vocabulary) -> int:
    """--daemon: offline first (short), then the daemon runs, so neither runs beside the other."""
    try:
        results = []
        for eval_set in sets:
            groups = term_groups(eval_set.clips, args.list_size)
            lists = clip_lists(eval_set, mode_lists(eval_set, args.modes, unrelated), args.list_size, groups)
            recognizer = load_recognizer(eval_set.model, threads=args.threads)
            results.append((eval_set, *offline_runs(eval_set, lists, recognizer),
                            daemon_runs(eval_set, lists, groups, recognizer)))
    except (ModelError, AudioFileError, RuntimeError) as exc:  # RuntimeError: the daemon failed, then its stderr
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"bench_vocabulary.py: {' ... '.join(dict.fromkeys([lines[0], lines[-1]]))}", file=sys.stderr)
        return 1
    print(daemon_table(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sets = load_sets(args)
        prompt = PROMPTS[args.prompt]
        unrelated = read_vocabulary_file(args.unrelated, glossary=prompt)
        sets = [replace(s, terms=replace(s.terms, glossary=prompt) if s.terms else s.terms) for s in sets]
        if args.daemon:
            return daemon_main(sets, args, unrelated)
        recognizers = {model: load_recognizer(model, threads=args.threads) for model in {s.model for s in sets}}
    except (BenchError, VocabularyError, ModelError, OSError) as exc:
        print(f"bench_vocabulary.py: {exc}", file=sys.stderr)
        return 2
    results = [(s, decode_set(s, recognizers[s.model], clip_lists(s, mode_lists(s, args.modes, unrelated),
                                                                   args.list_size, [[i] for i in range(len(s.clips))]),
                              args.beam))
               for s in sets]
    size = f"{args.list_size}-term slices of " if args.list_size else ""
    listed = f"{size}{args.unrelated.name}, vocabulary.prompt {args.prompt}"
    if not args.general:
        print(f"lists: {f'{args.list_size} terms per clip' if args.list_size else 'whole'}"
              f", vocabulary.prompt {args.prompt}")
    print(general_table(results, args.beam, listed) if args.general else term_table(results, args.beam))
    return 0


if __name__ == "__main__":
    sys.exit(main())
