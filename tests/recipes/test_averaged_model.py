import pytest

from hybrid_encoders.recipes.averaged_model import averaged_model_name, main


@pytest.mark.parametrize("criteria, expected", [
    ("best_model_criterion:\n-   - valid\n    - acc\n    - max\n", "valid.acc.ave.pth"),
    ("best_model_criterion:\n-   - valid\n    - loss\n    - min\n-   - valid\n    - acc\n    - max\n",
     "valid.loss.ave.pth"),
    ("", "valid.acc.ave.pth"),  # no key: asr.sh's default
])
def test_the_first_criterion_names_the_average(tmp_path, criteria, expected):
    config = tmp_path / "train.yaml"
    config.write_text("encoder: squeezeformer\n" + criteria)
    assert averaged_model_name(str(config)) == expected


def test_bad_configs_are_named(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("best_model_criterion:\n-   - valid\n    - loss\n")
    with pytest.raises(ValueError, match=r"train.yaml: best_model_criterion must list \[phase, metric, max\|min\]"):
        averaged_model_name(str(config))
    assert main([str(config)]) == 1
    assert "cannot tell which checkpoint to decode" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
    config.write_text("- a list\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        averaged_model_name(str(config))
