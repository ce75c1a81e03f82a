"""File helpers and model folders on disk: the output lock, atomic writes, modes that follow the
user's umask, and messages that name what the user named."""
import os
import time
from pathlib import Path

import pytest

from laborllm import api
from laborllm.errors import UserError


def test_a_fresh_empty_lock_is_not_taken_for_a_dead_one_and_recover_waits_for_the_lock(tmp_path):
    from laborllm.files import OutputLock
    from laborllm.models.folder import recover

    out = tmp_path / "model"
    lock = OutputLock(out)
    lock.path.write_text("")  # its owner created it an instant ago and has not written its pid yet
    with pytest.raises(UserError, match="being written"):
        OutputLock(out).__enter__()
    old = out.with_name(".model.old")
    old.mkdir()  # a replacement under way: the old folder aside, the new one not yet in place
    recover(out)
    assert old.exists() and not out.exists()  # a live lock: left alone
    os.utime(lock.path, (time.time() - 3600, time.time() - 3600))  # an hour old and empty: its writer died
    recover(out)
    assert out.exists() and not old.exists()
    with OutputLock(out):
        assert lock.path.read_text() == str(os.getpid())


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_users_umask(tmp_path, umask):
    """Every file and folder written, weights included, has the mode the umask asks for: two umasks,
    so a hard-coded mode cannot pass."""
    from laborllm.files import write_text_atomic

    old = os.umask(umask)
    try:
        f = write_text_atomic(tmp_path / "x.txt", "x")
        api.fit("markov", "nlsy79-males", tmp_path / "m")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~umask
    for p in (tmp_path / "m").iterdir():
        assert p.stat().st_mode & 0o777 == (0o777 if p.is_dir() else 0o666) & ~umask, p.name


def test_a_failed_write_names_the_file_asked_for(tmp_path, monkeypatch):
    import errno

    from laborllm.files import write_text_atomic

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", full)
    with pytest.raises(OSError) as e:
        write_text_atomic(tmp_path / "report.html", "x")
    assert e.value.filename == str(tmp_path / "report.html") and not list(tmp_path.iterdir())


def test_a_folder_that_cannot_be_written_is_named_as_the_user_named_it(tmp_path, monkeypatch):
    """A read-only place (root ignores permissions, so the refusal is simulated where the OS gives it):
    the message names the model folder asked for, not our temporary lock file."""
    from laborllm import files

    def refuse(prefix, dir):
        raise PermissionError(13, "Permission denied", str(Path(dir) / (prefix + "x")))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as e:
        api.fit("markov", "nlsy79-males", tmp_path / "models" / "m")
    assert str(e.value).startswith(f"{tmp_path / 'models' / 'm'}: cannot write in") and "Permission denied" in str(e.value)
