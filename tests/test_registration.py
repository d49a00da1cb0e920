"""Entry-point registration into unmodified ESPnet, with a test-only third-party distribution.

One fresh interpreter imports ESPnet's asr task with the test distribution on its path and reports, as JSON, what
ended up in ESPnet's registries, which warnings were given, what a spawn child sees, and what strict mode does.
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

[espnet2.asr.encdoer]
typo = fake_espnet_plugin:IdentityEncoder

[espnet2.st.encoder]
fake_identity = fake_espnet_plugin:IdentityEncoder

[espnet2.optimizers]
fake_sgd = fake_espnet_plugin:FakeSGD

[espnet2.schedulers]
never_stepped = fake_espnet_plugin:NeverStepped
'''

PROBE = textwrap.dedent(
    '''
    import importlib, json, multiprocessing, os, sys, warnings


    def child(queue):
        import espnet2.tasks.asr as asr
        queue.put("fake_identity" in asr.encoder_choices.classes)


    if __name__ == "__main__":
        report = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import espnet2.tasks.asr as asr
            import espnet2.tasks.st as st
            from espnet2.tasks.abs_task import optim_classes, scheduler_classes
        report["warnings"] = [str(w.message) for w in caught if w.category.__name__ == "RegistrationWarning"]
        report["asr_encoders"] = sorted(asr.encoder_choices.classes)
        report["conformer"] = asr.encoder_choices.classes["conformer"].__name__
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
    dist_info = root / "fake_espnet_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-espnet-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
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
    assert "already taken by built-in" in _warning_about(report, "conformer")


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
