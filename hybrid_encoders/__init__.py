"""hybrid-encoders: Squeezeformer, HybridFormer and Zipformer encoders (plus ScaledAdam, Eden, NoamHoldAnnealing) for
unmodified ESPnet, registered through Python entry points.

Importing this package is cheap (standard library only) and makes sure the registration hook is active, also where
``.pth`` files are not processed (``PYTHONPATH`` or ``pip install --target`` installs).
"""

from hybrid_encoders._bootstrap import hook_installed, install

__version__ = "0.1.0"


def activate():
    """Install the registration hook and register plugins into ESPnet task modules that are already imported."""
    install()


activate()

__all__ = ["__version__", "activate", "hook_installed"]
