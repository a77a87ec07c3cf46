"""Write-then-rename: what killed writes leave behind is removed by the next write into the same
folder when it is ours and abandoned (a dead process of this host, or another host's after
`STALE_AFTER_S`), a stranded previous result is put back, and nothing else is touched."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from compass_jax import atomic

KILLED_WRITE = """
import sys, time
from compass_jax.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    open(tmp + "/half.safetensors", "w").write("half")
    print("writing", flush=True)
    time.sleep(60)
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _name(kind: str, target: str, host: str, pid: int) -> str:
    return f".{kind}-{target}-{host}-{pid}-abc_12xy"


def test_a_killed_export_is_swept_by_the_next_write(tmp_path):
    target = tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(target)], env=env,
                             stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdout.readline() == b"writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    (left,) = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(f".tmp-export-{atomic._host()}-{child.pid}-") and not target.exists()
    with atomic.atomic_path(tmp_path / "other.json") as tmp:
        pathlib.Path(tmp).write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_only_abandoned_temporaries_of_ours_are_removed(tmp_path):
    here, dead, alive = atomic._host(), _dead_pid(), os.getpid()
    keep = {
        _name("tmp", "a", here, alive),  # this process is writing it
        _name("tmp", "b", "0badc0de", dead),  # another host's, recent: cannot be checked
        ".tmp-c-random",  # not our naming
        ".old-d",
        "e.json",
    }
    remove = {_name("tmp", "f", here, dead), _name("tmp", "g.npy", here, dead),
              _name("tmp", "h", "0badc0de", alive)}  # fmt: skip
    files = {"e.json", _name("tmp", "g.npy", here, dead)}  # atomic_path's temporaries are files
    for name in keep | remove:
        (tmp_path / name).write_text("x") if name in files else (tmp_path / name).mkdir()
    old = time.time() - atomic.STALE_AFTER_S - 60
    os.utime(tmp_path / _name("tmp", "h", "0badc0de", alive), (old, old))
    removed = atomic.sweep_stale(tmp_path)
    assert {pathlib.Path(p).name for p in removed} == remove
    assert {p.name for p in tmp_path.iterdir()} == keep


def test_a_previous_result_stranded_between_the_two_renames_is_put_back(tmp_path):
    # a writer died after moving the old directory aside and before moving the new one in
    stranded = tmp_path / _name("old", "model", atomic._host(), _dead_pid())
    (stranded / "x").mkdir(parents=True)
    (stranded / "x" / "config.json").write_text("previous")
    atomic.sweep_stale(tmp_path)
    assert (tmp_path / "model" / "config.json").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_check_writable_names_what_is_wrong(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    atomic.check_writable(tmp_path / "new" / "deeper" / "out.npy")  # parents get created
    atomic.check_writable(tmp_path / "dir", directory=True)
    with pytest.raises(IsADirectoryError, match="dir: is a directory, not a file"):
        atomic.check_writable(tmp_path / "dir")
    with pytest.raises(NotADirectoryError, match="file: is a file, not a directory"):
        atomic.check_writable(tmp_path / "file", directory=True)
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a directory"):
        atomic.check_writable(tmp_path / "file" / "out.npy")
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(PermissionError, match="cannot write in"):
            atomic.check_writable(tmp_path / "ro" / "out.npy")


def test_atomic_open_writes_through_the_reserved_file_and_keeps_the_old_result_on_error(tmp_path):
    target = tmp_path / "out.bin"
    with atomic.atomic_open(target, "wb") as f:
        # The descriptor mkstemp opened, not a reopened name: reopening for writing truncates,
        # and ext4 flushes files truncated to zero when they are closed.
        assert isinstance(f.name, int)
        f.write(b"first")
        assert not target.exists()  # nothing at the target before the block succeeds
    assert target.read_bytes() == b"first"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic.atomic_open(target, "w", encoding="utf-8") as f:
        f.write("second")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary left behind
    with pytest.raises(ValueError, match="not a 'w' mode"), atomic.atomic_open(target, "ab"):
        pass
