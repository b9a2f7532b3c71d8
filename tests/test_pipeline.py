"The whole study at toy scale: every stage runs, resumes, reproduces, and the reports hold what the run computed."
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from partages.cli import main
from partages.core import load_config
from partages.evaluate import ResultsError, run_analyses
from partages.pipeline import StudyConfig, run_study

CONFIG = Path(__file__).parent / "configs" / "tiny_study.yaml"


@pytest.fixture(scope="module")
def study(tmp_path_factory, mirror):
    "Run the tiny study once through the command line; returns its run and reports folders."
    root = tmp_path_factory.mktemp("study")
    run_dir, reports = root / "run", root / "reports"
    code = main(["run", "--config", str(CONFIG), "--run-dir", str(run_dir), "--reports-dir", str(reports)])
    assert code == 0
    return run_dir, reports


def test_study_writes_every_table(study):
    run_dir, _ = study
    for name in ("scores", "robustness", "frugality", "perplexity"):
        assert (run_dir / "results" / f"{name}.csv").is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["config"]["name"] == "tiny"


def test_study_scores_cover_models_and_sets(study):
    run_dir, _ = study
    scores = pd.read_csv(run_dir / "results" / "scores.csv")
    cfg = load_config(CONFIG, StudyConfig)
    assert set(scores["model"]) == {m.name for m in cfg.models}
    expected_sets = {"synthetic_test", "synthetic_test_noisy", "e3c_test", "e3c_test_noisy"}
    assert expected_sets <= set(scores["eval_set"])
    e3c_labels = set(scores.query("eval_set == 'e3c_test'")["label"]) - {"ALL", "MACRO", "NOVEL"}
    assert e3c_labels == {"DISO", "ANAT"}
    assert set(scores["noise_op"]) == {"none", "keyboard"}


def test_study_splits_hold_out_concepts(study):
    run_dir, _ = study
    held = json.loads((run_dir / "splits" / "held_out.json").read_text())["held_out"]
    assert len(held) == 1
    train = [json.loads(line) for line in (run_dir / "splits" / "synthetic_train.jsonl").read_text().splitlines()]
    codes = {e.get("concept") for d in train for e in d["entities"]}
    assert not codes & set(held)


def test_study_frugality_is_measured(study):
    run_dir, _ = study
    frugality = pd.read_csv(run_dir / "results" / "frugality.csv").set_index("model")
    assert (frugality["total_params"] > 0).all()
    assert (frugality["train_time_s"] > 0).all()
    assert frugality.loc["crf", "trainable_params"] < frugality.loc["minilm-dapt-lora-noise", "trainable_params"]


def test_reports_quote_the_results(study):
    run_dir, reports = study
    readme = (reports / "README.md").read_text()
    scores = pd.read_csv(run_dir / "results" / "scores.csv")
    best = scores.query("eval_set == 'synthetic_test' and noise_op == 'none' and label == 'ALL' and mode == 'strict'")["f1"].max()
    assert f"{best:.3f}" in readme
    for figure in ("transfer", "cost", "robustness_synthetic_test"):
        assert (reports / "figures" / f"{figure}.png").stat().st_size > 5000, figure
    assert (reports / "tables" / "per_label.csv").is_file()


def test_study_resumes_without_rerunning(study, tmp_path):
    run_dir, _ = study
    before = {p.name: p.read_text() for p in (run_dir / "stages").iterdir()}
    scores = (run_dir / "results" / "scores.csv").read_bytes()
    cfg = load_config(CONFIG, StudyConfig, ["analyses.enabled=false"])
    run_study(cfg, run_dir, tmp_path / "reports")
    after = {p.name: p.read_text() for p in (run_dir / "stages").iterdir()}
    assert after == before
    assert (run_dir / "results" / "scores.csv").read_bytes() == scores


def test_changed_setting_reruns_its_stage(study, tmp_path):
    run_dir, _ = study
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = load_config(CONFIG, StudyConfig, ["analyses.enabled=false", "models.2.train.crf.c1=0.5"])
    run_study(cfg, copy, tmp_path / "reports")
    old = json.loads((run_dir / "stages" / "train__crf.json").read_text())
    new = json.loads((copy / "stages" / "train__crf.json").read_text())
    assert old["key"] != new["key"]
    unchanged = json.loads((copy / "stages" / "train__scratch-char.json").read_text())
    assert unchanged == json.loads((run_dir / "stages" / "train__scratch-char.json").read_text())


def test_analyses_reject_damaged_results(study, tmp_path):
    run_dir, _ = study
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "results" / "scores.csv").write_text("not,a,score,table\n1,2,3,4\n")
    with pytest.raises(ResultsError, match="scores.csv"):
        run_analyses(copy, tmp_path / "reports")
    with pytest.raises(ResultsError):
        run_analyses(tmp_path / "missing", tmp_path / "reports")


def test_unknown_study_key_is_an_error(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("name: x\nmodels:\n  - name: a\n    trian: {}\n")
    assert main(["run", "--config", str(bad)]) == 1
