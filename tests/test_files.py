"""Atomic writes, the output directory's checks and its lock, which a SIGKILL releases."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from core import files
from core.errors import UserError


def test_atomic_write_text_and_bytes_with_readable_mode(tmp_path):
    files.atomic_write(str(tmp_path / "a.txt"), "héllo\n")
    files.atomic_write(str(tmp_path / "b.bin"), b"\x00\x01")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert all(os.stat(tmp_path / f).st_mode & 0o777 == files.FILE_MODE for f in ("a.txt", "b.bin"))


@pytest.mark.parametrize("failure, raised", [(KeyboardInterrupt(), KeyboardInterrupt),
                                             (OSError(28, "No space left on device"), UserError)])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure, raised):
    path = tmp_path / "results.json"
    files.atomic_write(str(path), "old")

    def interrupted(*args):
        raise failure

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(raised, match="No space left on device; free space" if raised is UserError else None):
        files.atomic_write(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_stale_temporaries_are_swept_and_nothing_else(tmp_path):
    (tmp_path / ".tmp-abc").write_text("half")
    (tmp_path / ".tmp-def.png").write_text("half")
    (tmp_path / "keep.tmp-x").write_text("mine")
    assert sorted(files.sweep_temporaries(str(tmp_path))) == [".tmp-abc", ".tmp-def.png"]
    assert os.listdir(tmp_path) == ["keep.tmp-x"]


def test_prepare_out_dir(tmp_path):
    assert files.prepare_out_dir(str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    assert os.path.isdir(tmp_path / "new" / "deeper")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        files.prepare_out_dir(str(tmp_path / "file"))
    with pytest.raises(UserError, match="cannot create .*: Not a directory; choose a writable location"):
        files.prepare_out_dir(str(tmp_path / "file" / "below"))


_HOLDS_THE_LOCK = textwrap.dedent("""
    import sys, time
    from core import files
    with files.DirectoryLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_the_lock_admits_one_holder_and_a_sigkill_releases_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDS_THE_LOCK, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError, match=rf"another run \(pid {holder.pid}\) is writing to .*choose another --out"):
            with files.DirectoryLock(str(tmp_path)):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with files.DirectoryLock(str(tmp_path)):  # the kernel released the dead holder's lock
        assert (tmp_path / files.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with files.DirectoryLock(str(tmp_path)):  # and ours was released on exit
        pass
