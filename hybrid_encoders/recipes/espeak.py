"""eSpeak NG text-to-speech back-ends for the synthetic corpus.

Two back-ends give the same interface, :meth:`synthesize(text, voice, rate, pitch) -> (int16 samples, sample rate)`:

* :class:`EspeakLibrary` loads ``libespeak-ng`` and its voice data from the ``espeakng-loader`` wheel through
  :mod:`ctypes` (no root, no system package), with its random generator seeded, so the corpus is reproducible from
  a seed for a given eSpeak NG version;
* :class:`EspeakProgram` runs the ``espeak-ng`` program (``apt-get install espeak-ng``), the fallback when the wheel
  is missing. The program offers no way to seed the breath noise of some voice variants, so its output can differ
  between runs in those variants.
"""

import _ctypes
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

    eSpeak NG keeps part of its synthesis state in static variables that ``espeak_Terminate`` does not reset (the
    waveform generator's pitch-flutter phase, for one), so the samples of an utterance would depend on everything
    the process synthesised before. Every :meth:`synthesize` call therefore loads the library afresh (``dlopen``),
    initialises it, speaks, and unloads it (``dlclose``), which costs about 50 ms. The breath noise of some variants
    (``f2``, ``f5``, ...) comes from eSpeak NG's random generator, which is seeded from the clock unless
    ``espeak_ng_SetRandSeed`` fixes it, as done here. Each utterance is then a pure function of its text, voice and
    parameters (checked by ``tests/recipes/test_synthetic_speech.py``). POSIX only (``dlclose``).
    """

    name = "espeakng-loader"

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise RuntimeError(MISSING_ESPEAK) from error
        self._library_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._chunks: List[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed when the Python object is.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self.sample_rate = self._speak("", "en", 175, 50)[1]

    def _collect(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def _speak(self, text: str, voice: str, rate: int, pitch: int) -> Tuple[np.ndarray, int]:
        lib = ctypes.CDLL(self._library_path)
        try:
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, 0)
            if sample_rate <= 0:
                raise RuntimeError(f"espeak_Initialize failed (returned {sample_rate}); {MISSING_ESPEAK}")
            lib.espeak_SetSynthCallback(self._callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
            lib.espeak_ng_SetRandSeed(1)
            self._chunks = []
            encoded = text.encode("utf-8")
            lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return samples.astype(np.int16), sample_rate

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
        return self._speak(text, voice, rate, pitch)


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
        backend: ``"library"`` (the ``espeakng-loader`` wheel), ``"program"`` (the ``espeak-ng`` program) or
            ``"auto"``: the library when the wheel is installed (reproducible), else the program.
        executable: path of the program; default: ``espeak-ng`` looked up on ``PATH``.

    Returns:
        An :class:`EspeakProgram` or :class:`EspeakLibrary`.

    Raises:
        ValueError: unknown ``backend``.
        RuntimeError: the requested back-end (or, for ``auto``, both) is missing; the message says what to install.
    """
    if backend not in ("auto", "program", "library"):
        raise ValueError(f"backend must be one of auto, program, library; got {backend!r}")
    if backend in ("auto", "library"):
        try:
            return EspeakLibrary()
        except RuntimeError:
            if backend == "library":
                raise
    program = executable or shutil.which("espeak-ng")
    if not program:
        raise RuntimeError(MISSING_ESPEAK)
    return EspeakProgram(program)
