"""The default voice through the default ASR model, both served: the round trip's WER.

Start the server first (``make serve`` serves both embedded models), then::

    .venv/bin/python bench/voice_roundtrip.py --out bench/results/voice-roundtrip.json

For 200 random digit strings (1-5 words, seeded), the voice's rendering is asked of
``/v1/audio/speech`` (``wav``) and transcribed by ``/v1/audio/transcriptions``; the same
strings spoken by espeak-ng (its default ``en-us`` voice, 160 words per minute: a voice the
ASR model was trained on) are transcribed too, for scale. Traffic goes only to ``--url``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import editdistance  # noqa: E402
import httpx  # noqa: E402

from bench.report import emit  # noqa: E402

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")
SEED = 6606


def digit_strings(count: int, seed: int = SEED) -> list[str]:
    """``count`` random strings of 1-5 vocabulary words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) for _ in range(count)]


def espeak(text: str) -> bytes:
    """``text`` spoken by espeak-ng's default voice (WAV bytes)."""
    return subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text], capture_output=True, check=True
    ).stdout


def transcribe(client: httpx.Client, url: str, audio: bytes) -> str:
    answer = client.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1"},
    )
    answer.raise_for_status()
    return answer.json()["text"]


def roundtrip(url: str, texts: list[str]) -> dict:
    """WER of the voice's and espeak-ng's renderings of ``texts``, as the ASR model hears them."""
    result: dict = {"strings": len(texts), "words": sum(len(t.split()) for t in texts)}
    with httpx.Client(timeout=120) as client:
        for name, speak in (
            ("voice", lambda text: _speech(client, url, text)),
            ("espeak-ng", espeak),
        ):
            errors = wrong = 0
            misheard = []
            for text in texts:
                heard = transcribe(client, url, speak(text))
                count = editdistance.eval(text.split(), heard.split())
                errors += count
                wrong += count > 0
                if count:
                    misheard.append({"said": text, "heard": heard})
            result[name] = {
                "wer": errors / result["words"],
                "word_errors": errors,
                "ser": wrong / len(texts),
                "misheard": misheard[:20],
            }
    return result


def _speech(client: httpx.Client, url: str, text: str) -> bytes:
    answer = client.post(
        f"{url}/v1/audio/speech",
        json={"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"},
    )
    answer.raise_for_status()
    return answer.content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--strings", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    emit(roundtrip(args.url, digit_strings(args.strings)), args.out)


if __name__ == "__main__":
    main()
