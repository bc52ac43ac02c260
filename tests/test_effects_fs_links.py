"""FS confinement against hard links: a second name inside the root never opens a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from effects_helpers import FakeSpirit, emit, run, warnings_of

from vudo._effects import Permissions, StandardEffectHandler, encode_fs_write
from vudo._effects._fs import fs_read, fs_write
from vudo._effects._outcome import Failed
from vudo.abi import EffectId, ResultCode

SECRET = b"outside the root"


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside file) with ``root/link`` a hard link to the outside file."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_bytes(SECRET)
    os.link(outside, root / "link")
    (root / "plain.txt").write_bytes(b"plain")
    return root, outside


def test_fs_read_of_a_hard_link_to_outside_is_refused(
    linked: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = linked
    with StandardEffectHandler(Permissions.allow(fs_root=root)) as handler:
        spirit = FakeSpirit()
        assert emit(handler, spirit, EffectId.FS_READ, b"link") == ResultCode.NOT_PERMITTED
        assert any("hard links" in m for m in warnings_of(caplog))
        rc, result = run(handler, spirit, EffectId.FS_READ, b"plain.txt")
    assert rc == ResultCode.OK and result is not None and result[1:] == (0, b"plain")
    assert not spirit.inbox


def test_fs_write_through_a_hard_link_leaves_the_outside_file_alone(
    linked: tuple[Path, Path],
) -> None:
    root, outside = linked
    with StandardEffectHandler(Permissions.allow(fs_root=root, fs_write=True)) as handler:
        spirit = FakeSpirit()
        payload = encode_fs_write("link", b"overwritten")
        assert emit(handler, spirit, EffectId.FS_WRITE, payload) == ResultCode.NOT_PERMITTED
        assert handler.wait_idle(30)
    assert outside.read_bytes() == SECRET


def test_a_link_made_after_the_check_is_caught_when_the_file_is_opened(
    linked: tuple[Path, Path],
) -> None:
    # The path check and the open are apart in time; the opened file decides.
    root, outside = linked
    perms = Permissions.allow(fs_root=root, fs_write=True)
    read_job = fs_read(perms, b"late", None)
    write_job = fs_write(perms, encode_fs_write("late", b"overwritten"))
    os.link(outside, root / "late")
    for job in (read_job, write_job):
        with pytest.raises(Failed, match="hard links") as info:
            job()
        assert info.value.status == ResultCode.NOT_PERMITTED
    assert outside.read_bytes() == SECRET


def test_files_fs_write_creates_stay_readable(tmp_path: Path) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tmp_path, fs_write=True)) as handler:
        spirit = FakeSpirit()
        rc, result = run(handler, spirit, EffectId.FS_WRITE, encode_fs_write("new.txt", b"hi"))
        assert rc == ResultCode.OK and result is not None and result[1] == 0
        rc, result = run(handler, spirit, EffectId.FS_READ, b"new.txt")
    assert result is not None and result[1:] == (0, b"hi")
