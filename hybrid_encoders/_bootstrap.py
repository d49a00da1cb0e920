"""Start-up hook that registers entry-point plugins into ESPnet, with nothing but the standard library.

``hybrid_encoders.pth`` (and, for Python >= 3.15, ``hybrid_encoders.start``) runs :func:`install` when the
interpreter starts. It puts one finder at the front of ``sys.meta_path``. The finder does nothing for any module
except ``espnet2.tasks.<task>``: for those it lets the real loader execute the module and then hands the finished
module to :func:`hybrid_encoders.registration.apply`, which adds the registered entry points to the task's
``ClassChoices`` (or, for ``espnet2.tasks.abs_task``, to ``optim_classes`` / ``scheduler_classes``).

Nothing heavy is imported at start-up: torch, ESPnet and ``importlib.metadata`` are only touched once an ESPnet task
module is being imported, which costs 10-25 s anyway.

Environment switches:

* ``HYBRID_ENCODERS_DISABLE=1``: no hook and no registration, not even on ``import hybrid_encoders``.
* ``HYBRID_ENCODERS_STRICT=1``: a plugin that cannot be registered raises instead of warning.
* ``HYBRID_ENCODERS_DEBUG=1``: print every registration to stderr.
* ``HYBRID_ENCODERS_PREFER=dist1,dist2``: which distribution gets a name that several declare
  (:mod:`hybrid_encoders.registration`).
"""

import os
import sys

DISABLE_VARIABLE = "HYBRID_ENCODERS_DISABLE"
STRICT_VARIABLE = "HYBRID_ENCODERS_STRICT"
_FINDER_MARKER = "_hybrid_encoders_task_finder"
_TASK_PACKAGE = "espnet2.tasks."


def _switch_is_on(variable):
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_task_module(fullname):
    """True for ``espnet2.tasks.<name>`` (exactly one level below ``espnet2.tasks``)."""
    return fullname.startswith(_TASK_PACKAGE) and "." not in fullname[len(_TASK_PACKAGE) :]


def _after_import(module):
    """Register plugins into a task module that has just finished executing; never break ESPnet's import."""
    try:
        from hybrid_encoders import registration

        registration.apply(module)
    except (Exception, SystemExit) as error:  # whatever goes wrong here must not take ESPnet's own import down
        if _switch_is_on(STRICT_VARIABLE):
            raise
        sys.stderr.write(f"[hybrid-encoders] plugin registration into {module.__name__} failed: {error!r}\n")


class _ChainedLoader:
    """Runs the real loader, then :func:`_after_import`. The module keeps its real loader afterwards."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Give the module its real loader back first, so that inspect, linecache and typeguard find the source.
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _after_import(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _TaskModuleFinder:
    """Wraps the loader of every ``espnet2.tasks.<task>`` module in :class:`_ChainedLoader`."""

    _hybrid_encoders_task_finder = True

    def __init__(self):
        self._searching = set()

    def find_spec(self, fullname, path, target=None):
        if not is_task_module(fullname) or fullname in self._searching:
            return None
        self._searching.add(fullname)
        try:
            for finder in sys.meta_path:
                if getattr(finder, _FINDER_MARKER, False) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._searching.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ChainedLoader(spec.loader)
        return spec


def hook_installed():
    """Whether a task-module finder of this package is in ``sys.meta_path``."""
    return any(getattr(finder, _FINDER_MARKER, False) for finder in sys.meta_path)


def install():
    """Install the finder once and register plugins into task modules that are already imported.

    Idempotent. Does nothing while ``HYBRID_ENCODERS_DISABLE`` is set.
    """
    if _switch_is_on(DISABLE_VARIABLE):
        return
    if not hook_installed():
        sys.meta_path.insert(0, _TaskModuleFinder())
    for name, module in list(sys.modules.items()):
        if module is not None and is_task_module(name):
            _after_import(module)


try:
    install()
except Exception as _error:  # interpreter start-up must never fail because of us
    if _switch_is_on(STRICT_VARIABLE):
        raise
    sys.stderr.write(f"[hybrid-encoders] start-up hook not installed: {_error!r}\n")
