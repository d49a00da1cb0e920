"""eSpeak NG text-to-speech back-ends for the synthetic corpus.

Two back-ends give the same interface, :meth:`synthesize(text, voice, rate, pitch) -> (int16 samples, sample rate)`:

* :class:`EspeakProgram` runs the ``espeak-ng`` program (``apt-get install espeak-ng``) when it is on ``PATH``;
* :class:`EspeakLibrary` loads ``libespeak-ng`` and its voice data from the ``espeakng-loader`` wheel through
  :mod:`ctypes` (no root, no system package).

eSpeak NG is a formant synthesiser: the same text, voice and parameters give the same samples on every call, which
makes the corpus reproducible from a seed for a given eSpeak NG version.
"""

import ctypes
import io
import shutil
import subprocess
from typing import List, Optional, Tuple

import numpy as np
import soundfile

MISSING_ESPEAK = (
    "eSpeak NG is not available: install the espeakng-loader wheel (`pip install espeakng-loader`, or "
    "`pip install hybrid-encoders[recipes]`), or the espeak-ng program (`apt-get install espeak-ng`)."
)

# Values from espeak-ng/speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _check_parameters(rate: int, pitch: int) -> None:
    if not 80 <= rate <= 450:
        raise ValueError(f"eSpeak NG rate must be in [80, 450] words per minute, got {rate}")
    if not 0 <= pitch <= 99:
        raise ValueError(f"eSpeak NG pitch must be in [0, 99], got {pitch}")


class EspeakLibrary:
    """``libespeak-ng`` from the ``espeakng-loader`` wheel, driven through :mod:`ctypes`.

    The library keeps global state, so create one instance per process.
    """

    name = "espeakng-loader"

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise RuntimeError(MISSING_ESPEAK) from error
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {self.sample_rate}); {MISSING_ESPEAK}")
        self._chunks: List[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed when the Python object is.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> Tuple[np.ndarray, int]:
        """Speak ``text``.

        Args:
            text: words to speak.
            voice: eSpeak NG voice name with optional variant, e.g. ``"en-us+m3"``.
            rate: speaking rate in words per minute, [80, 450].
            pitch: base pitch, [0, 99].

        Returns:
            ``(samples (N,) int16, sample_rate)``.
        """
        _check_parameters(rate, pitch)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        self._chunks = []
        encoded = text.encode("utf-8")
        self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return samples.astype(np.int16), self.sample_rate


class EspeakProgram:
    """The ``espeak-ng`` command-line program (one process per utterance, WAV on stdout)."""

    name = "espeak-ng program"

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> Tuple[np.ndarray, int]:
        """Same contract as :meth:`EspeakLibrary.synthesize`."""
        _check_parameters(rate, pitch)
        result = subprocess.run(
            [self.executable, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
            capture_output=True, check=False)
        if result.returncode != 0 or not result.stdout:
            raise ValueError(f"{self.executable} -v {voice} failed: {result.stderr.decode(errors='replace').strip()}")
        samples, sample_rate = soundfile.read(io.BytesIO(result.stdout), dtype="int16")
        return samples, sample_rate


def open_synthesizer(backend: str = "auto", executable: Optional[str] = None):
    """Create an eSpeak NG back-end.

    Args:
        backend: ``"program"`` (the ``espeak-ng`` program), ``"library"`` (the ``espeakng-loader`` wheel) or
            ``"auto"``: the program when it is on ``PATH``, else the library.
        executable: path of the program; default: ``espeak-ng`` looked up on ``PATH``.

    Returns:
        An :class:`EspeakProgram` or :class:`EspeakLibrary`.

    Raises:
        ValueError: unknown ``backend``.
        RuntimeError: the requested back-end (or, for ``auto``, both) is missing; the message says what to install.
    """
    if backend not in ("auto", "program", "library"):
        raise ValueError(f"backend must be one of auto, program, library; got {backend!r}")
    program = executable or shutil.which("espeak-ng")
    if backend == "program" or (backend == "auto" and program):
        if not program:
            raise RuntimeError(MISSING_ESPEAK)
        return EspeakProgram(program)
    return EspeakLibrary()
