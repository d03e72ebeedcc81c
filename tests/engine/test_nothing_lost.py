"""Issue 9, data loss: run names, --overwrite, the run lock, resume checks, damaged
checkpoints, durable writes, a full disk and mid-epoch checkpoints.

Each "ends like an unbroken run" test compares every weight bitwise with a reference run
of the same config trained without interruption (deterministic CPU mode).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vidkd.engine.checkpoint as checkpoint_module
import vidkd.engine.train as train_module
from vidkd.config import config_from_dict, load_config
from vidkd.engine.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_student,
    save_checkpoint,
    save_student,
    verify_checkpoint,
)
from vidkd.engine.rundir import RunLock
from vidkd.engine.train import train
from vidkd.errors import VidkdError
from vidkd.models.resnet3d import resnet3d

# dropout and the full augmentation set: a resume must restore the global and augment RNGs
RNG_HEAVY = {"model": {"depth": 10, "width_multiplier": 0.125, "dropout": 0.3},
             "method": {"name": "baseline", "augment": {"full": True}}}


def run_config(tiny_config, cache: Path, out: Path, epochs: int = 3, **sections):
    values = tiny_config(cache, out, **RNG_HEAVY)
    values["train"].update({"epochs": epochs, "keep_checkpoints": 5})
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return config_from_dict(values)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "student.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, synthetic_cache) -> Path:
    """The RNG-heavy tiny run, 3 uninterrupted epochs."""
    from conftest import _tiny_config

    out = tmp_path_factory.mktemp("reference")
    train(run_config(_tiny_config, synthetic_cache, out), progress=False)
    return out / "tiny"


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, torch.Tensor]:
    """Student weights after 3 uninterrupted epochs of the RNG-heavy tiny run."""
    return weights(reference_run)


# ----------------------------------------------------------------------------- run names


@pytest.mark.parametrize("name", [".", "..", "ABSOLUTE", "sub/../..", "../escape", "", "~/x"])
def test_overwrite_never_leaves_the_run(tmp_path, synthetic_cache, tiny_config, name):
    out = tmp_path / "parent" / "out"
    out.mkdir(parents=True)
    other_run = out / "other-run"
    other_run.mkdir()
    sentinels = [tmp_path / "parent" / "keep.txt", out / "keep.txt", other_run / "keep.txt"]
    for sentinel in sentinels:
        sentinel.write_text("precious")
    if name == "ABSOLUTE":
        name = str(tmp_path / "parent")
    cfg = config_from_dict(tiny_config(synthetic_cache, out, name=name))
    with pytest.raises(VidkdError, match="run name|outside"):
        train(cfg, overwrite=True, progress=False)
    assert all(s.read_text() == "precious" for s in sentinels)


def test_name_through_a_symlink_out_of_out_dir_is_refused(tmp_path, synthetic_cache, tiny_config):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside)
    cfg = config_from_dict(tiny_config(synthetic_cache, out, name="link"))
    with pytest.raises(VidkdError, match="outside"):
        train(cfg, overwrite=True, progress=False)
    assert (outside / "keep.txt").read_text() == "precious"


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, synthetic_cache, tiny_config):
    out = tmp_path / "out"
    (out / "thesis").mkdir(parents=True)
    (out / "thesis" / "chapter1.tex").write_text("precious")
    cfg = config_from_dict(tiny_config(synthetic_cache, out, name="thesis"))
    with pytest.raises(VidkdError, match="does not hold a vidkd run"):
        train(cfg, overwrite=True, progress=False)
    assert (out / "thesis" / "chapter1.tex").read_text() == "precious"
    with pytest.raises(VidkdError, match="not a vidkd run"):  # nor is it written into
        train(cfg, progress=False)
    assert sorted(p.name for p in (out / "thesis").iterdir()) == [".lock", "chapter1.tex"]


def test_overwrite_deletes_the_earlier_run_and_says_so(tmp_path, synthetic_cache, tiny_config, caplog):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    (tmp_path / "tiny" / "checkpoints" / "epoch_0099").mkdir()  # would survive a partial delete
    with caplog.at_level(logging.INFO, logger="vidkd"):
        train(cfg, overwrite=True, progress=False)
    assert "--overwrite: deleted the earlier run" in caplog.text and "checkpoints" in caplog.text
    assert [p.name for p in list_checkpoints(tmp_path / "tiny" / "checkpoints")] == ["epoch_0001"]
    history = [json.loads(line) for line in (tmp_path / "tiny" / "history.jsonl").read_text().splitlines()]
    assert [event["event"] for event in history] == ["overwrite"]


def test_a_start_refused_for_its_data_needs_no_overwrite_the_next_time(
    tmp_path, synthetic_cache, tiny_config
):
    """A start that stopped before training left only its marker and history.jsonl: the
    corrected start takes the directory over (both starts stay in the history), while a
    directory with anything more in it still needs --overwrite."""
    values = tiny_config(synthetic_cache, tmp_path, train={"epochs": 1})
    good = config_from_dict(values)
    bad = config_from_dict({**values, "data": {**values["data"], "dataset": "folder",
                                               "root": str(tmp_path / "no_such_dataset")}})
    with pytest.raises(VidkdError, match="no_such_dataset"):
        train(bad, progress=False)
    run = tmp_path / "tiny"
    assert sorted(p.name for p in run.iterdir()) == [".lock", ".vidkd-run", "history.jsonl"]
    with pytest.raises(VidkdError, match="no checkpoint yet; start the run without --resume"):
        train(good, resume=True, progress=False)
    train(good, progress=False)
    history = [json.loads(line)["event"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert history == ["start", "start"] and (run / "student.safetensors").is_file()

    (tmp_path / "other").mkdir()
    for name in (".vidkd-run", "history.jsonl", "metrics.jsonl"):  # stopped inside epoch 1
        (tmp_path / "other" / name).write_text("")
    with pytest.raises(VidkdError, match="stopped before its first checkpoint; pass --overwrite"):
        train(config_from_dict({**values, "name": "other"}), progress=False)
    precious = tmp_path / "precious.txt"
    precious.write_text("mine\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / ".vidkd-run").write_text("")
    (tmp_path / "linked" / "history.jsonl").symlink_to(precious)  # never written through
    with pytest.raises(VidkdError, match="already holds a run"):
        train(config_from_dict({**values, "name": "linked"}), progress=False)
    assert precious.read_text() == "mine\n"


def test_resume_of_a_run_that_is_not_there_creates_nothing(tmp_path, synthetic_cache, tiny_config):
    """A mistyped name with --resume was refused only after it had made the output folder,
    the run folder, its marker and its lock."""
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path / "out", name="typo"))
    with pytest.raises(VidkdError, match=r"--resume: there is no run in .*typo; check the run's name"):
        train(cfg, resume=True, progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "out" / "typo").mkdir(parents=True)
    (tmp_path / "out" / "typo" / ".lock").write_text("")  # what a killed start may leave
    with pytest.raises(VidkdError, match="there is no run in"):
        train(cfg, resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "typo").iterdir()) == [".lock"]


# ----------------------------------------------------------------------------- run lock


def test_second_run_of_the_same_name_is_refused(tmp_path, synthetic_cache, tiny_config):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    run = tmp_path / "tiny"
    run.mkdir()
    with RunLock(run):  # another run holds the directory
        with pytest.raises(VidkdError, match=f"in use by process {os.getpid()} on host"):
            train(cfg, progress=False)
        with pytest.raises(VidkdError, match="in use"):
            train(cfg, overwrite=True, progress=False)
    assert not (run / "metrics.jsonl").exists()
    train(cfg, progress=False)  # released: the run goes ahead
    assert (run / "results.json").is_file()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, synthetic_cache, tiny_config, caplog):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    run = tmp_path / "tiny"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
    with caplog.at_level(logging.WARNING, logger="vidkd"):
        train(cfg, progress=False)
    assert "taking over the lock of process 999999 on host gone" in caplog.text
    assert (run / ".lock").read_text() == ""  # released at the end


# ----------------------------------------------------------------------------- resume checks


def test_resume_refuses_changed_optimiser_and_seed(tmp_path, synthetic_cache, tiny_config):
    first = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(first, progress=False)
    stored = (tmp_path / "tiny" / "config.yaml").read_text()
    changed = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 2}),
                               overrides=["optim.lr=0.5", "train.seed=7"])
    with pytest.raises(VidkdError) as error:
        train(changed, resume=True, progress=False)
    assert "optim.lr: 0.01 -> 0.5" in str(error.value) and "train.seed: 0 -> 7" in str(error.value)
    assert "--force" in str(error.value)
    assert (tmp_path / "tiny" / "config.yaml").read_text() == stored
    summary = train(changed, resume=True, force=True, progress=False)
    resume = [e for e in summary["history"] if e["event"] == "resume"][0]
    assert resume["forced"] is True
    assert resume["changed"]["optim.lr"] == [0.01, 0.5] and resume["changed"]["train.seed"] == [0, 7]
    assert resume["changed"]["train.epochs"] == [1, 2]


@pytest.mark.parametrize("override,field", [
    ("model.width_multiplier=0.25", "model.width_multiplier"),
    ("method.name=skd_srl", "method.name"),
    ("data.synthetic.num_classes=4", "data.synthetic.num_classes"),
])
def test_resume_refuses_model_and_data_changes_even_forced(
    tmp_path, synthetic_cache, tiny_config, override, field
):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    changed = config_from_dict(tiny_config(synthetic_cache, tmp_path), overrides=[override])
    with pytest.raises(VidkdError, match=f"changes the model or the data \\({field}"):
        train(changed, resume=True, force=True, progress=False)


def test_a_complete_last_record_without_newline_is_not_glued_to_the_next(tmp_path):
    """A finished run trained on: its log ended in a complete test record but no newline,
    and the next epoch's record was appended to the same line, unreadable."""
    log = train_module.MetricsLog(tmp_path, enabled=False)
    log.enabled = True  # the file side alone (no TensorBoard writer)
    records = ['{"kind": "epoch", "epoch": 2, "step": 8}', '{"kind": "test", "video_top1": 50.0}']
    log.path.write_text("\n".join(records))
    log.drop_after(2, None)
    assert log.path.read_text() == "\n".join(records) + "\n"


def test_an_empty_path_field_is_no_path_on_resume_from_another_folder(
    tmp_path, synthetic_cache, tiny_config, monkeypatch
):
    """`data.skip_list: ""` (unset) read as "." from two working directories: the resume
    was refused as a change of the data."""
    values = tiny_config(synthetic_cache, tmp_path / "runs", train={"epochs": 1})
    values["data"]["skip_list"] = ""
    monkeypatch.chdir(tmp_path)
    train(config_from_dict(values), progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    values["train"]["epochs"] = 2
    summary = train(config_from_dict(values), resume=True, progress=False)
    assert summary["history"][-1]["changed"] == {"train.epochs": [1, 2]}


def test_a_frskd_run_from_before_its_own_defaults_says_how_to_continue(
    tmp_path, synthetic_cache, tiny_config
):
    """A `method: {name: frskd}` run started when FRSKD took SKD-SRL's tau 10, alpha 0.1,
    beta 1: its resume is refused (the weights would change mid-run), with the lines that
    continue it as it was; they do."""
    values = tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}, method={
        "name": "frskd", "tau": 10.0, "alpha": 0.1, "beta": 1.0})
    train(config_from_dict(values), progress=False)
    now = tiny_config(synthetic_cache, tmp_path, train={"epochs": 2}, method={"name": "frskd"})
    with pytest.raises(VidkdError) as error:
        train(config_from_dict(now), resume=True, progress=False)
    message = str(error.value)
    assert "method.tau: 10.0 -> 4.0" in message and "--force" not in message
    assert "add `alpha: 0.1, beta: 1.0, tau: 10.0` under `method:`" in message
    now["method"].update(tau=10.0, alpha=0.1, beta=1.0)
    train(config_from_dict(now), resume=True, progress=False)


def test_a_forced_resume_with_another_batch_keeps_the_finished_epochs_log(
    tmp_path, synthetic_cache, tiny_config
):
    """Resumed with --force and twice the batch (2 steps an epoch instead of 4), the run
    dropped epoch 2's step records: their numbers 5 to 8 lay past 2 epochs x 2 steps, the
    resume point recomputed at the new size. Records are matched to the checkpoint by
    epoch now, and the new steps are numbered on from the checkpoint's own count."""
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path)), progress=False)
    before = _log_of(tmp_path / "tiny")
    assert [at for kind, at, _ in before if kind == "step"] == list(range(1, 9))  # 4 a epoch
    bigger = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 3, "batch_size": 8}))
    train(bigger, resume=True, force=True, progress=False)
    after = [(kind, at) for kind, at, _ in _log_of(tmp_path / "tiny")]
    assert after[:len(before)] == [(kind, at) for kind, at, _ in before]
    assert after[len(before):] == [("step", 9), ("step", 10), ("epoch", 3)]


def test_resume_takes_a_path_spelled_another_way_but_not_another_path(
    tmp_path, synthetic_cache, tiny_config, monkeypatch
):
    """The run was started with an absolute dataset folder; the resume names it relative
    to the working directory, through a link: the same folder, so it resumes (it was refused
    as "changes the data"). Another folder is still refused."""
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    (tmp_path / "alias").symlink_to(synthetic_cache)
    monkeypatch.chdir(tmp_path)
    again = tiny_config(synthetic_cache, tmp_path, train={"epochs": 2})
    again["data"]["synthetic"]["cache_dir"] = "alias"
    summary = train(config_from_dict(again), resume=True, progress=False)
    assert [e["event"] for e in summary["history"]] == ["start", "resume"]
    other = tiny_config(synthetic_cache, tmp_path, train={"epochs": 3})
    other["data"]["synthetic"]["cache_dir"] = str(tmp_path / "elsewhere")
    with pytest.raises(VidkdError, match="changes the model or the data \\(data.synthetic.cache_dir"):
        train(config_from_dict(other), resume=True, progress=False)
    # the same relative text read from another folder names another dataset: refused
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "alias").mkdir()
    monkeypatch.chdir(tmp_path / "B")
    again["train"]["epochs"] = 3
    with pytest.raises(VidkdError) as error:
        train(config_from_dict(again), resume=True, progress=False)
    assert f"'alias (in {tmp_path})' -> 'alias (in {tmp_path / 'B'})'" in str(error.value)


def test_a_run_folder_moved_to_another_name_resumes_under_it(tmp_path, synthetic_cache, tiny_config):
    """`mv runs/tiny runs/moved` then `--resume --set name=moved`: it was refused as a change
    of "the model or the data", and no command could continue the moved run."""
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1})), progress=False)
    (tmp_path / "tiny").rename(tmp_path / "moved")
    moved = config_from_dict(tiny_config(synthetic_cache, tmp_path, name="moved", train={"epochs": 2}))
    summary = train(moved, resume=True, progress=False)
    assert summary["history"][-1]["changed"] == {"name": ["tiny", "moved"], "train.epochs": [1, 2]}
    assert json.loads((tmp_path / "moved" / "results.json").read_text())["name"] == "moved"
    assert not (tmp_path / "tiny").exists()


def test_resume_allows_more_epochs_and_records_it(tmp_path, synthetic_cache, tiny_config):
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1})), progress=False)
    more = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 2}))
    summary = train(more, resume=True, progress=False)
    assert summary["history"][-1]["changed"] == {"train.epochs": [1, 2]}
    assert summary["history"][-1]["forced"] is False
    assert load_config(tmp_path / "tiny" / "config.yaml").train.epochs == 2


def _log_of(run: Path) -> list[tuple[str, int, float]]:
    """(kind, epoch or step, loss) of each record of ``run``'s metrics.jsonl; every line parses."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["epoch" if r["kind"] == "epoch" else "step"],
             r.get("train_loss", r.get("loss"))) for r in records if r["kind"] in ("epoch", "step")]


def test_resumed_log_matches_an_unbroken_runs_log(tmp_path, synthetic_cache, tiny_config):
    """A run killed after it logged past its checkpoint logged those epochs and steps twice
    once resumed, and a line cut by the kill swallowed the next record. With 4 batches an
    epoch and accumulate_steps=3 (3 batches trained an epoch), the resumed run also numbered
    its steps from 4 x epochs instead of 3 x epochs. The resumed log must equal the unbroken
    run's, record for record."""
    def config(out: Path, epochs: int):
        return config_from_dict(tiny_config(synthetic_cache, out, train={
            "epochs": epochs, "accumulate_steps": 3}))

    train(config(tmp_path / "a", 3), progress=False)
    unbroken = _log_of(tmp_path / "a" / "tiny")
    steps = [at for kind, at, _ in unbroken if kind == "step"]
    assert steps == list(range(1, 10))  # 3 trained batches an epoch, 3 epochs

    train(config(tmp_path / "b", 2), progress=False)
    run = tmp_path / "b" / "tiny"
    # the kill: epoch 2's checkpoint is gone (the run died writing it), while epoch 2's
    # records were written, and the last line was cut short
    import shutil

    shutil.rmtree(run / "checkpoints" / "epoch_0002")
    (run / "checkpoints" / "last").write_text("epoch_0001")
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "step", "epoch": 3, "st')
    train(config(tmp_path / "b", 3), resume=True, progress=False)
    resumed = _log_of(run)
    assert [(kind, at) for kind, at, _ in resumed] == [(kind, at) for kind, at, _ in unbroken]
    for (_, _, loss_a), (_, _, loss_b) in zip(unbroken, resumed, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
    # TensorBoard too: the killed run's points past the checkpoint (steps 4 to 6, epoch 2's
    # record and the first test) are hidden, so every tag reads as the unbroken run's
    board = _board_of(tmp_path / "a" / "tiny")
    assert [s for s, _ in board["epoch/train_loss"]] == [3, 6, 9]
    assert [s for s, _ in board["step/loss"]] == list(range(1, 10))
    assert_same_board(board, _board_of(run))


def _board_of(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Each TensorBoard scalar tag of ``run``: its (step, value) points as TensorBoard shows
    them (points a later writer purged are gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    board.Reload()
    return {tag: [(e.step, e.value) for e in board.Scalars(tag)] for tag in board.Tags()["scalars"]}


def assert_same_board(expected: dict, actual: dict) -> None:
    """The same tags, each with the same steps and (wall times aside) the same values."""
    assert actual.keys() == expected.keys()
    for tag, points in expected.items():
        assert [s for s, _ in actual[tag]] == [s for s, _ in points], tag
        if not tag.endswith(("_seconds", "clips_per_second")):  # wall times differ
            assert [v for _, v in actual[tag]] == pytest.approx([v for _, v in points], rel=1e-5), tag


# ----------------------------------------------------------------------------- damaged checkpoints


def crash_on_checkpoint(monkeypatch, name: str) -> None:
    """Make the write of checkpoint ``name`` die half-way (after the weights, in torch.save)."""
    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        if Path(path).parent.name == f".{name}.tmp":
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise KeyboardInterrupt("killed while writing a checkpoint")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)


def test_crash_during_checkpoint_write_resumes_exactly(
    tmp_path, synthetic_cache, tiny_config, monkeypatch, reference
):
    cfg = run_config(tiny_config, synthetic_cache, tmp_path)
    crash_on_checkpoint(monkeypatch, "epoch_0002")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    checkpoints = tmp_path / "tiny" / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["epoch_0001"]
    assert latest_checkpoint(checkpoints).name == "epoch_0001"
    train(cfg, resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "tiny"), reference)


@pytest.mark.parametrize("damage", ["truncate_weights", "empty_state", "delete_newest", "pickle"])
def test_damaged_newest_checkpoint_falls_back(
    tmp_path, synthetic_cache, tiny_config, reference, caplog, damage
):
    cfg2 = run_config(tiny_config, synthetic_cache, tmp_path, epochs=2)
    train(cfg2, progress=False)
    checkpoints = tmp_path / "tiny" / "checkpoints"
    newest = checkpoints / "epoch_0002"
    marker = tmp_path / "pwned"
    if damage == "truncate_weights":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "empty_state":
        (newest / "state.pt").write_bytes(b"")
    elif damage == "delete_newest":
        import shutil

        shutil.rmtree(newest)
    else:  # a malicious pickle in place of state.pt (sizes and checksum rewritten to match)

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        (newest / "state.pt").write_bytes(pickle.dumps(Exploit()))
        (newest / "manifest.json").unlink()
    assert latest_checkpoint(checkpoints).name == "epoch_0001"
    cfg3 = run_config(tiny_config, synthetic_cache, tmp_path, epochs=3)
    with caplog.at_level(logging.WARNING, logger="vidkd"):
        train(cfg3, resume=True, progress=False)
    if damage != "delete_newest":
        assert "checkpoint epoch_0002 skipped" in caplog.text
    assert "using checkpoint epoch_0001" in caplog.text
    assert not marker.exists()
    assert_same_weights(weights(tmp_path / "tiny"), reference)


def test_no_checkpoint_verifies_is_one_line(tmp_path):
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, 1, {"w": torch.ones(3)}, {"epoch": 0})
    (directory / "epoch_0001" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(VidkdError, match="no checkpoint in .* verifies .*epoch_0001: state.pt"):
        latest_checkpoint(directory)


def test_flipped_byte_fails_the_checksum(tmp_path):
    directory = tmp_path / "checkpoints"
    path = save_checkpoint(directory, 1, {"w": torch.ones(64)}, {"epoch": 0})
    assert verify_checkpoint(path) is None
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # still parses as safetensors: only the checksum can tell
    (path / "model.safetensors").write_bytes(bytes(data))
    assert "checksum" in verify_checkpoint(path)


# ----------------------------------------------------------------------------- durable writes


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def track_fsync(fd):
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name  # file or directory
        events.append(f"fsync {name}")
        return real_fsync(fd)

    def track_replace(src, dst):
        events.append(f"rename {Path(src).name} -> {Path(dst).name}")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "fsync", track_fsync)
    monkeypatch.setattr(checkpoint_module.os, "replace", track_replace)
    save_checkpoint(tmp_path / "checkpoints", 1, {"w": torch.ones(3)}, {"epoch": 0})
    rename = events.index("rename .epoch_0001.tmp -> epoch_0001")
    before = events[:rename]
    for synced in ("model.safetensors", "state.pt", "manifest.json", ".epoch_0001.tmp"):
        assert f"fsync {synced}" in before, synced
    assert events[rename + 1] == "fsync checkpoints"  # the rename itself is made durable
    pointer = next(i for i, e in enumerate(events) if e.startswith("rename .last.") and e.endswith(" -> last"))
    temporary = events[pointer].split()[1]  # .last.<random>.tmp, beside the pointer
    assert f"fsync {temporary}" in events[rename:pointer] and events[pointer + 1] == "fsync checkpoints"


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, 1, {"w": torch.ones(3)}, {"epoch": 0})
    big = {"w": torch.zeros(4 * 2**20)}  # 16 MiB of weights

    class Usage:
        free = 2 * 2**20

    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(VidkdError, match=r"needs about 17\.0 MiB and 2\.0 MiB are free; the previous "
                                         r"checkpoint epoch_0001 is kept"):
        save_checkpoint(directory, 2, big, {"epoch": 1})
    monkeypatch.undo()

    def enospc(*args, **kwargs):  # the disk fills up during the write itself
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", enospc)
    with pytest.raises(VidkdError, match="no space left to write checkpoint epoch_0002"):
        save_checkpoint(directory, 2, big, {"epoch": 1})
    assert sorted(p.name for p in directory.iterdir()) == ["epoch_0001", "last"]
    assert latest_checkpoint(directory).name == "epoch_0001"


# ----------------------------------------------------------------------------- mid-epoch checkpoints


def test_mid_epoch_checkpoint_resumes_exactly(
    tmp_path, synthetic_cache, tiny_config, monkeypatch, reference, reference_run
):
    """Killed after the checkpoint at step 6 (epoch 2, batch 2 of 4), once it had logged
    step 7 (to metrics.jsonl and TensorBoard), then resumed."""
    cfg = run_config(tiny_config, synthetic_cache, tmp_path, train={"checkpoint_every_steps": 3})
    real_save, real_write = train_module.save_checkpoint, train_module.MetricsLog.write
    written: list[str] = []

    def save(directory, epoch, *args, batches=None, **kwargs):
        path = real_save(directory, epoch, *args, batches=batches, **kwargs)
        written.append(path.name)
        return path

    def write_then_die(self, record, step, prefix):
        real_write(self, record, step, prefix)
        if record.get("kind") == "step" and record.get("step") == 7:
            raise KeyboardInterrupt("pre-empted")

    monkeypatch.setattr(train_module, "save_checkpoint", save)
    monkeypatch.setattr(train_module.MetricsLog, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert written == ["epoch_0000_step_00000003", "epoch_0001", "epoch_0001_step_00000002"]
    resumed_from = latest_checkpoint(tmp_path / "tiny" / "checkpoints")
    assert resumed_from.name == "epoch_0001_step_00000002"
    log = (tmp_path / "tiny" / "metrics.jsonl").read_text()
    assert '"step": 7' in log  # logged past the checkpoint
    # and a line the kill cut short
    with (tmp_path / "tiny" / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "st')
    train(cfg, resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "tiny"), reference)
    resumed, unbroken = _log_of(tmp_path / "tiny"), _log_of(reference_run)
    assert [(kind, at) for kind, at, _ in resumed] == [(kind, at) for kind, at, _ in unbroken]
    assert [at for kind, at, _ in resumed if kind == "epoch"] == [1, 2, 3]
    for (_, _, loss_a), (_, _, loss_b) in zip(unbroken, resumed, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
    # TensorBoard too: the step-7 points the killed run logged past step 6 are hidden
    assert_same_board(_board_of(reference_run), _board_of(tmp_path / "tiny"))


# ----------------------------------------------------------------------------- student files


def shipped(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict]:
    model = resnet3d(10, 3, width_multiplier=0.125)
    description = {"depth": 10, "num_classes": 3, "shortcut": "B", "no_max_pool": False,
                   "width_multiplier": 0.125}
    path = tmp_path / "student.safetensors"
    save_student(path, model, description)
    return path, load_file(str(path)), description


@pytest.mark.parametrize("damage,message", [
    ("shape", "weights do not match its own model description"),
    ("missing_key", "weights do not match its own model description"),
    ("bad_json", "metadata is not valid JSON"),
    ("depth", "model description is impossible"),
    ("no_depth", "lacks 'depth'"),
    ("truncated", "not a readable safetensors file"),
])
def test_damaged_student_file_is_one_line(tmp_path, damage, message):
    path, tensors, description = shipped(tmp_path)
    meta = json.dumps(description)
    if damage == "shape":
        tensors["fc.weight"] = torch.zeros(5, 7)
    elif damage == "missing_key":
        del tensors["fc.bias"]
    elif damage == "bad_json":
        meta = "{not json"
    elif damage == "depth":
        meta = json.dumps({**description, "depth": 11})
    elif damage == "no_depth":
        meta = json.dumps({k: v for k, v in description.items() if k != "depth"})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        save_file(tensors, str(path), metadata={"vidkd": meta})
    with pytest.raises(VidkdError, match=message) as error:
        load_student(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_fields_an_older_run_lacks_are_no_change_at_their_default():
    from vidkd.config import ExperimentConfig, config_to_dict
    from vidkd.engine.rundir import resume_changes

    defaults = config_to_dict(ExperimentConfig())
    stored = config_to_dict(ExperimentConfig())
    del stored["train"]["accumulate_steps"]  # written before the field existed
    del stored["optim"]["schedule"]
    stored["data"]["backend"] = "video"  # a field since removed
    assert resume_changes(stored, config_to_dict(ExperimentConfig()), False, defaults) == {}
    changed = config_from_dict({"train": {"accumulate_steps": 2}})
    with pytest.raises(VidkdError, match=r"train.accumulate_steps: None -> 2"):
        resume_changes(stored, config_to_dict(changed), False, defaults)


def test_which_checkpoint_resume_takes_when_the_pointer_is_gone_or_dangling(tmp_path, caplog):
    """Without ``last`` the newest directory is the run's latest, with no warning; a
    ``last`` whose directory is gone is an error (not a silent start over); a temporary
    directory left by a kill is never a checkpoint."""
    import shutil

    from vidkd.engine.checkpoint import latest_checkpoint_name

    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, 1, {"w": torch.ones(3)}, {"epoch": 0})
    save_checkpoint(directory, 2, {"w": torch.ones(3)}, {"epoch": 1})
    (directory / "last").unlink()
    assert latest_checkpoint_name(directory) == "epoch_0002"
    with caplog.at_level(logging.WARNING, logger="vidkd"):
        assert latest_checkpoint(directory).name == "epoch_0002"
    assert "using checkpoint" not in caplog.text

    only = tmp_path / "only"
    save_checkpoint(only, 1, {"w": torch.ones(3)}, {"epoch": 0})
    shutil.rmtree(only / "epoch_0001")
    with pytest.raises(VidkdError, match="names epoch_0001 but no checkpoint directory is left"):
        latest_checkpoint(only)

    killed = tmp_path / "killed"
    (killed / ".epoch_0001.tmp").mkdir(parents=True)  # SIGKILL before the rename
    assert list_checkpoints(killed) == [] and latest_checkpoint(killed) is None


# ----------------------------------------------------------------------------- second review


def test_resume_on_a_folder_that_is_not_a_run_changes_nothing(tmp_path, synthetic_cache, tiny_config):
    """--resume stamped the run marker on a user's folder, then pointed at --overwrite, which
    deleted it."""
    (tmp_path / "thesis" / "sub").mkdir(parents=True)
    (tmp_path / "thesis" / "thesis.tex").write_text("precious")
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, name="thesis"))
    with pytest.raises(VidkdError, match="--resume: .* not a vidkd run; nothing was changed"):
        train(cfg, resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "thesis").iterdir()) == [".lock", "sub", "thesis.tex"]
    with pytest.raises(VidkdError, match="does not hold a vidkd run"):
        train(cfg, overwrite=True, progress=False)
    assert (tmp_path / "thesis" / "thesis.tex").read_text() == "precious"


def test_another_projects_config_and_checkpoints_are_not_a_run(tmp_path, synthetic_cache, tiny_config):
    project = tmp_path / "myproj"
    (project / "checkpoints").mkdir(parents=True)
    (project / "config.yaml").write_text("lr: 3\n")
    (project / "checkpoints" / "model.ckpt").write_text("weights")
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, name="myproj"))
    with pytest.raises(VidkdError, match="does not hold a vidkd run"):
        train(cfg, overwrite=True, progress=False)
    assert (project / "checkpoints" / "model.ckpt").read_text() == "weights"


def test_no_run_inside_another_and_overwrite_spares_a_nested_run(tmp_path, synthetic_cache, tiny_config):
    outer = config_from_dict(tiny_config(synthetic_cache, tmp_path, name="ref", train={"epochs": 1}))
    train(outer, progress=False)
    inner = config_from_dict(tiny_config(synthetic_cache, tmp_path, name="ref/child"))
    with pytest.raises(VidkdError, match="would sit inside the vidkd run"):
        train(inner, progress=False)
    assert not (tmp_path / "ref" / "child").exists()
    # nor through train.out_dir (or a compare's --out) inside the run: only the folders
    # between out_dir and the run were looked at
    below = config_from_dict(tiny_config(synthetic_cache, tmp_path / "ref" / "sub", name="child"))
    with pytest.raises(VidkdError, match=f"would sit inside the vidkd run {tmp_path / 'ref'}.*"
                                         "write the run somewhere else"):
        train(below, progress=False)
    assert not (tmp_path / "ref" / "sub").exists()
    import yaml

    from vidkd.cli import main

    row = tmp_path / "row.yaml"
    row.write_text(yaml.safe_dump(tiny_config(synthetic_cache, tmp_path, name="row")))
    assert main(["compare", "-q", str(row), "--seeds", "0", "--out", str(tmp_path / "ref" / "cmp")]) == 2
    assert not (tmp_path / "ref" / "cmp").exists()
    # a project folder above out_dir that merely looks like an old-layout run (its own
    # config.yaml and checkpoints/) is no run: runs below it train
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    (project / "config.yaml").write_text((tmp_path / "ref" / "config.yaml").read_text())
    inside = config_from_dict(tiny_config(synthetic_cache, project / "runs", name="p1",
                                          train={"epochs": 1}))
    train(inside, progress=False)
    assert (project / "runs" / "p1" / "student.safetensors").is_file()
    # a run that got there anyway (moved in by hand) is never deleted with the outer one
    (tmp_path / "ref" / "child").mkdir()
    (tmp_path / "ref" / "child" / ".vidkd-run").touch()
    with pytest.raises(VidkdError, match="holds another vidkd run"):
        train(outer, overwrite=True, progress=False)
    assert (tmp_path / "ref" / "student.safetensors").is_file()


def test_an_overwrite_killed_half_way_still_reads_as_a_run(tmp_path, synthetic_cache, tiny_config, monkeypatch):
    """Killed after config.yaml went (by name, it went before student.safetensors), the folder
    was no run to any command: --overwrite, a new start and --resume all refused it."""
    import vidkd.engine.rundir as rundir

    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    real_unlink = Path.unlink

    class Killed(Exception):
        pass

    def unlink(self, *args, **kwargs):
        if self == tmp_path / "tiny" / "student.safetensors":
            raise Killed
        real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Killed):
        train(cfg, overwrite=True, progress=False)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert rundir.is_vidkd_run(tmp_path / "tiny")  # marker and config go last
    train(cfg, overwrite=True, progress=False)  # so --overwrite can finish the job


def test_resume_with_fewer_epochs_than_trained_is_refused(tmp_path, synthetic_cache, tiny_config):
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 2})), progress=False)
    shipped = weights(tmp_path / "tiny")
    fewer = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    with pytest.raises(VidkdError, match=r"train.epochs=1 is below the 2 epochs this run has begun"):
        train(fewer, resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "tiny"), shipped)
    assert json.loads((tmp_path / "tiny" / "results.json").read_text())["epochs"] == 2


def test_training_on_moves_the_finished_results_aside(tmp_path, synthetic_cache, tiny_config, monkeypatch):
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1})), progress=False)
    more = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 2}))

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", killed)
    with pytest.raises(Killed):  # killed in epoch 2: the run is not finished
        train(more, resume=True, progress=False)
    run = tmp_path / "tiny"
    assert not (run / "results.json").exists()
    assert json.loads((run / "results.previous.json").read_text())["epochs"] == 1


def test_a_damaged_history_line_does_not_cost_the_results(tmp_path, synthetic_cache, tiny_config):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    with open(tmp_path / "tiny" / "history.jsonl", "a") as history:
        history.write("garbage\n[1, 2]\n")
    summary = train(cfg, resume=True, progress=False)
    assert [event["event"] for event in summary["history"]] == ["start", "resume"]


def test_damaged_results_and_a_mistyped_checkpoint_are_one_line(tmp_path, synthetic_cache, tiny_config):
    from vidkd.cli import main
    from vidkd.report import read_results

    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    run = tmp_path / "tiny"
    assert main(["eval", str(run), "--checkpoint", str(run / "best_studnet.safetensors"), "-q"]) == 2
    (run / "results.json").write_text('{"name": ')
    with pytest.raises(VidkdError, match="results.json is damaged"):
        read_results(run)
    with pytest.raises(VidkdError, match="does not exist"):
        read_results(tmp_path / "nonexistent")
