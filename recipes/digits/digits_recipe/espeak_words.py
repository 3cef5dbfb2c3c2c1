"""espeak-ng through its C library: speech and the sample where each word starts.

The ``espeak-ng`` command line gives no timing; the library's synthesis
callback reports a word event (with its sample offset) before each word. Same
voices, speeds and pitches as the command line, and the same samples.
"""

from __future__ import annotations

import ctypes

import numpy as np

LIBRARY = "libespeak-ng.so.1"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_END_PAUSE = 0x1000  # espeakENDPAUSE: finish the phrase as the command line does
_RATE, _PITCH = 1, 3
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of ``speak_lib.h``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


class _VoiceSelect(ctypes.Structure):
    """``espeak_VOICE`` of ``speak_lib.h`` (the fields a selection by language uses)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakWords:
    """One espeak-ng library instance (not thread-safe: use one per process).

    Raises:
        OSError: If ``libespeak-ng.so.1`` is not installed (``apt-get install espeak-ng``).
    """

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(LIBRARY)
        self.sample_rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0))
        if self.sample_rate <= 0:
            raise OSError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._word_starts: list[int] = []
        self._callback = _Callback(self._collect)  # kept alive as long as the instance
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.Array, count: int, events: ctypes.Array) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            if events[index].type == _EVENT_WORD:
                self._word_starts.append(int(events[index].sample))
            index += 1
        return 0

    def _set_voice(self, voice: str) -> None:
        """Select ``voice`` as the ``espeak-ng -v`` command does: by name, else by language."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) == 0:
            return
        select = _VoiceSelect(languages=voice.encode())
        if self._lib.espeak_SetVoiceByProperties(ctypes.byref(select)) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")

    def speak(
        self, text: str, *, voice: str, speed_wpm: int, pitch: int
    ) -> tuple[np.ndarray, list[int]]:
        """Speak ``text``: int16 samples at :attr:`sample_rate` and each word's first sample.

        Raises:
            ValueError: If espeak-ng refuses the voice or the text.
        """
        self._set_voice(voice)
        self._lib.espeak_SetParameter(_RATE, speed_wpm, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._chunks, self._word_starts = [], []
        encoded = text.encode()
        status = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _END_PAUSE, None, None
        )
        if status != 0:
            raise ValueError(f"espeak-ng could not speak {text!r} (error {status})")
        self._lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples, list(self._word_starts)
