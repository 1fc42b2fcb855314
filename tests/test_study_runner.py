"""The study runner on the organism: a run killed with SIGKILL at a random unit and rerun ends with the same
results file as an uninterrupted run (no unit lost or duplicated); a torn last line is cut off; bad configs
are one line of error; the report writes the Table 4 analog."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kelocate.cli import main
from kelocate.data.knowedit import EditCase, Probe
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import StudyConfig, check_config, load_config, same_config
from kelocate.studies.knowedit.plan import selected
from kelocate.studies.knowedit.runner import run_study
from kelocate.studies.knowedit.store import RESULTS, read_results

CONFIG = """
[study]
methods = ["ft-m", "ice"]
tasks = ["ZsRE", "WikiData_counterfact", "Sanitation"]
cases = 3
generation = false
fluency = false
"""

CHILD = """
import os, sys, time, torch
torch.set_num_threads(1)
from kelocate.studies.knowedit.config import load_config
from kelocate.studies.knowedit.runner import run_study

def progress(done, total, detail):
    if done == {kill_after}:
        open({marker!r}, "w").close()
        time.sleep(0.05)  # the next unit is in flight when the parent kills

run_study(load_config({config!r}), {out!r}, progress=progress)
"""


@pytest.fixture
def one_thread():
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(int(os.environ.get("KELOCATE_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or 2))


def test_a_killed_study_resumes_to_the_same_results_file(tmp_path, one_thread):
    config = tmp_path / "study.toml"
    config.write_text(CONFIG)
    units = 2 * 3 * 3
    kill_after = random.Random().randrange(1, units - 1)
    print(f"killed after unit {kill_after} of {units}")
    killed, marker = tmp_path / "killed", tmp_path / "marker"
    code = CHILD.format(kill_after=kill_after, marker=str(marker), config=str(config), out=str(killed))
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert child.poll() is None and time.time() < deadline, "the child did not reach the unit"
            time.sleep(0.01)
        child.kill()
    finally:
        child.wait()
    before = (killed / RESULTS).read_bytes()
    assert len(before.splitlines()) >= kill_after
    resumed = run_study(load_config(config), killed)
    straight = run_study(load_config(config), tmp_path / "straight")
    assert resumed["skipped"] >= kill_after and resumed["skipped"] + resumed["ran"] == units
    assert straight["ran"] == units
    assert (killed / RESULTS).read_bytes() == (tmp_path / "straight" / RESULTS).read_bytes()
    rows = [json.loads(line) for line in (killed / RESULTS).read_text().splitlines()]
    assert len({r["unit"] for r in rows}) == units and all(r["status"] == "ok" for r in rows)
    assert run_study(load_config(config), killed)["ran"] == 0  # a third run has nothing left to do


def test_a_torn_line_is_cut_off_and_its_unit_reruns(tmp_path, one_thread):
    config = tmp_path / "study.toml"
    config.write_text(CONFIG.replace('"ft-m", "ice"', '"ice"').replace("cases = 3", "cases = 1"))
    out = tmp_path / "run"
    first = run_study(load_config(config), out)
    lines = (out / RESULTS).read_bytes().splitlines(keepends=True)
    (out / RESULTS).write_bytes(b"".join(lines[:-1]) + lines[-1][:25])  # killed in the middle of a write
    torn = (out / RESULTS).read_bytes()
    assert len(read_results(out)) == first["units"] - 1 and (out / RESULTS).read_bytes() == torn  # readers never cut
    again = run_study(load_config(config), out)
    assert again["ran"] == 1 and again["skipped"] == first["units"] - 1
    assert (out / RESULTS).read_bytes() == b"".join(lines)


def test_a_hand_edited_results_line_is_one_error_and_a_torn_one_is_left_out(tmp_path):
    from kelocate.studies.knowedit.store import ResultsStore

    store = ResultsStore(tmp_path)
    store.path.write_bytes(b'{"unit": "a"}\n{"unit": "b"}\n{"unit": "c"')  # the last line is being written
    assert store.rows() == [{"unit": "a"}, {"unit": "b"}] and store.path.read_bytes().endswith(b'"c"')
    assert store.rows(repair=True) == [{"unit": "a"}, {"unit": "b"}] and store.path.read_bytes().endswith(b"}\n")
    store.path.write_bytes(b'{"unit": "a"}\n{"unit": "b",}\n')
    with pytest.raises(KelocateError) as info:
        store.rows()
    message = str(info.value)
    assert message.startswith(f"{store.path}:2: not valid JSON") and "edited by hand" in message
    assert "\n" not in message


def test_failed_units_are_skipped_on_resume_and_rerun_with_retry_failed(tmp_path, one_thread):
    config = tmp_path / "study.toml"
    config.write_text(CONFIG.replace('"ft-m", "ice"', '"ice"').replace("cases = 3", "cases = 1"))
    out = tmp_path / "run"
    run_study(load_config(config), out)
    rows = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    failed = {**rows[0], "status": "failed", "error": "the worker died"}
    failed.pop("scores")
    (out / RESULTS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in [failed, *rows[1:]]))
    assert run_study(load_config(config), out)["ran"] == 0
    again = run_study(load_config(config), out, retry_failed=True)
    assert again["ran"] == 1 and again["failed"] == 0
    assert read_results(out) == rows  # one row per unit (the retried one's last), in the order units first ran


def test_report_writes_the_table(tmp_path, one_thread, capsys):
    config = tmp_path / "study.toml"
    config.write_text(CONFIG.replace("cases = 3", "cases = 2").replace("generation = false", "generation = true"))
    out = tmp_path / "run"
    assert main(["study", "run", str(config), "--out", str(out)]) == 0
    assert main(["study", "report", str(out)]) == 0
    table = (out / "report" / "table4.md").read_text()
    assert "| ft-m | ZsRE | single |" in table and "edit_tf" in table and "edit_gen" in table
    csv = (out / "report" / "table4.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 3
    assert "locality_tf.Relation_Specificity" in csv[0] and "locality_tf.Retain" in table  # sub-types too
    printed = capsys.readouterr().out
    assert "edit_tf" in printed and "locality_tf.Retain" not in printed  # the terminal gets the narrow table
    assert not (out / "report" / "beside.md").exists()
    assert main(["study", "report", str(out), "--beside", str(out)]) == 0  # the same study twice: same orderings
    beside = (out / "report" / "beside.md").read_text()
    assert "## organism beside organism (run) beside the published numbers" in beside
    assert "rho organism vs organism (run)" in beside and "The paper's findings on each table" in beside
    assert main(["study", "report", str(out), "--beside", str(tmp_path / "nowhere")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("text, message", [
    ('[study]\nmethods = ["roam"]', "unknown method 'roam'"),
    ('[study]\nmetods = ["rome"]', "unknown setting 'metods'"),
    ('[study]\nmode = "parallel"', "unknown mode"),
    ('[study]\ndata = "real"\ntasks = ["ZsRE"]', "no file for task ZsRE"),
    ('[study]\nfiles = {ZsRE = "missing.json"}', "does not exist"),
    ("[study\n", "not valid TOML"),
    ('[study]\ngeneral = true', "set mode"),
    ('[study]\nrequire = ["answers"]', "cannot require 'answers'"),
    ('[study]\nmode = "sequential"\ngeneral = true\ngeneral_text = "none.txt"', "general_text file"),
    ('[study]\ncases = "3"', "cases must be an integer"),
    ('[study]\nmethods = "rome"', "methods must be a list"),
    ('[study]\ngeneration = 1', "generation must be true or false"),
    ('methods = ["rome"]\n[study]\ncases = 1', "'methods'; put it under \\[study\\]"),
])
def test_bad_configs_are_one_line(tmp_path, capsys, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(KelocateError, match=message):
        load_config(config)
    assert main(["study", "run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_required_fields_narrow_the_seeded_sample():
    probe = (Probe(prompt="Who?", answers=("x",)),)
    cases = [EditCase(task="ZsRE", subject="s", prompt=f"s {i}", target_new="t",
                      portability={"Reasoning": probe} if i % 3 == 0 else {}) for i in range(30)]
    plain = StudyConfig(cases=4, seed=7)
    assert selected(plain, cases) == sorted(random.Random(7).sample(range(30), 4))  # what earlier runs chose
    wanted = StudyConfig(cases=4, seed=7, require=["portability"])
    chosen = selected(wanted, cases)
    assert len(chosen) == 4 and all(i % 3 == 0 for i in chosen) and chosen == selected(wanted, cases)
    assert selected(StudyConfig(cases=50, require=["portability"]), cases) == list(range(0, 30, 3))


def test_a_task_without_a_required_field_is_one_line_and_writes_nothing(tmp_path, capsys, one_thread):
    config = tmp_path / "ported.toml"
    config.write_text('[study]\nmethods = ["ice"]\ntasks = ["ZsRE", "ConvSent"]\nrequire = ["portability"]')
    assert main(["study", "run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ConvSent has no case with portability" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_run_saved_before_a_setting_existed_still_resumes():
    from dataclasses import asdict

    resolved = asdict(StudyConfig(methods=["ice"]))
    saved = {key: value for key, value in resolved.items() if key != "require"}
    assert same_config(saved, resolved)
    assert not same_config(saved, asdict(StudyConfig(methods=["ice"], require=["portability"])))
    assert not same_config({**saved, "cases": 3}, resolved)


def test_a_folder_of_another_study_is_refused(tmp_path, one_thread):
    config = check_config(StudyConfig(methods=["ice"], tasks=["ZsRE"], cases=1, generation=False, fluency=False))
    run_study(config, tmp_path / "run")
    other = check_config(StudyConfig(methods=["ice"], tasks=["ZsRE"], cases=2, generation=False, fluency=False))
    with pytest.raises(KelocateError, match="another config"):
        run_study(other, tmp_path / "run")
    assert Path(tmp_path / "run" / RESULTS).read_text().count("\n") == 1


SIX = ["WikiData_recent", "ZsRE", "WikiBio", "WikiData_counterfact", "ConvSent", "Sanitation"]
ELEVEN = ["kn", "rome", "memit", "pmet", "alphaedit", "mend", "ft-l", "ft-m", "serac", "ice", "adalora"]
SHIPPED = {  # config -> every setting it must produce that is not a default
    "organism_knowedit": dict(methods=ELEVEN, tasks=SIX, cases=10, metrics=["kelocate", "easyedit"],
                              requests="easyedit"),
    "organism_mixed_sequential": dict(methods=["ft-l", "rome", "adalora", "mend", "memit", "alphaedit", "ft-m"],
                                      tasks=["WikiData_recent", "ZsRE", "WikiData_counterfact"], cases=170,
                                      mode="mixed", curve=[10, 100, 470], general=True, generation=False,
                                      fluency=False),
    "organism_smoke": dict(methods=["kn", "rome", "memit", "ft-l", "ft-m", "ice", "adalora"], tasks=SIX, cases=2),
    "organism_sequential": dict(methods=["rome", "memit", "alphaedit", "ft-m"], tasks=["WikiData_counterfact"],
                                cases=470, mode="sequential", n=470, curve=[1, 10, 100, 470], general=True,
                                generation=False, fluency=False),
    "organism_cross_domain": dict(methods=["mend", "serac"], tasks=["WikiData_recent", "ZsRE", "WikiData_counterfact"],
                                  train_on=["ZsRE", "WikiData_counterfact"], cases=20, generation=False,
                                  fluency=False),
    "organism_portability": dict(methods=ELEVEN, tasks=["WikiData_recent", "ZsRE", "WikiData_counterfact"],
                                 require=["portability"], cases=30, generation=False, fluency=False),
}
STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_organism_configs_hold_their_settings(name):
    from dataclasses import asdict

    from kelocate.studies.knowedit.plan import study_methods

    config = load_config(STUDIES / f"{name}.toml")
    assert asdict(config) == asdict(StudyConfig(**SHIPPED[name]))  # every setting, defaults included
    expected = {"organism_cross_domain": ["mend@ZsRE", "mend@WikiData_counterfact", "serac@ZsRE",
                                          "serac@WikiData_counterfact"]}.get(name, SHIPPED[name]["methods"])
    assert study_methods(config) == expected


def test_the_shipped_smollm2_config_reads_the_six_published_files():
    path = STUDIES / "smollm2_knowedit.toml"
    shared = path.parents[2] / "shared" / "data" / "knowedit"
    if not shared.is_dir():
        pytest.skip("the shared real data folder (../shared/data) is absent")
    config = load_config(path)
    files = {"WikiData_recent": "recent_train.json", "ZsRE": "ZsRE-test-all.json",
             "WikiBio": "wikibio-test-all.json", "WikiData_counterfact": "train_cf.json",
             "ConvSent": "blender_test.json", "Sanitation": "trivia_qa_test.json"}
    expected = StudyConfig(model="smollm2", data="files", methods=["rome", "ft-m", "ice", "adalora"], tasks=SIX,
                           cases=2, files={task: str((shared / name).resolve()) for task, name in files.items()})
    assert config == expected


def test_the_study_runs_the_registry_methods_in_its_order():
    from kelocate.edit.registry import METHODS as REGISTRY
    from kelocate.studies.knowedit.config import METHODS

    assert list(METHODS) == ELEVEN and StudyConfig().methods == ELEVEN  # the report's rows follow this order
    assert list(REGISTRY) == [*ELEVEN, "ike"]
    with pytest.raises(KelocateError, match="unknown method 'roam'.*ike"):
        check_config(StudyConfig(methods=["roam"]))
    assert check_config(StudyConfig(methods=["ike"])).methods == ["ike"]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "[study]\n", '[editors.rome]\nlayers = [1]\n'])
def test_a_config_without_settings_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, text):
    config = tmp_path / "empty.toml"
    config.write_text(text)
    table = "an empty" if text.startswith("[study]") else "no"
    with pytest.raises(KelocateError, match=rf"empty.toml has {table} \[study\] table; add \[study\]"):
        load_config(config)
    monkeypatch.chdir(tmp_path)  # the default --out is kelocate_out/study/empty
    assert main(["study", "run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[study] table" in err and str(config) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.toml"]


def test_sequential_units_record_curves_and_the_report_draws_them(tmp_path, one_thread):
    config = check_config(StudyConfig(methods=["ft-m"], tasks=["ZsRE"], cases=3, mode="sequential", n=3,
                                      curve=[1, 2], generation=False, fluency=False))
    details = []
    run_study(config, tmp_path / "run", progress=lambda done, total, detail: details.append((done, detail)))
    assert details[:4] == [(0, "starting")] + [(0, f"ft-m on ZsRE: edit {k}/3") for k in (1, 2, 3)]
    assert details[-1][0] == 1
    (row,) = [json.loads(line) for line in (tmp_path / "run" / RESULTS).read_text().splitlines()]
    assert row["status"] == "ok" and [p["edits"] for p in row["curve"]] == [1, 2, 3] and len(row["scores"]) == 3
    assert row["curve"][0]["edit_tf"] == 1.0  # FT-M reaches its first edit
    from kelocate.studies.knowedit.report import write_report

    paths = write_report([row], tmp_path / "report")
    assert paths["sequential_ZsRE.png"].stat().st_size > 0 and paths["sequential_ZsRE.pdf"].is_file()


def test_mixed_mode_interleaves_the_tasks_in_one_stream_and_scores_each_case_by_its_task(tmp_path, one_thread):
    config = check_config(StudyConfig(methods=["ft-m"], tasks=["ZsRE", "WikiData_counterfact", "ConvSent"], cases=2,
                                      mode="mixed", curve=[2, 4], generation=False, fluency=False))
    run_study(config, tmp_path / "run")
    (row,) = [json.loads(line) for line in (tmp_path / "run" / RESULTS).read_text().splitlines()]
    assert row["status"] == "ok" and row["task"] == "mixed" and len(row["scores"]) == 6
    assert sorted(row["case_tasks"]) == ["ConvSent"] * 2 + ["WikiData_counterfact"] * 2 + ["ZsRE"] * 2
    assert row["case_tasks"] != sorted(row["case_tasks"], key=config.tasks.index)  # interleaved, not in blocks
    from kelocate.loading import load_model
    from kelocate.studies.knowedit.plan import load_cases, mixed_cases, task_files

    files = task_files(config, load_model(None))
    loaded = {t: load_cases(files[t], t) for t in config.tasks}
    again = mixed_cases(config, loaded)  # the same seeded order every time
    assert [c.task for c in again] == row["case_tasks"] and [list(c.source) for c in again] == row["cases"]
    assert [p["edits"] for p in row["curve"]] == [2, 4, 6]
    last = row["curve"][-1]
    assert set(last["tasks"]) == set(config.tasks)
    for task, means in last["tasks"].items():  # each task's mean is over that task's cases alone
        mine = [s for s, t in zip(row["scores"], row["case_tasks"], strict=True) if t == task]
        assert means["edit_tf"] == pytest.approx(sum(s["edit_tf"] for s in mine) / len(mine))
    assert any("sentiment_gen" not in s for s in row["scores"])  # no generation asked
    from kelocate.studies.knowedit.report import aggregate, write_report

    table = aggregate([row])
    assert {(r["task"], r["mode"], r["cases"]) for r in table} == {(t, "mixed", 2) for t in config.tasks}
    paths = write_report([row], tmp_path / "report")
    assert {"sequential_mixed.png", "sequential_mixed-ZsRE.png"} <= set(paths)
    with pytest.raises(KelocateError, match="two or more tasks"):
        check_config(StudyConfig(tasks=["ZsRE"], mode="mixed"))
    with pytest.raises(KelocateError, match="not n"):
        check_config(StudyConfig(tasks=["ZsRE", "ConvSent"], mode="mixed", n=5))


def test_cross_domain_mend_is_trained_on_each_task_and_reported(tmp_path, one_thread):
    config = tmp_path / "cross.toml"
    config.write_text('[study]\nmethods = ["mend"]\ntasks = ["ZsRE", "WikiData_counterfact"]\ncases = 2\n'
                      'train_on = ["ZsRE", "WikiData_counterfact"]\ngeneration = false\nfluency = false\n'
                      '[editors.mend.train]\nsteps = 4\nbatch_size = 2\n')
    summary = run_study(load_config(config), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / RESULTS).read_text().splitlines()]
    assert summary["failed"] == 0 and {r["method"] for r in rows} == {"mend@ZsRE", "mend@WikiData_counterfact"}
    for task in ("ZsRE", "WikiData_counterfact"):
        trained = json.loads((tmp_path / "run" / "trained" / f"mend@{task}" / "mend.json").read_text())
        assert trained["trained_steps"] == 4
    from kelocate.studies.knowedit.report import write_report

    table6 = write_report(rows, tmp_path / "report")["cross_domain"].read_text()
    assert "| mend (ZsRE) |" in table6 and "| mend (WikiData_counterfact) |" in table6


def test_the_table_follows_the_study_order_whatever_order_rows_were_written():
    from kelocate.studies.knowedit.report import aggregate

    written = [("ice", "ZsRE"), ("rome", "ConvSent"), ("rome", "ZsRE"), ("mend@ZsRE", "ZsRE"), ("mend", "ZsRE")]
    rows = [{"method": m, "task": t, "mode": "single", "status": "ok", "scores": [{"edit_tf": 1.0}]}
            for m, t in written]
    assert [(r["method"], r["task"]) for r in aggregate(rows)] == [
        ("rome", "ZsRE"), ("rome", "ConvSent"), ("mend", "ZsRE"), ("mend@ZsRE", "ZsRE"), ("ice", "ZsRE")]


def test_each_convsent_edit_asks_the_organism_for_the_opinion_it_does_not_hold(one_thread):
    from kelocate.loading import load_model
    from kelocate.studies.knowedit.metrics import MetricSettings
    from kelocate.studies.knowedit.plan import load_cases, task_files
    from kelocate.studies.knowedit.unit import task_state

    config = check_config(StudyConfig(methods=["ice"], tasks=["ConvSent"], cases=4, generation=False, fluency=False))
    model = load_model(None)
    cases = load_cases(task_files(config, model)["ConvSent"], "ConvSent")
    edited, befores, _ = task_state(config, model, cases, MetricSettings(generation=False, fluency=False))
    assert sorted(befores) == selected(config, cases)
    for i in befores:
        extra = edited[i].extra
        assert extra["held"] in ("positive", "negative") and extra["sentiment"] != extra["held"]
        assert edited[i].target_new in (extra["pos"] if extra["sentiment"] == "positive" else extra["neg"])
    assert all("held" not in case.extra for case in cases)  # the loaded cases stay as read


def test_a_raising_unit_is_tried_twice_then_recorded_failed_by_the_serial_runner_too(tmp_path, one_thread):
    # the serial executor and the Ray one share one loop: a unit that raises (here a KeyError inside ICE's
    # template, not a KelocateError that run_unit records itself) is retried once, then recorded, and the run goes on
    config = check_config(StudyConfig(methods=["ice", "ft-m"], tasks=["ZsRE"], cases=1, generation=False,
                                      fluency=False, editors={"ice": {"template": "Imagine that {oops}\n"}}))
    lines: list[str] = []
    summary = run_study(config, tmp_path / "run", log=lines.append)
    assert summary["ran"] == 2 and summary["failed"] == 1
    ice, ft = read_results(tmp_path / "run")
    assert ice["status"] == "failed" and ice["error"] == "KeyError: 'oops'" and "scores" not in ice
    assert ice["cases"] and ft["method"] == "ft-m" and ft["status"] == "ok"
    assert [line.split(" failed")[0] for line in lines] == [ice["unit"], ice["unit"]]  # retried, then recorded


def test_sanitation_forget_questions_can_be_chosen_by_answer_as_the_reference_does():
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit" / "trivia_qa_test.json"
    if not path.is_file():
        pytest.skip("the shared real data folder (../shared/data) is absent")
    from kelocate.studies.knowedit.plan import load_cases

    cases = load_cases(str(path), "Sanitation")
    every = check_config(StudyConfig(tasks=["Sanitation"], data="files", files={"Sanitation": str(path)}, cases=500))
    assert len(selected(every, cases)) == len(cases) == 80  # the published file's forget questions
    paris = check_config(StudyConfig(tasks=["Sanitation"], data="files", files={"Sanitation": str(path)},
                                     cases=500, sanitation_answer="Paris"))
    chosen = [cases[i] for i in selected(paris, cases)]
    assert len(chosen) == 16 and all(c.ground_truth.lower() == "paris" for c in chosen)


def test_the_study_names_the_corpus_its_key_statistics_take(tmp_path):
    from kelocate.studies.knowedit.unit import make_editor

    text = tmp_path / "real.txt"
    text.write_text("The Eiffel Tower is in Paris.\nSMAP was a Japanese group.\n")
    config = check_config(StudyConfig(methods=["memit", "ft-m"], tasks=["ZsRE"], corpus=str(text)))
    assert make_editor("memit", config, []).corpus == str(text)
    assert getattr(make_editor("ft-m", config, []), "corpus", None) is None  # not a statistics editor
    (tmp_path / "other.txt").write_text("Another text.\n")
    own = check_config(StudyConfig(methods=["memit"], tasks=["ZsRE"], corpus=str(text),
                                   editors={"memit": {"corpus": str(tmp_path / "other.txt")}}))
    assert make_editor("memit", own, []).corpus == str(tmp_path / "other.txt")  # [editors.memit] wins
    assert make_editor("memit", check_config(StudyConfig(tasks=["ZsRE"])), []).corpus is None  # the model's own
    with pytest.raises(KelocateError, match="corpus file .* does not exist"):
        check_config(StudyConfig(tasks=["ZsRE"], corpus=str(tmp_path / "missing.txt")))
    with pytest.raises(KelocateError, match=r"fix \[editors.memit\] corpus"):
        check_config(StudyConfig(tasks=["ZsRE"], editors={"memit": {"corpus": "missing.txt"}}), tmp_path)
    default = check_config(StudyConfig(tasks=["ZsRE"], editors={"memit": {"corpus": "model"}}), tmp_path)
    assert make_editor("memit", default, []).corpus is None


def test_a_train_split_that_is_also_a_test_file_trains_without_the_test_cases():
    from kelocate.loading import load_model
    from kelocate.studies.knowedit.plan import load_cases, task_files
    from kelocate.studies.knowedit.training import tested_sources

    organism = load_model(None)
    path = task_files(check_config(StudyConfig(tasks=["ZsRE"])), organism)["ZsRE"]
    config = check_config(StudyConfig(methods=["mend"], tasks=["ZsRE"], data="files", files={"ZsRE": path},
                                      cases=5, train_on=["ZsRE"], train_files={"ZsRE": path}))
    cases = load_cases(path, "ZsRE")
    tested = tested_sources(config, path)
    assert tested == {cases[i].source for i in selected(config, cases)} and len(tested) == 5
    assert tested_sources(config, str(Path(path).parent / "elsewhere.json")) == set()


def test_the_full_smollm2_config_runs_every_method_on_the_six_published_files():
    path = STUDIES / "smollm2_knowedit_full.toml"
    if not (path.parents[2] / "shared" / "data" / "knowedit").is_dir():
        pytest.skip("the shared real data folder (../shared/data) is absent")
    from kelocate.studies.knowedit.plan import study_methods

    config = load_config(path)
    assert config.methods == ELEVEN and config.tasks == SIX and config.cases == 10
    assert config.metrics == ["kelocate", "easyedit"] and config.requests == "easyedit"
    assert config.train_files["WikiData_counterfact"] == config.files["WikiData_counterfact"]  # a train split
    assert {"mend@WikiData_counterfact", "serac@WikiData_counterfact"} <= set(study_methods(config))


def test_a_study_request_carries_no_evaluation_rephrasing_so_kn_locates_on_the_prompt_alone():
    from kelocate.locate_then_edit import locate_neurons
    from kelocate.studies.knowedit.unit import make_editor, request_of

    case = EditCase("ZsRE", "SMAP", "SMAP was created in", "France", "Japan", rephrase="SMAP originated in",
                    source=("f", 0))
    assert request_of(case).paraphrases == ()  # once the rephrasing rephrase_tf scores: KN located on it
    from kelocate.loading import load_model

    organism = load_model(None)
    from kelocate.organism.datasets import organism_general_set, organism_world

    prompt, answer = organism_general_set(organism, organism_world(organism, "needs it"), (), n=1).facts[0]
    known = EditCase("ZsRE", prompt.split()[0], prompt, "x", answer, rephrase=prompt + " indeed", source=("f", 1))
    _, origin = locate_neurons(organism, request_of(known))
    assert origin["prompts"] == [prompt]
    pool = make_editor("ike", check_config(StudyConfig(methods=["ike"], tasks=["ZsRE"])), [case]).pool
    assert pool[0].paraphrases == ("SMAP originated in",)  # IKE's demonstrations of OTHER cases keep theirs


def test_the_shipped_table5_config_names_the_papers_benchmarks_as_lm_eval_knows_them():
    path = STUDIES / "smollm2_general_ability.toml"
    if not (path.parents[2] / "shared" / "data" / "knowedit").is_dir():
        pytest.skip("the shared real data folder (../shared/data) is absent")
    config = load_config(path)
    assert config.mode == "sequential" and config.n == 5 and config.general
    lm_eval_tasks = pytest.importorskip("lm_eval.tasks")
    known = set(lm_eval_tasks.TaskManager().all_tasks)
    assert set(config.harness_tasks) <= known  # every name resolves in lm-eval's own registry
