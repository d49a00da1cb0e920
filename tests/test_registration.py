"""Entry-point registration into unmodified ESPnet, with test-only third-party distributions.

One fresh interpreter imports ESPnet's asr task with two test distributions on its path (ahead of site-packages, so
ahead of this package) and reports, as JSON, what ended up in ESPnet's registries, which warnings were given, what
``hybrid-encoders list`` and ``doctor`` say, what a spawn child sees, and what a clash preference, a warnings filter
that raises, and strict mode do.

* ``fake-espnet-plugin`` (sorts before ``hybrid-encoders``): good and broken entry points, one that calls
  ``sys.exit()`` on import, and ``hybridformer``, a name this package declares too;
* ``other-zipformer`` (sorts after it): ``zipformer``, also declared by this package.
"""

import json
import textwrap

import pytest

from conftest import run_python

FAKE_MODULE = '''
import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.schedulers.abs_scheduler import AbsScheduler


class IdentityEncoder(AbsEncoder):
    def __init__(self, input_size: int, output_size: int = 4):
        super().__init__()
        self._output_size = output_size

    def output_size(self):
        return self._output_size

    def forward(self, xs_pad, ilens, prev_states=None):
        return xs_pad, ilens, None


class NotAnEncoder:
    pass


class FakeSGD(torch.optim.SGD):
    pass


class NeverStepped(AbsScheduler):
    def step(self, epoch=None):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
'''

ENTRY_POINTS = '''
[espnet2.asr.encoder]
fake_identity = fake_espnet_plugin:IdentityEncoder
MixedCase = fake_espnet_plugin:IdentityEncoder
conformer = fake_espnet_plugin:IdentityEncoder
broken = fake_espnet_plugin_missing:Nothing
not_an_encoder = fake_espnet_plugin:NotAnEncoder
exits = fake_exiting_module:Anything
hybridformer = fake_espnet_plugin:IdentityEncoder

[espnet2.asr.encdoer]
typo = fake_espnet_plugin:IdentityEncoder

[espnet2.st.encoder]
fake_identity = fake_espnet_plugin:IdentityEncoder

[espnet2.optimizers]
fake_sgd = fake_espnet_plugin:FakeSGD

[espnet2.schedulers]
never_stepped = fake_espnet_plugin:NeverStepped
'''

OTHER_ENTRY_POINTS = '''
[espnet2.asr.encoder]
zipformer = other_zipformer:Zipformer
'''

OTHER_MODULE = '''
from fake_espnet_plugin import IdentityEncoder


class Zipformer(IdentityEncoder):
    pass
'''

PROBE = textwrap.dedent(
    '''
    import argparse, contextlib, importlib, io, json, multiprocessing, os, sys, warnings


    def child(queue):
        import espnet2.tasks.asr as asr
        queue.put("fake_identity" in asr.encoder_choices.classes)


    def resolved(asr):
        return {name: asr.encoder_choices.classes[name].__module__ for name in ("zipformer", "hybridformer", "squeezeformer")}


    if __name__ == "__main__":
        report = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import espnet2.tasks.asr as asr
            import espnet2.tasks.st as st
            from espnet2.tasks.abs_task import optim_classes, scheduler_classes
        report["warnings"] = [str(w.message) for w in caught if w.category.__name__ == "RegistrationWarning"]
        report["asr_encoders"] = sorted(asr.encoder_choices.classes)
        report["resolved"] = resolved(asr)
        report["conformer"] = asr.encoder_choices.classes["conformer"].__name__

        from hybrid_encoders.commands import doctor, list_plugins
        with contextlib.redirect_stdout(io.StringIO()) as listing:
            list_plugins.run(argparse.Namespace(all=False))
        report["list"] = listing.getvalue()
        report["doctor"] = vars(doctor._check_registration())

        # The clash preference is read at registration: re-register with it.
        os.environ["HYBRID_ENCODERS_PREFER"] = "other-zipformer, hybrid_encoders"
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            report["preferred"] = resolved(importlib.reload(asr))
        report["doctor_preferred"] = vars(doctor._check_registration())
        del os.environ["HYBRID_ENCODERS_PREFER"]

        # A warnings filter that raises (PYTHONWARNINGS=error) stops no registration; the warnings go to stderr.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()) as stderr:
            warnings.simplefilter("error")
            reloaded = importlib.reload(asr)
        report["error_filter_encoders"] = sorted(reloaded.encoder_choices.classes)
        report["error_filter_stderr"] = stderr.getvalue()
        report["st_has_fake"] = "fake_identity" in st.encoder_choices.classes
        report["fake_sgd"] = "fake_sgd" in optim_classes
        report["never_stepped"] = "never_stepped" in scheduler_classes
        report["built"] = type(asr.encoder_choices.get_class("fake_identity")(input_size=3)).__name__

        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            reloaded = importlib.reload(asr)
        report["after_reload"] = "fake_identity" in reloaded.encoder_choices.classes
        report["finders"] = sum(type(f).__name__ == "_TaskModuleFinder" for f in sys.meta_path)

        queue = multiprocessing.get_context("spawn").Queue()
        process = multiprocessing.get_context("spawn").Process(target=child, args=(queue,))
        process.start()
        report["spawn_child"] = queue.get(timeout=240)
        process.join()

        from hybrid_encoders import registration
        os.environ["HYBRID_ENCODERS_STRICT"] = "1"
        try:
            registration.apply(reloaded)
        except registration.RegistrationError as error:
            report["strict"] = str(error)
        print("REPORT" + json.dumps(report))
    '''
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_dist")
    (root / "fake_espnet_plugin.py").write_text(FAKE_MODULE)
    (root / "fake_exiting_module.py").write_text("import sys\nsys.exit(3)\n")
    (root / "other_zipformer.py").write_text(OTHER_MODULE)
    for name, entry_points in (("fake-espnet-plugin", ENTRY_POINTS), ("other-zipformer", OTHER_ENTRY_POINTS)):
        dist_info = root / f"{name.replace('-', '_')}-0.1.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (dist_info / "entry_points.txt").write_text(entry_points)
    script = root / "probe.py"
    script.write_text(PROBE)
    result = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", env={"PYTHONPATH": str(root)}, cwd=root)
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def _warning_about(report, entry_point_name):
    matches = [w for w in report["warnings"] if f"'{entry_point_name} = " in w]
    assert matches, f"no warning names {entry_point_name}: {report['warnings']}"
    return matches[0]


def test_third_party_entry_points_are_registered(report):
    assert "fake_identity" in report["asr_encoders"]
    assert report["built"] == "IdentityEncoder"
    assert report["st_has_fake"] and report["fake_sgd"] and report["never_stepped"]


def test_builtin_names_are_never_overridden(report):
    assert report["conformer"] == "ConformerEncoder"
    assert "is ESPnet's built-in espnet2.asr.encoder.conformer_encoder.ConformerEncoder" in _warning_about(report, "conformer")


def test_name_clashes_follow_the_distribution_name_not_sys_path(report):
    # Both test distributions are ahead of this package on sys.path. By name, fake-espnet-plugin < hybrid-encoders <
    # other-zipformer: hybridformer goes to the fake plugin, zipformer stays ours.
    assert report["resolved"] == {"zipformer": "hybrid_encoders.encoders.zipformer",
                                  "hybridformer": "fake_espnet_plugin",
                                  "squeezeformer": "hybrid_encoders.encoders.squeezeformer"}
    clashes = {w.split("'")[1]: w for w in report["warnings"] if w.startswith("name clash in espnet2.tasks.asr encoder")}
    assert set(clashes) == {"zipformer", "hybridformer"}
    assert ("'zipformer' is declared by hybrid-encoders (hybrid_encoders.encoders.zipformer:ZipformerEncoder) and by "
            "other-zipformer (other_zipformer:Zipformer). ESPnet uses hybrid-encoders's") in clashes["zipformer"]
    assert "HYBRID_ENCODERS_PREFER=hybrid-encoders" in clashes["hybridformer"]


def test_a_preference_decides_a_clash(report):
    assert report["preferred"] == {"zipformer": "other_zipformer", "hybridformer": "hybrid_encoders.encoders.hybridformer",
                                   "squeezeformer": "hybrid_encoders.encoders.squeezeformer"}


def test_list_shows_what_each_name_resolves_to(report):
    rows = {}
    for line in report["list"].splitlines()[2:]:
        cells = line.split()
        if len(cells) >= 5 and cells[1:3] == ["espnet2.tasks.asr", "encoder"]:
            rows[(cells[0], cells[4])] = cells[3]
    assert rows[("zipformer", "hybrid-encoders")] == "hybrid_encoders.encoders.zipformer.ZipformerEncoder"
    assert rows[("hybridformer", "fake-espnet-plugin")] == "fake_espnet_plugin.IdentityEncoder"
    assert ("hybridformer", "hybrid-encoders") not in rows
    assert ("note: 'hybridformer' in espnet2.tasks.asr encoder: hybrid-encoders's "
            "hybrid_encoders.encoders.hybridformer:HybridformerEncoder is shadowed; the name resolves to "
            "fake_espnet_plugin.IdentityEncoder of fake-espnet-plugin") in report["list"]


def test_doctor_names_exactly_what_espnet_does_not_get_from_this_package(report):
    check = report["doctor"]
    assert check["status"] == "problem"
    declared = int(check["detail"].split(" of ")[1].split()[0])
    assert check["detail"].startswith(f"{declared - 1} of {declared} entry points of hybrid-encoders registered")
    assert check["impact"].startswith(f"ESPnet sees {declared - 1} of this package's {declared} entry points; not: "
                                      "hybridformer (espnet2.tasks.asr encoder: 'hybridformer' resolves to "
                                      "fake_espnet_plugin:IdentityEncoder of fake-espnet-plugin (clash rule))")
    assert "set HYBRID_ENCODERS_PREFER=hybrid-encoders" in check["fix"]
    # A clash lost to a distribution the user prefers is a choice, not a problem.
    assert report["doctor_preferred"]["status"] == "note"
    assert "by HYBRID_ENCODERS_PREFER: zipformer" in report["doctor_preferred"]["detail"]


def test_a_plugin_calling_sys_exit_on_import_is_skipped(report):
    assert "failed to load (SystemExit(3))" in _warning_about(report, "exits")
    assert "exits" not in report["asr_encoders"]


def test_a_raising_warnings_filter_stops_no_registration(report):
    assert {"fake_identity", "squeezeformer", "zipformer"} <= set(report["error_filter_encoders"])
    assert "[hybrid-encoders] RegistrationWarning: entry point 'broken = " in report["error_filter_stderr"]


def test_bad_entry_points_warn_naming_the_entry_point(report):
    assert "declare it as 'mixedcase'" in _warning_about(report, "MixedCase")
    assert "failed to load" in _warning_about(report, "broken")
    assert "is not a subclass of espnet2.asr.encoder.abs_encoder.AbsEncoder" in _warning_about(report, "not_an_encoder")
    assert "names no choice of task 'asr'" in _warning_about(report, "typo")
    assert any("never step it" in w for w in report["warnings"])
    for name in ("mixedcase", "MixedCase", "broken", "not_an_encoder", "typo"):
        assert name not in report["asr_encoders"]


def test_registration_survives_reload_and_reaches_spawn_children(report):
    assert report["after_reload"]
    assert report["finders"] == 1
    assert report["spawn_child"] is True


def test_strict_mode_turns_warnings_into_errors(report):
    assert report.get("strict", "").startswith("entry point '") and "(distribution " in report["strict"]
    assert "name clash in espnet2.tasks.asr encoder: 'zipformer'" in report["strict"]
