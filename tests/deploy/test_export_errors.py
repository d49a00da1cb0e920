"""Bad input to ``hybrid-encoders export onnx``: clear errors naming the problem, and never a half-written folder."""

import sys

import pytest
import yaml

from deploy_helpers import save_experiment

from hybrid_encoders.cli import main
from hybrid_encoders.deploy import ExportError, MissingDependencyError, export_onnx
from hybrid_encoders.deploy.dependencies import require
from hybrid_encoders.deploy.espnet_model import check_exportable
from hybrid_encoders.deploy.onnx_export import check_opset


def _export(capsys, config, model, out, *extra):
    code = main(["export", "onnx", "--config", str(config), "--model", str(model), "--out", str(out), *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "change, named",
    [
        ({"encoder": "conformer"}, "encoder 'conformer'"),
        ({"model_conf": {"ctc_weight": 0.0}}, "attention-only"),
        ({"model": "espnet_rnnt", "decoder": "transducer"}, "decoder 'transducer'"),
        ({"frontend": "s3prl"}, "frontend 's3prl'"),
        ({"normalize": "utterance_mvn"}, "normalize 'utterance_mvn'"),
        ({"preencoder": "linear"}, "preencoder 'linear'"),
        ({"model": "espnet_multitask"}, "model 'espnet_multitask'"),
    ],
)
def test_unexportable_configurations_are_named(change, named, tmp_path):
    config = {"encoder": "zipformer", "frontend": "kaldi_fbank", "normalize": None, "decoder": "transformer",
              "model_conf": {"ctc_weight": 0.3}, **change}
    with pytest.raises(ExportError, match=named) as error:
        check_exportable(config, tmp_path / "config.yaml")
    assert "exportable: encoder squeezeformer | hybridformer | zipformer" in str(error.value)


def test_model_types(tmp_path):
    base = {"encoder": "squeezeformer", "frontend": "default", "normalize": "global_mvn"}
    assert check_exportable({**base, "model_conf": {"ctc_weight": 1.0}}, tmp_path) == "ctc"
    assert check_exportable({**base, "decoder": "transformer", "model_conf": {"ctc_weight": 0.3}}, tmp_path) == (
        "ctc_attention"
    )
    rnnt = {**base, "model": "espnet_rnnt", "decoder": "stateless_transducer"}
    assert check_exportable(rnnt, tmp_path) == "transducer"


def test_mismatched_files_and_output_folder(tmp_path, capsys):
    config, model, _ = save_experiment(tmp_path / "a", "squeezeformer")
    other_config, _, _ = save_experiment(tmp_path / "b", "squeezeformer", encoder_conf={"output_size": 16,
                                         "attention_heads": 2, "num_blocks": 2})  # fmt: skip
    code, err = _export(capsys, other_config, model, tmp_path / "out")
    assert code == 2 and f"--model {model} does not fit --config {other_config}" in err
    assert not (tmp_path / "out").exists()

    code, err = _export(capsys, tmp_path / "missing.yaml", model, tmp_path / "out")
    assert code == 2 and "--config: no such file" in err
    code, err = _export(capsys, config, tmp_path / "missing.pth", tmp_path / "out")
    assert code == 2 and "--model: no such file" in err

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    code, err = _export(capsys, config, model, tmp_path / "used")
    assert code == 2 and "exists and is not an empty folder" in err


def test_relative_stats_file_is_found_from_the_recipe_folder(tmp_path, monkeypatch):
    """ESPnet writes stats_file relative to the recipe folder; the export finds it from above the config."""
    from hybrid_encoders.deploy.espnet_model import load_experiment

    recipe = tmp_path / "recipe"
    config_path, model, _ = save_experiment(recipe / "exp" / "asr", "squeezeformer")
    config = yaml.safe_load(config_path.read_text())
    config["normalize_conf"]["stats_file"] = "exp/asr/feats_stats.npz"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert load_experiment(config_path, model).model.normalize is not None
    config["normalize_conf"]["stats_file"] = "exp/asr/absent.npz"
    config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(ExportError, match="normalize_conf.stats_file exp/asr/absent.npz not found"):
        load_experiment(config_path, model)


def test_failed_export_leaves_no_folder(tmp_path, monkeypatch):
    """A failing self-check (simulated) removes everything: neither DIR nor its temporary sibling remain."""
    import hybrid_encoders.deploy.onnx_export as onnx_export

    config, model, _ = save_experiment(tmp_path / "a", "squeezeformer")

    def failing_export(spec, path, opset):
        path.write_bytes(b"partial")
        raise ExportError("exporting ctc.onnx failed: simulated")

    monkeypatch.setattr(onnx_export, "export_graph", failing_export)
    with pytest.raises(ExportError, match="simulated"):
        export_onnx(config, model, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_missing_dependency_names_the_pip_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'onnxruntime'.*hybrid-encoders\[deploy\]"):
        require("onnxruntime")
    code, err = _export(capsys, tmp_path / "c.yaml", tmp_path / "m.pth", tmp_path / "out")
    assert code == 2 and "pip install 'onnxruntime'" in err


def test_opset_too_old_names_the_operator():
    import onnx
    from onnx import helper

    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3]),
                      helper.make_tensor_value_info("scale", onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    with pytest.raises(ExportError, match="--opset 16 is too old for encoder.onnx: operator LayerNormalization needs opset >= 17"):
        check_opset(model, 16, "encoder.onnx")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ExportError, match="the exporter wrote opset 18"):
        check_opset(model, 16, "encoder.onnx")
    check_opset(model, 18, "encoder.onnx")
