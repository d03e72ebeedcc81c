"""The `vidkd` command: train, eval, compare, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from vidkd.cli import main


def write_config(path, values) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_compare(tmp_path, synthetic_cache, capsys, tiny_config):
    base = write_config(tmp_path / "b.yaml", tiny_config(synthetic_cache, tmp_path / "runs", "b"))
    code, out, _ = run_cli(capsys, "train", "-c", base, "-q", "--set", "train.epochs=1",
                           "data.test_clips=3", "--set", "eval.test_clips=2")
    assert code == 0 and "video top-1 (2 clips x 1 centre crop)" in out
    assert "(the student of epoch 1, the best on validation)" in out  # which one was scored
    from vidkd.config import load_config

    resolved = load_config(tmp_path / "runs" / "b" / "config.yaml")  # every --set value applied
    assert (resolved.train.epochs, resolved.data.test_clips, resolved.eval.test_clips) == (1, 3, 2)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "runs" / "b"), "-q",
                           "--json", str(tmp_path / "eval.json"))
    assert code == 0
    assert "video top-1 (2 clips x 1 centre crop)" in out and "clip top-1" in out
    assert "video top-3" in out  # 3 classes: top-5 is reported as top-3
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["written_by"] == "vidkd eval" and report["num_videos"] > 0
    code, _, _ = run_cli(capsys, "eval", str(tmp_path / "runs" / "b"), "-q", "--set",
                         "eval.test_clips=1", "--json", str(tmp_path / "eval.json"))
    assert code == 0  # its own earlier report is replaced
    assert "1 clip" in json.loads((tmp_path / "eval.json").read_text())["protocol"]
    code, out, _ = run_cli(capsys, "compare", str(tmp_path / "runs" / "b"))
    assert code == 0 and "video top-1" in out and "baseline" in out
    assert "augment" in out and " flip " in out  # baseline: crop + flip
    assert "top-5 means top-3 (only 3 classes)" in out
    code, out, _ = run_cli(capsys, "train", "-c", base, "-q", "--set", "train.epochs=1",
                           "name=last", "eval.student=last")
    assert code == 0 and "(the last student)" in out
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "runs" / "last"), "-q")
    assert code == 0 and out.startswith(f"{tmp_path / 'runs' / 'last' / 'student.safetensors'}: ")


@pytest.mark.parametrize(
    "case",
    ["missing_config", "unknown_key", "empty_dataset", "unwritable_output", "missing_run",
     "absent_gpu", "bad_device", "missing_teacher", "not_safetensors"],
)

def test_bad_input_is_one_clear_line(tmp_path, synthetic_cache, capsys, case, tiny_config):
    if case == "missing_config":
        argv = ["train", "-c", str(tmp_path / "nope.yaml")]
        expect = "nope.yaml"
    elif case == "unknown_key":
        values = tiny_config(synthetic_cache, tmp_path)
        values["train"]["epohcs"] = 3
        argv = ["train", "-c", write_config(tmp_path / "x.yaml", values)]
        expect = "did you mean 'train.epochs'"
    elif case == "empty_dataset":
        (tmp_path / "empty" / "classA").mkdir(parents=True)
        values = tiny_config(synthetic_cache, tmp_path)
        values["data"].update({"dataset": "folder", "root": str(tmp_path / "empty")})
        argv = ["train", "-c", write_config(tmp_path / "x.yaml", values)]
        expect = "no videos found"
    elif case == "unwritable_output":
        (tmp_path / "a_file").write_text("not a directory")
        values = tiny_config(synthetic_cache, tmp_path / "a_file" / "runs")
        argv = ["train", "-c", write_config(tmp_path / "x.yaml", values)]
        expect = "not writable"
    elif case in ("absent_gpu", "bad_device"):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        device = f"cuda:{gpus}" if case == "absent_gpu" else "gpu"  # one past the last GPU
        values = tiny_config(synthetic_cache, tmp_path)
        argv = ["train", "-c", write_config(tmp_path / "x.yaml", values),
                "--set", f"train.device={device}"]
        expect = "use --set train.device=cpu" if case == "absent_gpu" else "is not a device"
    elif case == "missing_teacher":
        values = tiny_config(synthetic_cache, tmp_path, method={
            "name": "kd", "teacher": {"checkpoint": str(tmp_path / "teacher.safetensors")}})
        argv = ["train", "-c", write_config(tmp_path / "x.yaml", values)]
        expect = "train the teacher first"
    elif case == "not_safetensors":
        (tmp_path / "student.safetensors").write_text("not a tensor file")
        values = tiny_config(synthetic_cache, tmp_path)
        argv = ["eval", "-c", write_config(tmp_path / "x.yaml", values),
                "--checkpoint", str(tmp_path / "student.safetensors")]
        expect = "is not a readable safetensors file"
    else:
        argv = ["eval", str(tmp_path / "no-run")]
        expect = "no config.yaml"
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("vidkd: error:")]
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    "command, option, bad",
    [("check", "--report", "parent_is_a_file"), ("check", "--report", "is_a_directory"),
     ("check", "--skip-list", "parent_is_a_file"), ("prepare", "--report", "parent_is_a_file"),
     ("eval", "--json", "parent_is_a_file"), ("eval", "--json", "is_a_directory")],
)
def test_unwritable_report_paths_fail_before_the_work(tmp_path, capsys, monkeypatch, command,
                                                      option, bad):
    import vidkd.data.check
    import vidkd.data.prepare
    import vidkd.engine.train

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output path was checked")

    for module, name in [(vidkd.data.check, "check_directory"),
                         (vidkd.data.prepare, "prepare_dataset"),
                         (vidkd.engine.train, "evaluate_student")]:
        monkeypatch.setattr(module, name, no_work)
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "a_dir").mkdir()
    target = str(tmp_path / "a_file" / "out.txt") if bad == "parent_is_a_file" else str(tmp_path / "a_dir")
    argv = {
        "check": ["check", str(tmp_path / "videos")],
        "prepare": ["prepare", str(tmp_path / "videos"), str(tmp_path / "dst")],
        "eval": ["eval", "-c", write_config(tmp_path / "x.yaml", {}), "--checkpoint", "s.safetensors"],
    }[command]
    if option != "--report" and command == "check":
        argv += ["--report", str(tmp_path / "ok.tsv")]
    code, out, err = run_cli(capsys, *argv, option, target, "-q")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err + out
    assert err.startswith("vidkd: error:") and option in err and target in err
    assert "pass a writable file path" in err
    assert not (tmp_path / "dst").exists()
