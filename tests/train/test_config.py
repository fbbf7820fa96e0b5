"""Training config files: TOML or JSON in, TrainConfig out, clear errors otherwise."""

from __future__ import annotations

import json

import pytest

from curation.errors import CurationError
from curation.plots import loss_curves_png
from curation.train.config import load_train_config


def test_toml_with_nested_sections(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(
        "steps = 30\nlr = 0.002\nbetas = [0.9, 0.99]\n[model]\nlayers = 2\nwidth = 64\nheads = 2\n"
        '[schedule]\nkind = "wsd"\ndecay_fraction = 0.2\n[colm]\nsmall_fraction = 0.25\n'
    )
    config = load_train_config(path, batch_size=8)
    assert (config.steps, config.lr, config.batch_size, config.betas) == (30, 0.002, 8, (0.9, 0.99))
    assert (config.model.layers, config.model.width) == (2, 64)
    assert config.schedule.kind == "wsd" and config.colm.small_fraction == 0.25


def test_json_and_defaults(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"steps": 5}))
    assert load_train_config(path).steps == 5
    assert load_train_config(None).colm is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("stepz = 3\n", r"unknown setting\(s\) stepz"),
        ("[model]\ndepth = 3\n", r"\[model\]: unknown setting\(s\) depth"),
        ("steps = 0\n", "steps and batch_size must be positive"),
        ("steps = \n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_setting(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CurationError, match=message) as info:
        load_train_config(path)
    assert str(path) in str(info.value)


def test_loss_curve_plot_is_a_png():
    records = [{"step": s, "loss": 5 - s / 10} for s in range(1, 11)]
    records[-1]["eval"] = {"overall": 4.0, "by_source": {"a": 3.9, "b": 4.2}}
    assert loss_curves_png(records).startswith(b"\x89PNG")
