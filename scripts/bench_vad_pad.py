"""vad.speech_pad_ms against the eval sets: an offline proxy of the daemon's utterance cut.

Each clip gets GAP_S of silence on either side (as in bench_vocabulary.py --daemon), Silero
and the daemon's `Endpointer` cut it into utterances with the given pad (the other vad.* keys
at their defaults), and each utterance is decoded alone at the model's streaming beam, with the
previous utterance's text as context where the model's manifest asks for it (as the session
does). Reports WER/CER per set and pad, and for vocab_en the terms recalled with its whole list.
Minutes, not seconds: every set is decoded once per pad.

    .venv/bin/python scripts/bench_vad_pad.py                               # 200 500 800 ms
    .venv/bin/python scripts/bench_vad_pad.py --pads 200 800 --sets vocab_en tts_espeak_en
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_vocabulary as vocab  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.config import VadConfig  # noqa: E402
from edge.manifest import tuning  # noqa: E402
from edge.vad.endpointer import Endpointer, EndpointSettings  # noqa: E402
from edge.vad.silero import SileroVad  # noqa: E402

SETS = ("real_en", "tts_piper_en", "tts_espeak_en", "zh", "vocab_en")


def cuts(vad: SileroVad, audio: np.ndarray, settings: EndpointSettings) -> list[tuple[int, int]]:
    """[start, end) samples of each utterance the endpointer ends in `audio`."""
    vad.reset()
    endpointer = Endpointer(settings)
    boundaries = [b for p in vad.feed(audio) for b in endpointer.update(p)] + endpointer.flush()
    return [(b.start, b.end) for b in boundaries if b.kind == "end" and b.end is not None]


def decode_set(eval_set: vocab.EvalSet, pad_ms: int, vad: SileroVad) -> list[str]:
    """Every clip cut and decoded utterance by utterance; one text per clip."""
    recognizer = load_recognizer(eval_set.model, threads=2)
    model = tuning(eval_set.model)
    settings = EndpointSettings.from_config(VadConfig(speech_pad_ms=pad_ms), model)
    options = recognizer.options(beam_size=int(model.final_beam), language=eval_set.language,
                                 **({"vocabulary": eval_set.terms} if eval_set.terms else {}))
    gap = np.zeros(int(vocab.GAP_S * vocab.RATE), np.float32)
    hyps, previous = [], ""
    for clip in eval_set.clips:
        audio = np.concatenate([gap, load_audio(clip.path), gap])
        texts = []
        for start, end in cuts(vad, audio, settings):
            context = recognizer.tokenizer.encode(" " + previous.strip()) if model.context and previous else ()
            previous = recognizer.transcribe(audio[start:end], context=context, options=options).text
            texts.append(previous)
        hyps.append(" ".join(texts))
    return hyps


def load_sets(names: list[str], args: argparse.Namespace) -> list[vocab.EvalSet]:
    general = vocab.general_sets([n for n in names if n != "vocab_en"], args)
    return general + ([vocab.vocab_en_set(args.vocab_en_dir, args.en_model, 0)] if "vocab_en" in names else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pads", type=int, nargs="+", default=[200, 500, 800], metavar="MS")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--en-model", type=Path, default=vocab.DEFAULT_MODEL)
    parser.add_argument("--zh-model", type=Path, default=vocab.DEFAULT_ZH_MODEL)
    parser.add_argument("--vocab-en-dir", type=Path, default=vocab.DEFAULT_VOCAB_EN)
    parser.add_argument("--eval-dir", type=Path, default=vocab.DEFAULT_EVAL_DIR)
    args = parser.parse_args(argv)
    args.limit = 0
    try:
        sets = load_sets(args.sets, args)
    except vocab.BenchError as exc:
        print(f"bench_vad_pad: {exc}", file=sys.stderr)
        return 1
    vad = SileroVad()
    print("| set | model | " + " | ".join(f"pad {pad} ms" for pad in args.pads) + " |")
    print("|---|---|" + "---:|" * len(args.pads))
    for eval_set in sets:
        cells = []
        for pad in args.pads:
            hyps = decode_set(eval_set, pad, vad)
            recalled, said, _ = vocab.term_recall(eval_set, hyps)
            cells.append(f"{recalled}/{said} terms, {vocab.error_text(eval_set, hyps)}" if eval_set.terms
                         else vocab.error_text(eval_set, hyps))
        print(f"| {eval_set.name} | {eval_set.model.name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
