"""``train.reuse_host_memory``: freed CPU tensors stay in glibc's heap for the next step."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import tiny_bench

from vidkd.cli import main
from vidkd.config import config_from_dict
from vidkd.engine import hardware
from vidkd.engine.train import evaluate_student, train

# the real functions, before the suite's autouse fixture (conftest.fake_glibc) replaces them
REAL_GLIBC = hardware._glibc
REAL_ENVIRONMENT_CHECK = hardware._allocator_chosen_by_environment
CPU = torch.device("cpu")
REUSE = [("mallopt", -4, 0), ("mallopt", -1, -1)]  # M_MMAP_MAX 0, M_TRIM_THRESHOLD never
# M_MMAP_MAX, M_MMAP_THRESHOLD and M_TRIM_THRESHOLD where glibc's adaptive rule settles
USUAL = [("mallopt", -4, 65536), ("mallopt", -3, 32 * 2**20), ("mallopt", -1, 64 * 2**20)]

# A 64 MB tensor made and freed 30 times; MODE "reuse-pinned" keeps a small tensor after each
# (so no freed block can merge back into the heap's top), "returned" turns reuse on and off
# again first. Prints: the page faults of the last 5 tensors, resident MB before, after the
# loop, after a trim.
_REALLOCATE = """
import resource, sys, torch
from vidkd.engine import hardware
def resident_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
mode = sys.argv[1]
if mode != "system":
    assert hardware.reuse_host_memory() is None
if mode == "returned":
    hardware.return_host_memory()
start, faults, pinned = resident_mb(), [], []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensor = torch.empty(16 * 2**20)
    tensor.fill_(1.0)
    if mode == "reuse-pinned":
        pinned.append(torch.zeros(1))
    del tensor
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
grown = resident_mb()
hardware.trim_host_memory()
print(sum(faults[-5:]), start, grown, resident_mb())
"""


def _reallocate(mode: str) -> tuple[int, int, int, int]:
    # a user's own allocator settings would decide the outcome: the child runs without them
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run([sys.executable, "-c", _REALLOCATE, mode], capture_output=True,
                          text=True, timeout=120, check=True, env=env)
    faults, start, grown, trimmed = (int(v) for v in done.stdout.split()[-4:])
    return faults, start, grown, trimmed


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_tensors_are_not_faulted_in_again_and_trim_returns_them():
    # glibc unmaps a freed 64 MB block, so the next one faults in every page again: 16384 4-KiB
    # pages a tensor, or at least 32 where the kernel backs it with 2-MiB pages
    refaulted, start, grown, _ = _reallocate("system")
    assert refaulted >= 5 * 32 and grown - start < 100
    # kept in the heap, the same pages are reused; a few may fault while the heap settles
    reused, start, grown, trimmed = _reallocate("reuse")
    assert reused < refaulted / 10
    assert grown - start >= 64 and trimmed - start < 64  # held, then handed back by the trim
    # a small block after each freed one: on glibc 2.36 no freed block is reused and the heap
    # grows by 64 MB a tensor until the epoch's trim gives it back
    _, start, grown, trimmed = _reallocate("reuse-pinned")
    assert trimmed - start < 64
    # turned off again, a 64 MB block is mmap'd and unmapped as before
    assert _reallocate("returned")[0] >= refaulted / 2


def test_on_sets_glibc_and_off_restores_its_defaults(fake_glibc):
    assert hardware.apply_reuse_host_memory(True, CPU) == (True, None)
    assert fake_glibc.calls == REUSE
    hardware.trim_host_memory()
    assert fake_glibc.calls[-1] == ("malloc_trim", 0)
    fake_glibc.calls.clear()
    # a later run of the same process with the key off gets glibc's usual behaviour back
    assert hardware.apply_reuse_host_memory(False, CPU) == (False, None)
    assert fake_glibc.calls == USUAL + [("malloc_trim", 0)]
    fake_glibc.calls.clear()
    hardware.trim_host_memory()  # nothing held any more: nothing to trim
    assert hardware.apply_reuse_host_memory(False, CPU) == (False, None)
    assert fake_glibc.calls == []


def test_a_gpu_run_leaves_the_allocator_alone(fake_glibc):
    assert hardware.apply_reuse_host_memory(True, torch.device("cuda")) == (False, None)
    assert fake_glibc.calls == []
    hardware.apply_reuse_host_memory(True, CPU)  # an earlier CPU run of the same process
    fake_glibc.calls.clear()
    assert hardware.apply_reuse_host_memory(False, torch.device("cuda")) == (True, None)
    assert fake_glibc.calls == []


def test_refused_mallopt_leaves_mmap_on(fake_glibc):
    fake_glibc.refuse.add(-1)
    applied, note = hardware.apply_reuse_host_memory(True, CPU)
    assert (applied, note) == (False, "train.reuse_host_memory: not applied, glibc's mallopt "
                                      "refused M_TRIM_THRESHOLD")
    assert fake_glibc.calls == REUSE + USUAL  # mmap back on: no heap that is never trimmed
    fake_glibc.calls.clear()
    hardware.trim_host_memory()
    assert fake_glibc.calls == []


def test_a_refusal_after_an_earlier_run_keeps_the_state_true(fake_glibc):
    assert hardware.apply_reuse_host_memory(True, CPU) == (True, None)
    fake_glibc.refuse.add(-1)
    assert not hardware.apply_reuse_host_memory(True, CPU)[0]  # glibc's usual settings again
    fake_glibc.calls.clear()
    hardware.trim_host_memory()
    assert hardware.apply_reuse_host_memory(True, torch.device("cuda")) == (False, None)
    assert fake_glibc.calls == []


@pytest.mark.parametrize(("name", "value", "chosen"), [
    ("MALLOC_MMAP_MAX_", "0", "MALLOC_MMAP_MAX_"),
    ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1", "GLIBC_TUNABLES"),
    ("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", None),  # not what vidkd sets
    ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "LD_PRELOAD"),
    ("LD_PRELOAD", "/opt/intel/lib/libiomp5.so", None),  # not an allocator: vidkd sets glibc's
])
def test_an_allocator_the_environment_chose_is_left_alone(name, value, chosen, fake_glibc,
                                                          monkeypatch):
    monkeypatch.setattr(hardware, "_allocator_chosen_by_environment", REAL_ENVIRONMENT_CHECK)
    for variable in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                     "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(name, value)
    applied, note = hardware.apply_reuse_host_memory(True, CPU)
    if chosen is None:
        assert applied and note is None and fake_glibc.calls == REUSE
    else:
        assert not applied and fake_glibc.calls == []
        assert note == f"train.reuse_host_memory: not applied, {chosen} already sets the allocator"


def test_another_c_library_is_one_line(monkeypatch):
    monkeypatch.setattr(hardware, "_glibc", REAL_GLIBC)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert hardware.reuse_host_memory() == "the C library is not glibc (Darwin unknown libc)"
    applied, note = hardware.apply_reuse_host_memory(True, CPU)
    assert not applied and "\n" not in note
    assert note.startswith("train.reuse_host_memory: not applied, the C library is not glibc")
    hardware.trim_host_memory()  # nothing to trim, and no error


@pytest.mark.parametrize("enabled", [True, False])
def test_train_eval_and_bench_apply_the_key(enabled, tmp_path, synthetic_cache, tiny_config,
                                            fake_glibc, capsys):
    values = tiny_config(synthetic_cache, tmp_path, train={"epochs": 2, "reuse_host_memory": enabled})
    cfg = config_from_dict(values)
    train(cfg, progress=False)
    # set once, and the heap trimmed after each of the 2 epochs
    assert fake_glibc.calls == (REUSE + [("malloc_trim", 0)] * 2 if enabled else [])
    fake_glibc.calls.clear()
    evaluate_student(cfg, tmp_path / "tiny" / "student.safetensors", progress=False)  # vidkd eval
    assert fake_glibc.calls == (REUSE if enabled else [])

    fake_glibc.calls.clear()
    report = tiny_bench(tmp_path, values)
    assert fake_glibc.calls == (REUSE if enabled else [])
    assert report["host_memory_reused"] is enabled
    assert ("freed host memory reused" in capsys.readouterr().out) is enabled

    if enabled:  # vidkd predict has no config: it takes the key's default
        fake_glibc.calls.clear()
        video = next(synthetic_cache.rglob("*.mp4"))
        assert main(["predict", str(tmp_path / "tiny" / "student.safetensors"), str(video)]) == 0
        assert fake_glibc.calls == REUSE


def test_the_key_may_change_on_resume(tmp_path, synthetic_cache, tiny_config):
    first = tiny_config(synthetic_cache, tmp_path, train={"epochs": 1, "reuse_host_memory": True})
    train(config_from_dict(first), progress=False)
    resumed = tiny_config(synthetic_cache, tmp_path, train={"epochs": 2, "reuse_host_memory": False})
    train(config_from_dict(resumed), resume=True, progress=False)  # no --force needed
    history = (tmp_path / "tiny" / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["changed"]["train.reuse_host_memory"] == [True, False]


_INTERPOSER = """
#include <stddef.h>
extern void *__libc_malloc(size_t);
void *malloc(size_t size) { return __libc_malloc(size); }
"""

_WHO_ALLOCATES = """
import torch
from vidkd.engine import hardware
print(hardware.apply_reuse_host_memory(True, torch.device("cpu"))[1])
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or shutil.which("cc") is None,
                    reason="needs glibc and a C compiler to build a malloc that is not glibc's")
def test_an_allocator_put_first_under_any_name_is_left_alone(tmp_path):
    """jemalloc or tcmalloc loaded by /etc/ld.so.preload, linked in, or preloaded under a name
    without "malloc" in it: mallopt would tune a heap that allocator does not use."""
    source = tmp_path / "interpose.c"
    source.write_text(_INTERPOSER)
    library = tmp_path / "libinterpose.so"  # no "malloc" in its path, which LD_PRELOAD names
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True,
                   capture_output=True, timeout=60)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}

    def note(extra: dict[str, str]) -> str:
        done = subprocess.run([sys.executable, "-c", _WHO_ALLOCATES], capture_output=True,
                              text=True, timeout=120, check=True, env={**env, **extra})
        return done.stdout.strip().splitlines()[-1]

    assert note({}) == "None"  # glibc's own malloc: reuse applied, nothing to say
    assert note({"LD_PRELOAD": str(library)}) == (
        "train.reuse_host_memory: not applied, libinterpose.so, whose malloc this process "
        "calls, already sets the allocator")
