"""kelocate.atomic: files and folders appear whole or not at all; OSErrors become one-line WriteErrors."""

from __future__ import annotations

import errno
import os

import pytest
import typer

from kelocate.atomic import (
    WriteError,
    atomic_dir,
    atomic_files,
    atomic_path,
    cache_dir,
    check_writable,
    write_text,
    write_with,
)
from kelocate.errors import KelocateError


def _disk_full(path) -> None:
    path.write_text("half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_text_replaces_and_honours_the_umask(tmp_path):
    path = write_text(tmp_path / "a" / "b.json", "one")
    assert path.read_text() == "one" and write_text(path, "two").read_text() == "two"
    old = os.umask(0o022)
    try:
        assert (write_text(tmp_path / "c.txt", "x").stat().st_mode & 0o777) == 0o644  # not mkstemp's 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.txt"]  # no temporary left


def test_a_failed_write_leaves_nothing_and_is_one_line(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(WriteError) as info:
        write_with(dest, _disk_full)
    message = str(info.value)
    assert str(dest) in message and "No space left on device" in message and "--out" in message
    assert "\n" not in message and list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError):
        write_with(tmp_path / "new" / "deeper" / "out.json", _disk_full)
    assert list(tmp_path.iterdir()) == []  # the folders made for it are removed again
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:  # any other error: nothing left either
        tmp.write_text("half")
        raise RuntimeError("bug")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_places_name_the_path_and_the_fix(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(WriteError, match=r"cannot create folder .*file\.txt/sub' \(Not a directory\); choose "):
        check_writable(blocker / "sub")
    with pytest.raises(WriteError, match=r"cannot create folder .*file\.txt/sub'.*choose another --out"):
        write_text(blocker / "sub" / "r.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    if os.path.isdir("/proc/self"):
        with pytest.raises(WriteError, match="'/proc/x'"):
            check_writable("/proc/x")


def test_check_writable_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "there").mkdir()
    check_writable(tmp_path / "there")
    assert list((tmp_path / "there").iterdir()) == []


def test_cache_dir_error_says_how_to_move_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    monkeypatch.setenv("KELOCATE_CACHE", str(blocker))
    with pytest.raises(WriteError, match="KELOCATE_CACHE"):
        cache_dir("klob")
    monkeypatch.setenv("KELOCATE_CACHE", str(tmp_path / "cache"))
    assert cache_dir("klob").is_dir()


def test_keyed_path_names_an_entry_by_its_whole_key(tmp_path, monkeypatch):
    from kelocate.atomic import key_text, keyed_path, same_key

    monkeypatch.setenv("KELOCATE_CACHE", str(tmp_path / "cache"))
    key = {"model": "abc", "layer": 3, "dtype": "float32", "layers": (1, 2)}
    path = keyed_path("stats", key, ".safetensors", label="layer003")
    assert path.parent == tmp_path / "cache" / "stats" and path.parent.is_dir() and not path.exists()
    assert path.name.startswith("layer003-") and path.name.endswith(".safetensors")
    assert keyed_path("stats", dict(reversed(list(key.items()))), ".safetensors", label="layer003") == path
    assert keyed_path("stats", {**key, "layer": 4}, ".safetensors", label="layer003") != path  # any setting
    assert keyed_path("noise_sigma", key).parent.name == "noise_sigma"
    assert keyed_path("stats", key, root=tmp_path / "mine").parent == tmp_path / "mine"
    assert same_key(key_text(key), key) and same_key({**key, "layers": [1, 2]}, key)  # read back as JSON
    assert not same_key({**key, "layer": 4}, key) and not same_key(None, key) and not same_key("{half", key)
    with pytest.raises(TypeError):
        key_text({"path": tmp_path})  # a key holds JSON values only: name a file by its size and time


def test_atomic_dir_replaces_or_keeps_and_cleans_up(tmp_path):
    dest = tmp_path / "ckpt"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not dest.exists()  # nothing visible until the end
    assert (dest / "a.txt").read_text() == "1"
    with atomic_dir(dest) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]  # replaced as a whole
    with atomic_dir(dest, replace=False) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]  # kept: someone else wrote it first
    with pytest.raises(WriteError, match="No space"), atomic_dir(dest) as tmp:
        _disk_full(tmp / "d.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"] and (dest / "b.txt").is_file()


def test_atomic_files_merge_into_a_folder_that_holds_other_things(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with atomic_files(out) as stage:
        write_text(stage / "KLoB" / "KLoB-c.jsonl", "c")
        write_text(stage / "manifest.json", "{}")
        assert not (out / "manifest.json").exists()
    assert (out / "KLoB" / "KLoB-c.jsonl").read_text() == "c" and (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["KLoB", "manifest.json", "precious.txt"]
    fresh = tmp_path / "new" / "folder"
    with pytest.raises(WriteError), atomic_files(fresh) as stage:
        write_text(stage / "a.json", "{}")
        _disk_full(stage / "b.json")
    assert not (tmp_path / "new").exists()  # the folders made for it are gone too


def test_user_errors_backstop_turns_os_errors_into_one_line(capsys):
    from kelocate.commands.common import user_errors

    @user_errors
    def command() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/result.json")

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'/somewhere/result.json'" in err and "--out" in err

    @user_errors
    def two_line_message() -> None:
        raise KelocateError("first line\nsecond line")

    with pytest.raises(typer.Exit):
        two_line_message()
    assert capsys.readouterr().err.strip() == "error: first line second line"

    @user_errors
    def not_a_file_problem() -> None:
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    with pytest.raises(ConnectionResetError):  # anything else stays a bug with its traceback
        not_a_file_problem()
