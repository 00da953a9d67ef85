"""Atomic outputs: all or nothing, and readable by whoever the umask lets read."""

import os
import stat

import pytest

from mammodp import fileio


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    fileio._umask.cache_clear()
    yield
    os.umask(old)
    fileio._umask.cache_clear()


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomic_file_gets_the_mode_a_plain_write_would(tmp_path, umask_022):
    plain = tmp_path / "plain.csv"
    plain.write_text("a\n")
    with fileio.atomic_path(tmp_path / "table.csv") as tmp:
        tmp.write_text("a\n")
    assert _mode(tmp_path / "table.csv") == _mode(plain) == 0o644


def test_an_atomic_directory_gets_the_mode_a_plain_mkdir_would(tmp_path, umask_022):
    (tmp_path / "plain").mkdir()
    with fileio.atomic_dir(tmp_path / "crops") as tmp:
        (tmp / "a.png").write_bytes(b"x")
    assert _mode(tmp_path / "crops") == _mode(tmp_path / "plain") == 0o755


def test_a_failed_write_leaves_neither_the_output_nor_its_temporary(tmp_path):
    with pytest.raises(RuntimeError), fileio.atomic_path(tmp_path / "t.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
