"""A run's own directory: where it may be, what may delete it, who may write it.

- The run name is a relative path that stays inside ``train.out_dir``: never ``.``, ``..``,
  absolute, or through a symlink out of ``out_dir``. It is checked before anything is
  created or deleted.
- ``--overwrite`` deletes only a directory that holds a vidkd run, and says what it deleted.
- :class:`RunLock` holds an exclusive ``flock`` on ``RUN/.lock`` for the life of the run; the
  file names the owner (PID, host, start time). The kernel drops the lock when its owner
  dies, so a lock file left by a dead process is taken over, with a message.
- :func:`resume_changes` compares a resumed run's config with the stored one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path, PurePath
from typing import Any

import yaml

from vidkd.errors import VidkdError

log = logging.getLogger("vidkd")

LOCK = ".lock"
MARKER = ".vidkd-run"
HISTORY = "history.jsonl"


def resolve_run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir / name`` once ``name`` is proven to stay inside ``out_dir``."""
    fix = "use a plain name such as --set name=my-run (sub-folders like group/my-run are fine)"
    parts = PurePath(name).parts
    if not name.strip() or PurePath(name).is_absolute() or name.startswith("~"):
        raise VidkdError(f"run name {name!r} must be a relative path inside train.out_dir; {fix}")
    if any(part in (".", "..") for part in name.replace("\\", "/").split("/")) or not parts:
        raise VidkdError(f"run name {name!r} may not contain '.' or '..'; {fix}")
    base = Path(out_dir).expanduser()
    run_dir = base / name
    try:
        real_base = base.resolve()
        real_run = run_dir.resolve()
        run_dir.exists()  # a name too long for the file system fails here, not half-way
    except (OSError, RuntimeError) as error:  # RuntimeError: a symbolic link loop
        raise VidkdError(f"run directory {str(run_dir)[:120]!r} cannot be used ("
                         f"{getattr(error, 'strerror', None) or error}); {fix}") from None
    if real_run == real_base or real_base not in real_run.parents:
        raise VidkdError(
            f"run directory {run_dir} leads outside {base} (through a symbolic link); {fix}"
        )
    outer = enclosing_run(run_dir, base)
    if outer is not None:
        where = fix
        if outer == real_base or outer in real_base.parents:  # the name cannot help: the folder can
            where = f"write the run somewhere else (train.out_dir, or compare's --out), outside {outer}"
        raise VidkdError(
            f"run directory {run_dir} would sit inside the vidkd run {outer}, whose --overwrite "
            f"would delete it; {where}"
        )
    return run_dir


def _is_vidkd_config(path: Path) -> bool:
    """Whether ``path`` is a config that ``vidkd train`` dumped (its five sections)."""
    if not path.is_file():  # a FIFO would block the open
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle.read(1 << 20))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(values, dict) and {"name", "data", "model", "method", "train"} <= set(values)


def is_vidkd_run(path: Path) -> bool:
    """Whether ``path`` holds a run written by ``vidkd train``: its marker, or (the older
    layout) a vidkd ``config.yaml`` beside ``checkpoints/``, ``metrics.jsonl`` or
    ``results.json``; another project's ``config.yaml`` and ``checkpoints/`` is not one."""
    if (path / MARKER).is_file():
        return True
    return _is_vidkd_config(path / "config.yaml") and any(
        (path / item).exists() for item in ("checkpoints", "metrics.jsonl", "results.json")
    )


def enclosing_run(run_dir: Path, out_dir: Path) -> Path | None:
    """The vidkd run that ``run_dir`` would sit inside, if any: a folder between it and
    ``out_dir``, or ``out_dir`` or a folder above it that holds a run marker
    (``train.out_dir`` may itself lie inside a run, and so may a compare's ``--out``).
    Above ``out_dir`` only the marker counts: a project folder with a ``config.yaml`` and a
    ``checkpoints/`` of its own is not taken for a run of the older layout."""
    base = out_dir.resolve()
    below = True
    for parent in run_dir.resolve().parents:
        below = below and parent != base
        if (parent / MARKER).is_file() or (below and is_vidkd_run(parent)):
            return parent
    return None


def _nested_run(run_dir: Path) -> Path | None:
    """A vidkd run below ``run_dir`` (links not followed), if any."""
    for directory, subdirs, files in os.walk(run_dir):
        if Path(directory) != run_dir and MARKER in files:
            return Path(directory)
        subdirs[:] = [name for name in subdirs if not os.path.islink(os.path.join(directory, name))]
    return None


def holds_files(path: Path) -> bool:
    """Whether ``path`` has anything in it besides our lock file."""
    return path.is_dir() and any(entry.name != LOCK for entry in path.iterdir())


def never_trained(path: Path) -> bool:
    """Whether ``path`` is a vidkd run that stopped before it wrote anything but its marker
    and ``history.jsonl`` (a start refused for its data or its config): a new start may
    take it over without ``--overwrite``, since there is nothing to lose."""
    return (path / MARKER).is_file() and all(
        entry.name in (LOCK, MARKER, HISTORY) and entry.is_file() and not entry.is_symlink()
        for entry in path.iterdir()
    )


def clear_run(run_dir: Path) -> list[str]:
    """Delete the contents of a vidkd run directory (not the lock we hold); returns what went.

    Refuses a directory that does not hold a vidkd run. Symbolic links inside are removed,
    never followed.
    """
    if not holds_files(run_dir):
        return []
    if not is_vidkd_run(run_dir):
        raise VidkdError(
            f"--overwrite: {run_dir} exists but does not hold a vidkd run (no {MARKER} or "
            "config.yaml with checkpoints/); nothing was deleted. Choose another name with "
            "--set name=NEW"
        )
    nested = _nested_run(run_dir)
    if nested is not None:
        raise VidkdError(
            f"--overwrite: {run_dir} holds another vidkd run, {nested}; nothing was deleted. "
            "Move that run out first, or choose another name with --set name=NEW"
        )
    removed = []
    # the marker and the config go last: a clear that is killed half-way still reads as a run
    last = {MARKER: 2, "config.yaml": 1}
    for entry in sorted(run_dir.iterdir(), key=lambda e: (last.get(e.name, 0), e.name)):
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


class RunLock:
    """Exclusive lock on a run directory for the life of a run (a context manager)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.handle: Any = None

    def __enter__(self) -> RunLock:
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = _describe(handle.read())
            handle.close()
            raise VidkdError(
                f"run {self.path.parent} is in use by {owner}; wait for it to finish, stop it, "
                "or choose another name with --set name=NEW"
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            log.warning(
                "taking over the lock of %s on %s: that process no longer holds it",
                _describe(previous), self.path.parent,
            )
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.flush()
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _describe(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"process {owner['pid']} on host {owner['host']} (started {owner['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


# Resume: which config fields may differ from the stored run.
#: change what the network is or what it sees: never allowed on resume
FIXED = ("model.", "data.dataset", "data.root", "data.annotations",
         "data.test_annotations", "data.classes_file", "data.split",
         "data.clip_len", "data.frame_stride", "data.short_side", "data.crop_size",
         "data.val_fraction", "data.val_source", "data.same_clip", "data.skip_list",
         "data.synthetic.", "method.name", "method.projector_dim", "method.predictor_hidden",
         "method.teacher.")
#: bookkeeping, budget or evaluation only: allowed, recorded in the run's history
#: (``name``: a run folder moved or copied to another name resumes under that name)
FREE = ("name", "train.epochs", "train.log_every", "train.threads", "train.keep_checkpoints",
        "train.checkpoint_every_steps", "train.device", "train.out_dir", "train.compile",
        "train.reuse_host_memory",
        "data.num_workers", "data.max_failed_fraction", "data.test_clips", "data.cache",
        "data.cache_budget_mb", "eval.", "paper.")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _matches(field: str, patterns: tuple[str, ...]) -> bool:
    return any(field == p or (p.endswith(".") and field.startswith(p)) for p in patterns)


#: fields that name a file or folder: two spellings of one path are no change
PATHS = ("data.root", "data.annotations", "data.test_annotations", "data.classes_file",
         "data.skip_list", "data.synthetic.cache_dir", "method.teacher.checkpoint",
         "train.out_dir")


def _same_path(stored: Any, new: Any, stored_cwd: str | None) -> bool | None:
    """Whether two values of a path field name one file or folder: ``stored`` relative to
    ``stored_cwd`` (the working directory of the run that wrote it), ``new`` relative to
    this process's. ``None`` when that cannot be told (a path that no longer exists, or
    a relative stored path from a run that did not record its directory): the text decides."""
    if not (isinstance(stored, str) and isinstance(new, str)) or not stored or not new:
        return None  # no path ("" is unset): the text decides
    was, now = Path(stored).expanduser(), Path(new).expanduser()
    if not was.is_absolute():
        if stored_cwd is None:
            return None
        was = Path(stored_cwd) / was
    try:
        return os.path.samefile(was, now)
    except (OSError, ValueError):  # either is missing, unreadable, or holds a NUL
        return None


def config_differences(
    stored: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None,
    stored_cwd: str | None = None,
) -> dict[str, list[Any]]:
    """The fields that differ, as ``{field: [stored, new]}``.

    A field the stored config lacks (a run from an older vidkd) is no change when the new
    config holds its default (``defaults``, the config's own defaults); nor is a field
    this vidkd no longer has (``data.backend``). A path field (:data:`PATHS`) differs
    when its two values name different existing files, each read from its own working
    directory (``stored_cwd`` for the stored one), so ``teacher.safetensors`` from one
    folder and its absolute form or a link to it are one value, while the same text run
    from another folder is another; where that cannot be told, the text decides.
    """
    old, now, default = _flatten(stored), _flatten(new), _flatten(defaults or {})
    changed = {}
    for k in sorted(old.keys() | now.keys()):
        if k not in now:  # a field this vidkd removed: no change
            continue
        if k not in old and k in default and now[k] == default[k]:
            continue
        same = _same_path(old.get(k), now[k], stored_cwd) if k in PATHS else None
        if same is False and old.get(k) == now[k]:  # one text, read from two folders
            changed[k] = [f"{old[k]} (in {stored_cwd})", f"{now[k]} (in {os.getcwd()})"]
        elif same is False or (same is None and old.get(k) != now[k]):
            changed[k] = [old.get(k), now[k]]
    return changed


def resume_changes(
    stored: dict[str, Any], new: dict[str, Any], force: bool,
    defaults: dict[str, Any] | None = None, stored_cwd: str | None = None,
) -> dict[str, list[Any]]:
    """The fields that differ (:func:`config_differences`), once they are allowed.

    Fields of :data:`FIXED` are refused always; fields outside :data:`FREE` (the optimiser,
    the seed, the loss weights, the augmentation, the batch size, precision...) are refused
    unless ``force``. Each refusal names every differing field.
    """
    changed = config_differences(stored, new, defaults, stored_cwd)
    fixed = [k for k in changed if _matches(k, FIXED)]
    if fixed:
        raise VidkdError(
            "--resume: the config changes the model or the data ("
            + ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
            + "); these cannot change mid-run: undo them, or start a new run with --set name=NEW"
        )
    guarded = [k for k in changed if not _matches(k, FREE)]
    if guarded and not force:
        raise VidkdError(
            "--resume: the config differs from the stored run in "
            + ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in guarded)
            + (moved_defaults(stored, {k: changed[k] for k in guarded}) or "; undo the change, or pass --force to continue "
               "with it (it is recorded in the run's history.jsonl)")
        )
    return changed


def moved_defaults(stored: dict[str, Any], changed: dict[str, list[Any]]) -> str:
    """The fix, when every change is a loss weight that a config left out and whose default
    changed since the run started (FRSKD took SKD-SRL's tau 10, alpha 0.1, beta 1 until it
    got its own, :data:`vidkd.config.METHOD_DEFAULTS`); "" otherwise."""
    from vidkd.config import METHOD_DEFAULTS, MethodConfig

    name = stored.get("method", {}).get("name") if isinstance(stored.get("method"), dict) else None
    own = METHOD_DEFAULTS.get(name) if isinstance(name, str) else None
    if not own or not changed:
        return ""
    generic = MethodConfig()
    keys = {f"method.{key}": key for key in own}
    if not all(k in keys and was == getattr(generic, keys[k]) and now == own[keys[k]]
               for k, (was, now) in changed.items()):
        return ""
    lines = ", ".join(f"{keys[k]}: {was}" for k, (was, _) in changed.items())
    return (f"; the run started when {name} took these defaults, it now has its own: to "
            f"continue it as it was, add `{lines}` under `method:` in its config")
