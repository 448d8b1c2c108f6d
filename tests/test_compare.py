"""``fastmtl compare``: Δm against hand examples, the table and JSON, one-line errors (run folders are
written by the test: no training here; tests/test_tasks_train.py compares real runs)."""
import json

import pytest

from fastmtl.cli import main
from fastmtl.compare import CompareError, compare, delta_m


def test_delta_m_of_libmtls_docstring_example():
    # LibMTL count_improvement's example: base {'A': [96, 98], 'B': [0.2]}, new {'A': [93, 99], 'B': [0.5]},
    # weight {'A': [1, 0], 'B': [1]} (1 = higher is better)
    directions = {"A": {"a1": +1, "a2": -1}, "B": {"b": +1}}
    base, new = {"a1": 96, "a2": 98, "b": 0.2}, {"a1": 93, "a2": 99, "b": 0.5}
    terms_a = [(93 - 96) / 96, -(99 - 98) / 98]
    term_b = (0.5 - 0.2) / 0.2
    over_metrics, over_tasks, why = delta_m(new, base, directions)
    assert why == ""
    assert over_metrics == pytest.approx(100 * (sum(terms_a) + term_b) / 3)  # 48.62
    assert over_tasks == pytest.approx(100 * (sum(terms_a) / 2 + term_b) / 2)  # 73.96, LibMTL's value x 100
    assert delta_m(base, base, directions)[:2] == (0.0, 0.0)
    assert delta_m({"a1": 1, "a2": 1}, base, directions) == (None, None, "b (B) missing")
    assert delta_m(new, {**base, "b": 0.0}, directions)[2].startswith("b (B) is 0.5 with baseline 0.0")


def write_run(folder, metrics, tasks=("semseg", "depth"), dataset="synthetic", data_root=None, best_step=None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"tasks": list(tasks), "dataset": dataset, "data_root": data_root}))
    summary = {"final_all": {**metrics, "iou_per_class": {"road": 1.0}}, "best": {"step": best_step or 4}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": best_step or 4, "epoch": 0, "lr": 1e-4, **metrics}) + "\n")
    return folder


BASE = {"miou": 50.0, "pixel_acc": 80.0, "si_log_rmse": 20.0, "abs_rel": 0.2, "abs_err": 0.5, "rel_err": 0.25,
        "multitask": 30.0}
BETTER = {**BASE, "miou": 55.0, "pixel_acc": 84.0, "abs_err": 0.4, "rel_err": 0.25, "multitask": 35.0}


def test_table_and_json_hold_every_metric_and_delta_m(tmp_path, capsys):
    base, run = write_run(tmp_path / "base", BASE), write_run(tmp_path / "run", BETTER)
    assert main(["compare", str(run), "--baseline", str(base)]) == 0
    table = capsys.readouterr().out
    for row in ("semseg miou *", "semseg pixel_acc *", "depth si_log_rmse", "depth abs_err *", "depth rel_err *",
                "multitask", "Δm % (metrics)", "base (baseline)"):
        assert row in table, row
    expected = 100 * (5 / 50 + 4 / 80 + 0.1 / 0.5 + 0) / 4
    assert f"{expected:+.2f}" in table
    assert main(["compare", str(base), str(run), "--baseline", str(base), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in report["runs"]] == ["base", "run"]  # the baseline once, first
    assert report["delta_m_metrics"] == {"semseg": {"miou": 1, "pixel_acc": 1}, "depth": {"abs_err": -1, "rel_err": -1}}
    assert report["runs"][0]["delta_m"] == 0.0
    assert report["runs"][1]["delta_m"] == pytest.approx(expected)
    assert report["runs"][1]["delta_m_per_task"] == pytest.approx(100 * ((5 / 50 + 4 / 80) / 2 + (0.1 / 0.5) / 2) / 2)
    assert "iou_per_class" not in report["runs"][1]["metrics"]


def test_best_step_metrics_come_from_metrics_jsonl(tmp_path):
    base = write_run(tmp_path / "base", BASE)
    run = write_run(tmp_path / "run", BETTER, best_step=2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, **BASE}) + "\n")
    assert compare([str(run)], str(base), "best")["runs"][1]["metrics"]["miou"] == 55.0


@pytest.mark.parametrize("case,message", [
    ("missing_dir", "no such run directory"),
    ("no_summary", r"no summary.json \(the run has not finished"),
    ("tasks", "runs have different tasks: .*base has semseg,depth, .*other has semseg,depth,normals"),
    ("dataset", r"runs are on different datasets: .*base on synthetic \(built-in\), .*other on miniscapes"),
])
def test_errors_are_one_line_and_say_what_differs(tmp_path, capsys, case, message):
    base = write_run(tmp_path / "base", BASE)
    other = tmp_path / "other"
    if case == "no_summary":
        write_run(other, BASE)
        (other / "summary.json").unlink()
    elif case == "tasks":
        write_run(other, BASE, tasks=("semseg", "depth", "normals"))
    elif case == "dataset":
        write_run(other, BASE, dataset="miniscapes", data_root=str(tmp_path))
    with pytest.raises(CompareError, match=message):
        compare([str(other)], str(base))
    assert main(["compare", str(other), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastmtl compare: error:") and "\n" not in err


def test_single_task_runs_together_are_the_baseline(tmp_path, capsys):
    seg = write_run(tmp_path / "seg", {"miou": 50.0, "pixel_acc": 80.0, "multitask": 50.0}, tasks=("semseg",))
    dep = write_run(tmp_path / "dep", {"abs_err": 0.5, "rel_err": 0.25, "si_log_rmse": 20.0, "multitask": -20.0},
                    tasks=("depth",))
    run = write_run(tmp_path / "run", BETTER)
    assert main(["compare", str(run), "--baseline", str(seg), "--baseline", str(dep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["baseline"] == "seg + dep" and report["tasks"] == ["semseg", "depth"]
    base, other = report["runs"]
    assert base["metrics"] == {"miou": 50.0, "pixel_acc": 80.0, "abs_err": 0.5, "rel_err": 0.25, "si_log_rmse": 20.0}
    assert other["delta_m"] == pytest.approx(100 * (5 / 50 + 4 / 80 + 0.1 / 0.5 + 0) / 4)
    with pytest.raises(CompareError, match="task semseg is in two baselines"):
        compare([str(run)], [str(seg), str(seg.parent / "seg")])
    with pytest.raises(CompareError, match="runs have different tasks: .*seg has semseg, .*run has semseg,depth"):
        compare([str(run)], [str(seg)])


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path):
    base = write_run(tmp_path / "base", BASE)
    run = write_run(tmp_path / "run", BETTER)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "miou": 5')  # a crash while the line was appended
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: dropped its last line 2, torn"):
        report = compare([str(run)], str(base), at="best")
    assert report["runs"][1]["metrics"]["miou"] == 55.0
    (run / "metrics.jsonl").write_text('{"step": 1, "mi\n' + json.dumps({"step": 4, **BETTER}) + "\n")
    with pytest.raises(CompareError, match=r"metrics\.jsonl: line 1 is not valid JSON"):
        compare([str(run)], str(base), at="best")


def test_an_empty_summary_is_an_error_naming_the_file(tmp_path):
    base = write_run(tmp_path / "base", BASE)
    run = write_run(tmp_path / "run", BETTER)
    (run / "summary.json").write_text("")
    with pytest.raises(CompareError, match=rf"{run / 'summary.json'}: not valid JSON"):
        compare([str(run)], str(base))


def test_delta_m_sign_lower_better_is_the_nash_mtl_tables(tmp_path, capsys):
    # Nash-MTL / CAGrad / FAMO: Δm% = 100/K sum_k (-1)^{higher better} (M - B) / B, lower is better
    base, run = write_run(tmp_path / "base", BASE), write_run(tmp_path / "run", BETTER)
    by_hand = 100 * (-(55 - 50) / 50 - (84 - 80) / 80 + (0.4 - 0.5) / 0.5 + (0.25 - 0.25) / 0.25) / 4  # -8.75
    assert main(["compare", str(run), "--baseline", str(base), "--delta-m-sign", "lower-better", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["delta_m_sign"] == "lower-better"
    assert report["runs"][1]["delta_m"] == pytest.approx(by_hand) and by_hand < 0
    assert report["runs"][0]["delta_m"] == 0.0
    assert main(["compare", str(run), "--baseline", str(base), "--delta-m-sign", "lower-better"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("Δm % (metrics)"))
    assert "↓" in row and "↑" not in row and f"{by_hand:+.2f}" in row
    assert compare([str(run)], str(base))["runs"][1]["delta_m"] == pytest.approx(-by_hand)  # the default sign
    with pytest.raises(CompareError, match="--delta-m-sign"):
        compare([str(run)], str(base), delta_m_sign="up")


def test_metric_style_mtan_needs_the_runs_checkpoint(tmp_path):
    base, run = write_run(tmp_path / "base", BASE), write_run(tmp_path / "run", BETTER)
    with pytest.raises(CompareError, match=r"base: no last.pt to evaluate with --metric-style mtan"):
        compare([str(run)], str(base), metric_style="mtan")
    with pytest.raises(CompareError, match=r"no best.pt"):
        compare([str(run)], str(base), at="best", metric_style="mtan")
    with pytest.raises(CompareError, match="--metric-style: unknown value 'nash'"):
        compare([str(run)], str(base), metric_style="nash")
