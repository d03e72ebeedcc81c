"""`vidkd compare CONFIG ... --seeds --out DIR`: training over seeds, resume, results.md/csv, plots."""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path

import pytest
import yaml

from vidkd.cli import main
from vidkd.config import load_config
from vidkd.engine import compare
from vidkd.engine.train import MetricsLog, evaluate_student, memory_cache
from vidkd.errors import VidkdError
from vidkd.report import mean_std, results_table

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_mean_std_by_hand():
    values = [47.92, 51.39, 56.25]
    mean = (47.92 + 51.39 + 56.25) / 3
    std = math.sqrt(((47.92 - mean) ** 2 + (51.39 - mean) ** 2 + (56.25 - mean) ** 2) / 2)
    assert mean_std(values) == pytest.approx((mean, std))
    assert std == pytest.approx(statistics.stdev(values))
    assert mean_std([61.5]) == (61.5, 0.0)


def test_results_table_shows_each_runs_initial_lr():
    """Rows trained at different lrs (the demo's skd_srl runs at half the baseline's) say so."""
    def result(name: str, optim: dict | None) -> dict:
        test = {"protocol": "5 clips x 1 centre crop", "video_top1": 50.0, "video_top5": 90.0,
                "clip_top1": 45.0}
        r = {"name": name, "method": name, "model": "m", "epochs": 16, "dataset": "synthetic",
             "test": test}
        if optim is not None:  # None: a results.json written before runs recorded their config
            r["config"] = {"optim": optim}
        return r

    lines = results_table([result("a", {"lr": 0.01}), result("b", {"lr": 0.005}),
                           result("no-lr", {}), result("old", None)]).splitlines()
    header = lines[0].split()
    lr_at = header.index("lr")
    assert header[lr_at - 1] == "epochs"
    assert [line.split()[lr_at] for line in lines[2:6]] == ["0.01", "0.005", "-", "-"]


def test_parse_seeds():
    assert compare.parse_seeds("0,1,2") == [0, 1, 2]
    assert compare.parse_seeds("3-5, 9") == [3, 4, 5, 9]
    assert compare.parse_seeds("4294967296") == [2**32]  # numpy's 32 bits are the engine's worry
    assert compare.parse_seeds("0-99") == list(range(100))
    for bad in ("", "a", "1,1", "-1", "10000000000001", "99999999999999999999"):
        with pytest.raises(VidkdError, match="--seeds"):
            compare.parse_seeds(bad)
    # a range is checked before it is built: 0-99999999999 was a list of 10^11 ints
    for bad in ("0-100", "0-10000000000000"):
        with pytest.raises(VidkdError, match="at most 100 seeds"):
            compare.parse_seeds(bad)
    with pytest.raises(VidkdError, match="the range 3-1 runs backwards; write 1-3"):
        compare.parse_seeds("3-1")


def test_empty_seeds_option_is_refused_not_read_as_seed_zero(tmp_path, capsys):
    from vidkd.cli import main

    assert main(["compare", "configs/demo/baseline.yaml", "--seeds", "", "--out", str(tmp_path)]) == 2
    assert "--seeds '': give at least one seed" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "config, teacher",
    [("configs/demo/kd.yaml", "configs/demo/teacher.yaml"),
     ("configs/ucf101-mini/kd.yaml", "configs/ucf101-mini/teacher_r34.yaml"),
     ("configs/ucf101/r18_kd.yaml", "configs/ucf101/r50_baseline.yaml"),
     ("configs/demo/generative_kd.yaml", "configs/demo/generative_kd_teacher.yaml"),
     ("configs/ucf101/r18_generative_kd.yaml", "configs/ucf101/r50_generative_kd_teacher.yaml")],
)
def test_teacher_config_named_in_first_comment(config, teacher):
    found = compare.teacher_config_named(REPO / config)
    assert found is not None and found.resolve() == (REPO / teacher).resolve()


def test_teacher_trained_first_once_or_given(tmp_path, synthetic_cache, tiny_config):
    teacher = tiny_config(synthetic_cache, tmp_path, "tiny-teacher", model={"width_multiplier": 0.25})
    write_config(tmp_path / "teacher.yaml", teacher)
    kd = tiny_config(synthetic_cache, tmp_path, "tiny-kd",
                     method={"name": "kd", "teacher": {"checkpoint": str(tmp_path / "nope.safetensors")}})
    kd_path = tmp_path / "kd.yaml"
    kd_path.write_text("# Tiny KD (train teacher.yaml first).\n" + yaml.safe_dump(kd))
    kd2_path = tmp_path / "kd2.yaml"
    kd2_path.write_text("# Tiny KD again (train teacher.yaml first).\n"
                        + yaml.safe_dump({**kd, "name": "tiny-kd2"}))
    out = tmp_path / "cmp"
    plan = compare.plan_compare([kd_path, kd2_path], [0, 1], out)
    assert [run.cfg.name for run in plan.runs] == [
        "tiny-teacher", "tiny-kd-s0", "tiny-kd-s1", "tiny-kd2-s0", "tiny-kd2-s1"]
    wanted = out / "runs" / "tiny-teacher" / "best_student.safetensors"
    assert all(run.cfg.method.teacher.checkpoint == str(wanted) for row in plan.rows for run in row.runs)

    calls = []
    compare.run_plan(plan, train_fn=lambda cfg, **kw: calls.append(cfg.name), progress=False)
    assert calls[0] == "tiny-teacher" and calls.count("tiny-teacher") == 1

    given = tmp_path / "given.safetensors"
    given.write_bytes(b"stand-in")
    plan = compare.plan_compare([kd_path], [0], out, teacher=given)
    assert plan.teachers == [] and plan.rows[0].runs[0].cfg.method.teacher.checkpoint == str(given)

    kd_path.write_text(yaml.safe_dump(kd))  # no comment naming the teacher
    with pytest.raises(VidkdError, match="--teacher"):
        compare.plan_compare([kd_path], [0], out)


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_compare_two_configs_two_seeds_interrupted_then_resumed(
    tmp_path, synthetic_cache, tiny_config, monkeypatch, capsys, caplog
):
    a = write_config(tmp_path / "a.yaml", tiny_config(synthetic_cache, tmp_path / "unused", "a"))
    b = write_config(tmp_path / "b.yaml", tiny_config(
        synthetic_cache, tmp_path / "unused", "b", paper={"top1": 69.8},
        optim={"lr": 0.05, "schedule": "multistep", "milestones": [1]}))
    out = tmp_path / "cmp"
    runs = out / "runs"
    argv = ["compare", a, b, "--seeds", "0,1", "--out", str(out), "-q"]

    # 1. killed in the second epoch of b-s0 (after its first checkpoint)
    real_write = MetricsLog.write

    def write_then_die(self, record, step, prefix):
        if "b-s0" in str(self.path) and record.get("kind") == "epoch" and record["epoch"] == 2:
            raise KeyboardInterrupt
        return real_write(self, record, step, prefix)

    monkeypatch.setattr(MetricsLog, "write", write_then_die)
    caplog.set_level(logging.INFO, logger="vidkd")
    assert main(argv) == 130
    capsys.readouterr()
    assert "compare: row 2/2 b, seed 0: run 3 of 4 (2 done)" in caplog.text
    assert (runs / "a-s0" / "results.json").is_file() and (runs / "a-s1" / "results.json").is_file()
    assert not (runs / "b-s0" / "results.json").exists()
    assert (runs / "b-s0" / "checkpoints" / "last").is_file()
    finished = {name: (runs / name / "results.json").stat().st_mtime_ns for name in ("a-s0", "a-s1")}

    # 2. run again: only b-s0 (resumed) and b-s1 are trained
    monkeypatch.setattr(MetricsLog, "write", real_write)
    import vidkd.engine.train as train_module

    real_train = train_module.train
    calls = []

    def counting_train(cfg, **kwargs):
        calls.append((cfg.name, kwargs.get("resume", False)))
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", counting_train)
    caplog.clear()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert calls == [("b-s0", True), ("b-s1", False)]
    assert "resuming from its last checkpoint" in caplog.text
    assert {n: (runs / n / "results.json").stat().st_mtime_ns for n in finished} == finished
    history = [json.loads(line) for line in (runs / "b-s0" / "history.jsonl").read_text().splitlines()]
    assert [event["event"] for event in history] == ["start", "resume"]
    epochs = compare.epoch_records(runs / "b-s0")
    assert [r["epoch"] for r in epochs] == [1, 2]

    # 3. every file, and the numbers
    for name in ("results.md", "results.csv", "curves.png", "video_top1.png", "confusion-a.png",
                 "confusion-b.png"):
        assert (out / name).is_file(), name
    for name in ("curves.png", "video_top1.png", "confusion-a.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / name).stat().st_size > 5000

    with (out / "results.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert [(line["row"], line["seed"], line["run"]) for line in lines] == [
        ("a", "0", "a-s0"), ("a", "1", "a-s1"), ("b", "0", "b-s0"), ("b", "1", "b-s1")]
    for line in lines:
        results = _results(Path(line["run_dir"]))
        for key in ("video_top1", "video_top5", "clip_top1", "clip_top5"):
            assert float(line[key]) == results["test"][key]
        assert int(line["best_epoch"]) == results["best_epoch"]
        assert float(line["lr"]) == results["config"]["optim"]["lr"]
        assert line["protocol"] == "2 clips x 1 centre crop"
    assert [line["paper_top1"] for line in lines] == ["", "", "69.8", "69.8"]

    md = (out / "results.md").read_text()
    table = md.split("## Schedule")[0]  # the results table, before the schedule table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith(("| a ", "| b "))}
    value = {(name, s): _results(runs / f"{name}-s{s}")["test"] for name in "ab" for s in (0, 1)}
    for name in "ab":
        for key in ("video_top1", "clip_top1"):
            x0, x1 = value[(name, 0)][key], value[(name, 1)][key]
            mean, std = (x0 + x1) / 2, abs(x0 - x1) / math.sqrt(2)  # sample std of two values
            assert f"{mean:.2f} ± {std:.2f} ({x0:.2f}, {x1:.2f})" in rows[name], (key, rows[name])
    d0 = value[("b", 0)]["video_top1"] - value[("a", 0)]["video_top1"]
    d1 = value[("b", 1)]["video_top1"] - value[("a", 1)]["video_top1"]
    assert f"{(d0 + d1) / 2:+.2f} ± {abs(d0 - d1) / math.sqrt(2):.2f} ({d0:+.2f}, {d1:+.2f})" in rows["b"]
    assert rows["b"].rstrip().endswith("| 69.8 |") and rows["a"].rstrip().endswith("| - |")
    assert "2 clips x 1 centre crop" in md and "seeds 0, 1" in md and "## Schedule" in md
    assert "top-5 means top-3" in md
    schedule = {line.split("|")[1].strip(): line for line in md.split("## Schedule")[1].splitlines()
                if line.startswith(("| a ", "| b "))}
    assert "multistep: lr 0.05 x0.1 after epochs 1" in schedule["b"]  # the lr rule each row ran
    best_epochs = ", ".join(f"epoch {_results(runs / f'b-s{s}')['best_epoch']}" for s in (0, 1))
    assert f"| {best_epochs} |" in schedule["b"]  # which student each seed's numbers are of
    assert "plateau" not in schedule["b"] and "plateau: lr 0.01 x0.1 after 10" in schedule["a"]
    assert "video top-1" in printed and "results.csv" in printed

    # 4. a third run trains nothing; the old form still works
    calls.clear()
    assert main(argv) == 0
    assert calls == []
    assert main([*argv, "--set", "train.epochs=3"]) == 2  # a finished run is not reused for another budget
    assert "train.epochs: 2 -> 3" in capsys.readouterr().err and calls == []
    # nor for another test protocol: its table would mix clip counts
    assert main([*argv, "--set", "eval.test_clips=3"]) == 2
    assert "test clips: 2 -> 3" in capsys.readouterr().err and calls == []
    assert main([*argv, "--set", "data.test_clips=2"]) == 0 and calls == []  # same protocol
    assert main([*argv, "--set", "eval.student=last"]) == 2  # its numbers are another student's
    assert "eval.student: 'best' -> 'last'" in capsys.readouterr().err and calls == []
    assert main(["compare", str(runs / "a-s0"), str(runs / "b-s1")]) == 0
    assert "a-s0" in capsys.readouterr().out

    # 5. a run finished by an older vidkd, whose config lacks a field added since, is reused
    # when the config asks for that field's default, and refused when it asks for another value
    stored = runs / "a-s0" / "results.json"
    results = json.loads(stored.read_text())
    del results["config"]["method"]["augment"]["blur"]
    del results["schedule"]  # nor did it record its lr rule: the report falls back to the plateau
    stored.write_text(json.dumps(results))
    other = runs / "b-s0" / "results.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "schedule": None}))  # edited
    assert main(argv) == 0 and calls == []
    md = (out / "results.md").read_text().split("## Schedule")[1]
    assert "plateau: lr 0.01 x0.1 after 10 validations" in md
    capsys.readouterr()
    assert main([*argv, "--set", "method.augment.blur=false"]) == 2 and calls == []
    assert "method.augment.blur: None -> False" in capsys.readouterr().err


def test_confusion_matrix_agrees_with_video_top1(tmp_path, synthetic_cache, tiny_config):
    from vidkd.engine.train import train

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        synthetic_cache, tmp_path / "runs", "c", train={"epochs": 1})))
    train(cfg, progress=False)
    result, description = evaluate_student(cfg, tmp_path / "runs" / "c" / "best_student.safetensors",
                                           progress=False)
    matrix = result.confusion
    assert len(matrix) == len(description["classes"]) == 3
    assert sum(map(sum, matrix)) == result.num_videos == 6
    per_class = [sum(line) for line in matrix]
    assert per_class == [2, 2, 2]  # test_per_class
    assert 100 * sum(matrix[i][i] for i in range(3)) / 6 == pytest.approx(result.video_top1)


@pytest.mark.parametrize("case", ["mixed", "no_out", "unwritable_out", "seeds_with_runs", "set_name"])
def test_compare_bad_input_is_one_line(tmp_path, synthetic_cache, tiny_config, capsys, case):
    config = write_config(tmp_path / "a.yaml", tiny_config(synthetic_cache, tmp_path, "a"))
    (tmp_path / "run").mkdir()
    (tmp_path / "a_file").write_text("x")
    argv = {
        "mixed": ["compare", config, str(tmp_path / "run"), "--out", str(tmp_path / "o")],
        "no_out": ["compare", config, "--seeds", "0"],
        "unwritable_out": ["compare", config, "--out", str(tmp_path / "a_file" / "o")],
        "seeds_with_runs": ["compare", str(tmp_path / "run"), "--seeds", "0"],
        "set_name": ["compare", config, "--out", str(tmp_path / "o"), "--set", "name=x"],
    }[case]
    expect = {"mixed": "not both", "no_out": "--out", "unwritable_out": "--out",
              "seeds_with_runs": "--seeds", "set_name": "name"}[case]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("vidkd: error:")]
    assert len(lines) == 1 and expect in lines[0], err
    assert not (tmp_path / "o" / "runs").exists()


@pytest.mark.timeout(600)
def test_runs_of_one_compare_decode_the_dataset_once(tmp_path, synthetic_cache, tiny_config,
                                                     monkeypatch):
    """Under ``data.cache: memory`` each run used to decode every video again; the runs of one
    compare now share the decoded frames, and a run at another short side decodes its own."""
    from vidkd.data.cache import MemoryCache

    decoded: list[tuple[str, int]] = []
    real_decode = MemoryCache._decode

    def counting_decode(self, path):
        decoded.append((path, self.short_side))
        return real_decode(self, path)

    monkeypatch.setattr(MemoryCache, "_decode", counting_decode)
    values = tiny_config(synthetic_cache, tmp_path, "tiny-cached", train={"epochs": 1})
    values["data"]["cache"] = "memory"
    config = write_config(tmp_path / "cached.yaml", values)
    assert main(["compare", config, "--seeds", "0,1", "--out", str(tmp_path / "cmp"), "-q"]) == 0
    paths = [path for path, _ in decoded]
    assert len(paths) == len(set(paths)) > 0  # each video once, for both seeds
    # both runs saw the same videos: their test split is the whole test list
    runs = tmp_path / "cmp" / "runs"
    assert _results(runs / "tiny-cached-s0")["test"]["num_videos"] == _results(
        runs / "tiny-cached-s1")["test"]["num_videos"]

    shared: dict = {}
    cfg = load_config(config)
    monkeypatch.setattr(MemoryCache, "fill", lambda self, paths, *a, **k: None)
    first = memory_cache(cfg, ["a", "b"], shared)
    assert memory_cache(cfg, ["b", "a"], shared) is first  # same videos, any order
    other = load_config(config, ["data.short_side=24", "data.crop_size=24"])
    assert memory_cache(other, ["a", "b"], shared) is not first and len(shared) == 1

    def over_budget(self, paths, *args, **kwargs):
        raise VidkdError("over the budget")

    monkeypatch.setattr(MemoryCache, "fill", over_budget)  # a failed fill leaves nothing behind
    with pytest.raises(VidkdError):
        memory_cache(cfg, ["c"], shared)
    assert shared == {}



def test_unrelated_files_where_a_run_goes_stop_the_compare_untouched(tmp_path, synthetic_cache,
                                                                     tiny_config):
    """A folder of someone else's files where seed 1's run would go: refused before any run
    trains, and nothing there is touched (not even a lock file taken over)."""
    path = tmp_path / "tiny.yaml"
    write_config(path, tiny_config(synthetic_cache, tmp_path))
    out = tmp_path / "cmp"
    plan = compare.plan_compare([path], [0, 1], out)
    theirs = plan.runs[1].run_dir
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    (theirs / ".lock").write_text("also mine")
    calls = []
    with pytest.raises(VidkdError, match="holds files that are not a vidkd run; nothing was touched"):
        compare.run_plan(plan, train_fn=lambda cfg, **kw: calls.append(cfg.name), progress=False)
    assert calls == []
    assert sorted(p.name for p in theirs.iterdir()) == [".lock", "notes.txt"]
    assert (theirs / ".lock").read_text() == "also mine"


def test_paired_differences_pair_by_seed_and_best_is_the_highest():
    """Hand-made rows: the row ran seeds 2 and 0 (in that order) of the baseline's 0, 1, 2."""
    from pathlib import Path

    from vidkd.report import RowResults, mean_std, paired_differences

    def row(seeds, top1):
        return RowResults("r", "r.yaml", seeds, [{"test": {"video_top1": v}} for v in top1],
                          [Path(f"s{s}") for s in seeds])

    baseline, other = row([0, 1, 2], [50.0, 60.0, 70.0]), row([2, 0], [72.0, 49.0])
    differences = paired_differences(other, baseline)
    assert differences == [2.0, -1.0]  # 72 - 70 (seed 2), 49 - 50 (seed 0)
    mean, std = mean_std(differences)
    assert mean == 0.5 and std == pytest.approx(4.5 ** 0.5)  # ((1.5^2 + 1.5^2) / 1) ** 0.5
    assert row([0, 1, 2], [40.0, 55.0, 55.0]).best == 1  # the highest, the first on ties


def test_reuse_reads_a_finished_runs_relative_paths_from_its_own_folder(tmp_path, monkeypatch):
    """A compare run again from another folder named the same teacher by another path and was
    told to delete a valid run; the same text from another folder named another teacher and
    the run was reused. Paths are read from the folder each run was started in."""
    from vidkd.config import ExperimentConfig, config_to_dict

    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "teacher.safetensors").write_bytes(folder.encode())

    def config(checkpoint: str) -> dict:
        values = config_to_dict(ExperimentConfig())
        values["method"]["teacher"]["checkpoint"] = checkpoint
        return values

    stored = config("teacher.safetensors")  # a run started in A
    monkeypatch.chdir(tmp_path)
    assert compare._settings_changed(stored, config("A/teacher.safetensors"), str(tmp_path / "A")) == []
    assert compare._settings_changed(stored, config(str(tmp_path / "A" / "teacher.safetensors")),
                                     str(tmp_path / "A")) == []
    monkeypatch.chdir(tmp_path / "B")
    changed = compare._settings_changed(stored, config("teacher.safetensors"), str(tmp_path / "A"))
    assert len(changed) == 1 and "method.teacher.checkpoint" in changed[0]
    assert f"(in {tmp_path / 'A'})" in changed[0] and f"(in {tmp_path / 'B'})" in changed[0]
    # a run from before the folder was recorded: the text decides, as it always did
    assert compare._settings_changed(stored, config("teacher.safetensors"), None) == []


def test_two_runs_of_one_name_keep_a_row_and_a_plot_each(tmp_path, synthetic_cache, tiny_config, capsys):
    """The same run name from two --out folders: both rows were labelled alike and the second
    confusion matrix overwrote the first."""
    from vidkd.engine.train import train

    runs = []
    for machine in ("m1", "m2"):
        train(load_config(write_config(tmp_path / f"{machine}.yaml", tiny_config(
            synthetic_cache, tmp_path / machine, "same", train={"epochs": 1}))), progress=False)
        runs.append(tmp_path / machine / "same")
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp"), "-q"]) == 0
    capsys.readouterr()
    plots = sorted(path.name for path in (tmp_path / "cmp").glob("confusion-*.png"))
    assert len(plots) == 2, plots
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert f"same ({runs[0]})" in table and f"same ({runs[1]})" in table
    # the same --out for one of them: the other row's plot goes (it no longer matched the
    # table), a PNG the compare did not list stays
    (tmp_path / "cmp" / "confusion-mine.png").write_bytes(b"user's")
    assert main(["compare", str(runs[0]), "--out", str(tmp_path / "cmp"), "-q"]) == 0
    left = sorted(path.name for path in (tmp_path / "cmp").glob("confusion-*.png"))
    assert left == ["confusion-mine.png", "confusion-same.png"], left
