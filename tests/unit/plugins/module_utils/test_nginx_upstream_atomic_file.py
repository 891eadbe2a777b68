"""Unit tests of plugins/module_utils/_atomic_file.py (used by nginx_upstream)."""

import multiprocessing
import os
import stat
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _atomic_file as af


def test_snapshot_of_missing_file(tmp_path):
    snap = af.read_snapshot(str(tmp_path / "nope.conf"))
    assert not snap.exists and snap.text() is None


def test_atomic_write_new_file_default_mode_and_no_leftovers(tmp_path):
    path = str(tmp_path / "a.conf")
    af.atomic_write(path, b"hello\n")
    assert open(path, "rb").read() == b"hello\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(str(tmp_path))) == ["a.conf"]


def test_atomic_write_keeps_mode_and_owner(tmp_path):
    path = str(tmp_path / "a.conf")
    with open(path, "w") as f:
        f.write("old\n")
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 1, 1)
    snap = af.read_snapshot(path)
    af.atomic_write(path, b"new\n", like=snap)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1, 1)
    assert open(path).read() == "new\n"


def test_restore_puts_back_or_removes(tmp_path):
    path = str(tmp_path / "a.conf")
    missing = af.read_snapshot(path)
    af.atomic_write(path, b"new\n")
    af.restore(path, missing)
    assert not os.path.exists(path)
    with open(path, "w") as f:
        f.write("old\n")
    os.chmod(path, 0o600)
    snap = af.read_snapshot(path)
    af.atomic_write(path, b"new\n", like=snap)
    af.restore(path, snap)
    assert open(path).read() == "old\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_check_writable_dir(tmp_path):
    assert af.check_writable_dir(str(tmp_path / "x.conf")) == str(tmp_path)
    with pytest.raises(af.AtomicFileError, match="does not exist"):
        af.check_writable_dir(str(tmp_path / "nodir" / "x.conf"))
    (tmp_path / "file").write_text("")
    with pytest.raises(af.AtomicFileError, match="does not exist"):
        af.check_writable_dir(str(tmp_path / "file" / "x.conf"))


def test_read_snapshot_refuses_directory(tmp_path):
    with pytest.raises(af.AtomicFileError, match="not a regular file"):
        af.read_snapshot(str(tmp_path))


def test_lock_path_is_hidden_and_not_conf(tmp_path):
    p = af.lock_path_for(str(tmp_path / "greenflow-upstream-demo.conf"))
    assert os.path.basename(p) == ".greenflow-upstream-demo.conf.lock"


def _hold(path, seconds, ready):
    with af.FileLock(path, timeout=5):
        ready.set()
        time.sleep(seconds)


def test_lock_serializes_and_times_out(tmp_path):
    path = str(tmp_path / ".x.lock")
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_hold, args=(path, 1.5, ready))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(af.LockTimeout, match="another run holds the lock"):
            af.FileLock(path, timeout=0.2).acquire()
        lock = af.FileLock(path, timeout=10).acquire()
        assert lock.waited > 0.3  # had to wait for the holder to finish
        lock.release()
    finally:
        proc.join(10)


def test_candidate_is_hidden_beside_the_file_until_installed(tmp_path):
    path = str(tmp_path / "a.conf")
    with open(path, "w") as f:
        f.write("old\n")
    os.chmod(path, 0o640)
    cand = af.write_candidate(path, b"new\n", like=af.read_snapshot(path))
    name = os.path.basename(cand)
    assert os.path.dirname(cand) == str(tmp_path) and name.startswith(".a.conf.") and name.endswith(".candidate")
    assert open(path).read() == "old\n" and open(cand).read() == "new\n"
    assert stat.S_IMODE(os.stat(cand).st_mode) == 0o640  # what is checked is what goes live
    ino = os.stat(cand).st_ino
    af.install(cand, path)
    assert open(path).read() == "new\n" and os.stat(path).st_ino == ino
    assert sorted(os.listdir(str(tmp_path))) == ["a.conf"]
    assert af.discard(cand) is True  # already gone is fine


def test_remove_leftovers_takes_only_this_files_candidates_and_temp_files(tmp_path):
    path = str(tmp_path / "a.conf")
    names = [".a.conf.x1.candidate", ".a.conf.y2.tmp", ".a.conf.lock", ".b.conf.z3.candidate", "a.conf"]
    for n in names:
        (tmp_path / n).write_text("")
    assert af.remove_leftovers(path) == [".a.conf.x1.candidate", ".a.conf.y2.tmp"]
    assert sorted(os.listdir(str(tmp_path))) == [".a.conf.lock", ".b.conf.z3.candidate", "a.conf"]
