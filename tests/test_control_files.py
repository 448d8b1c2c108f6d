"""Control files (a --config file, sweep files, a dataset's meta.json, a Cityscapes camera json): every
field type-checked and named, an object at the top, nesting bounded; sweep points reach ``fastmtl
train`` with every field type intact, in safe folders; the sweep report without depth or with one seed."""
import json
from pathlib import Path

import pytest

from fastmtl.cli import COMMANDS, build_parser, main
from fastmtl.cli.flags import config_from_args
from fastmtl.config import Config, ConfigError
from fastmtl.data.cityscapes import read_camera
from fastmtl.data.bad_samples import BadSampleError
from fastmtl.data.folder import read_meta
from fastmtl.files import MAX_DEPTH, nesting_depth
from fastmtl.models import ModelKnobs
from fastmtl.sweep.builtin import builtin_sweep
from fastmtl.sweep.report import collect, markdown_table, plot_ladder
from fastmtl.sweep.runner import _headline, _read_summary, build_sweep, open_sweep, read_sweep_file

DEEP = "[" * 100_000 + "]" * 100_000  # a RecursionError in json.loads


def one_line_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert nesting_depth(DEEP) == 100_000


@pytest.mark.parametrize("fields, message", [
    ({"lr": "fast"}, "field lr: must be a number, got 'fast'"),
    ({"lr": None}, "field lr: must be a number, got None"),
    ({"lr": float("nan")}, "field lr: must be a number, finite"),
    ({"batch_size": 2.5}, "field batch_size: must be an integer"),
    ({"model": 3}, "field model: must be text, got 3"),
    ({"aspp": "maybe"}, "field aspp: must be true or false"),
    ({"tasks": None}, "field tasks: must be a list"),
    ({"tasks": "semseg,edges"}, "--tasks: unknown task 'edges'"),
    ({"size": [64]}, "field size: must be a list of 2 values"),
    ({"dilation": [1, 2]}, "field dilation: must be a list of 3 values"),
    ({"task_weights": [1]}, "field task_weights: must be an object"),
    ({"task_weights": {"depth": "heavy"}}, "field task_weights['depth']: must be a number"),
    ({"task_options": {"depth": 3}}, "field task_options['depth']: must be an object"),
    ({"weighting_opts": "temperature=2"}, "field weighting_opts: must be an object"),
])
def test_a_wrongly_typed_field_is_named(fields, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(fields).validate()
    assert message in str(e.value)


def test_numbers_and_lists_given_as_text_are_converted():
    cfg = Config.from_dict({"lr": "1e-3", "batch_size": "8", "size": "64x128", "tasks": "semseg,depth",
                            "dilation": "F,T,T", "aspp": "false", "task_weights": {"depth": "0.3"}}).validate()
    assert (cfg.lr, cfg.batch_size, cfg.size, cfg.tasks) == (1e-3, 8, (64, 128), ("semseg", "depth"))
    assert (cfg.dilation, cfg.aspp, cfg.task_weights) == ((False, True, True), False, {"depth": 0.3})
    assert ModelKnobs.from_fields({"dilation": [0, 1, 1]}).dilation == (False, True, True)  # old files
    with pytest.raises(ConfigError, match="field encoder: must be text"):
        ModelKnobs.from_fields({"encoder": None})


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "the top level must be a JSON object {...}, got list"),
    ("null", "got NoneType"),
    ('{"lr": null}', "field lr: must be a number, got None"),
    ('{"epochs": "ten"}', "field epochs: must be an integer, got 'ten'"),
    ('{"workers": [2]}', "field workers: must be an integer"),
    (DEEP, f"nested more than {MAX_DEPTH} levels deep"),
    ('{"task_options": ' * 50 + "1" + "}" * 50, f"nested more than {MAX_DEPTH} levels deep"),
    ("{bad", "not valid JSON"),
])
def test_a_bad_config_file_is_one_line_naming_file_and_field(tmp_path, capsys, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    err = one_line_error(["train", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert f"--config {path}" in err and message in err, err
    assert err.count(str(path)) == 1 and not (tmp_path / "run").exists()


def test_tasks_flag_errors_name_the_flag_once(capsys):
    err = one_line_error(["profile", "--tasks", "semseg,edges"], capsys)
    assert err.count("--tasks") == 1 and "unknown task 'edges'" in err, err


@pytest.mark.parametrize("text, message", [
    ("[]", "the top level must be a JSON object"),
    (DEEP, f"nested more than {MAX_DEPTH} levels deep"),
    ('{"base": {"lr": "fast"}}', "base: field lr: must be a number, got 'fast'"),
    ('{"variants": [{"name": "a", "set": {"batch_size": "many"}}]}', "field batch_size: must be an integer"),
    ('{"grid": {"lr": ["x", 1e-3]}}', "grid: field lr: must be a number, got 'x'"),
    ('{"grid": [1]}', "grid must be an object"),
])
def test_a_bad_sweep_file_names_the_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        open_sweep(str(path), str(tmp_path / "s"), {}, builtin_sweep)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "s").exists()


def test_a_deep_toml_sweep_file_is_refused(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 50 + "]" * 50 + "\n")
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep"):
        read_sweep_file(path)


def test_every_field_type_reaches_the_child_train_as_given(tmp_path):
    base = {"model": "joint", "tasks": ["semseg", "depth", "normals"], "size": "32x64", "lr": "3e-4",
            "task_weights": {"semseg": 1, "depth": "0.25"}, "task_options": {"depth": {"loss": "silog"}},
            "weighting": "dwa", "weighting_opts": {"temperature": 3}, "dilation": [False, False, True],
            "aspp": False, "channels_last": True, "eval_every": 5, "depth_norm": "log"}
    spec = {"base": base, "variants": [{"name": "tasks as text", "set": {"tasks": "semseg,depth"}},
                                       {"name": "all three", "set": {}}]}
    sweep = build_sweep(spec, tmp_path / "s", "test")
    parser = build_parser(COMMANDS)
    for point in sweep.points:
        cfg = config_from_args(parser.parse_args(point.train_args()))
        expected = Config.from_dict({**point.fields, "seed": point.seed, "out": str(point.run_dir),
                                     "quiet": True}).validate()
        assert cfg == expected
    first, second = (config_from_args(parser.parse_args(p.train_args())) for p in sweep.points)
    assert first.tasks == ("semseg", "depth") and second.tasks == ("semseg", "depth", "normals")
    assert second.task_weights == {"semseg": 1.0, "depth": 0.25} and second.weighting_opts == {"temperature": 3.0}
    assert second.task_option("depth", "loss") == "silog" and second.lr == 3e-4


@pytest.mark.parametrize("name", ["..", ".", "../../etc", "a/b", "x y", ".hidden", "lr=1e-3 / 2", "/"])
def test_variant_names_become_one_safe_folder(tmp_path, name):
    sweep = build_sweep({"variants": [{"name": name, "set": {"model": "joint"}}]}, tmp_path / "s", "test")
    run_dir = sweep.points[0].run_dir
    folder = run_dir.parent.name
    assert run_dir.parent.parent == tmp_path / "s" / "runs"
    assert folder not in (".", "..") and not folder.startswith(".") and "/" not in folder and " " not in folder


def _results(seeds, metrics):
    return {"sweep": "t", "folder": "f", "points": [], "variants": [
        {"variant": "a", "seeds": list(range(seeds)), "of_seeds": seeds,
         "metrics": {k: {"mean": v, "std": 0.0} for k, v in metrics.items()}}]}


def test_one_seed_shows_no_spread_and_a_run_without_depth_reports(tmp_path):
    no_depth = {"miou": 40.0, "angle_mean": 30.0, "multitask": 1.0, "images_per_second": 9.0}
    table = markdown_table(_results(1, no_depth))
    assert "±" not in table and "40.00" in table and "SI-logRMSE" not in table
    assert "40.00 ± 0.00" in markdown_table(_results(2, no_depth))
    plot_ladder(_results(1, no_depth), tmp_path / "ladder.png")
    assert (tmp_path / "ladder.png").stat().st_size > 0
    assert _headline({"miou": 40.0, "angle_mean": 30.0, "multitask": 1.0}) == "mIoU 40.00  angle_mean 30.00  multitask 1.00"
    assert _headline({"step": 150, "miou": 40.0, "multitask": 1.0}) == "mIoU 40.00  multitask 1.00"


def test_print_commands_help_says_it_writes_sweep_json():
    help_text = build_parser(COMMANDS)._subparsers._group_actions[0].choices["sweep"].format_help()
    assert "sweep.json" in " ".join(help_text.split())


def test_deep_or_non_object_meta_json_is_named(tmp_path):
    (tmp_path / "meta.json").write_text(DEEP)
    with pytest.raises(ValueError, match=f"meta.json: nested more than {MAX_DEPTH} levels deep"):
        read_meta(tmp_path)


def test_deep_camera_json_is_a_bad_sample(tmp_path):
    path = tmp_path / "x_camera.json"
    path.write_text('{"extrinsic": ' * 40 + "1" + "}" * 40)
    with pytest.raises(BadSampleError, match="nested more than"):
        read_camera(path, 0)
    path.write_text("[1]")
    with pytest.raises(BadSampleError, match="top level must be a JSON object"):
        read_camera(path, 0)


def test_a_torn_summary_leaves_the_point_out_with_a_warning(tmp_path):
    sweep = build_sweep({"variants": [{"name": "a", "set": {"model": "joint"}}], "seeds": [0]}, tmp_path / "s", "test")
    (point,) = sweep.points
    point.run_dir.mkdir(parents=True)
    (point.run_dir / "summary.json").write_text('{"final": {"miou": 4')  # a crash mid-write
    with pytest.warns(UserWarning, match="summary.json.*left out of the report"):
        results = collect(sweep)
    assert results["points"] == [] and "metrics" not in results["variants"][0]
    with pytest.warns(UserWarning, match="summary.json"):
        assert _read_summary(point) is None


def test_a_deep_sweep_set_value_is_refused_naming_the_flag(tmp_path, capsys):
    deep = "[" * 200 + "]" * 200
    rc = main(["sweep", "report-ladder", "--out", str(tmp_path / "s"), "--print-commands", "--set", f"tasks={deep}"])
    assert rc == 2 and f"--set tasks: nested more than {MAX_DEPTH} levels deep" in capsys.readouterr().err
