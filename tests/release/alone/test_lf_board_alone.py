"""`pip install lf-board` brings the whole stack: every LF package and every command."""

from __future__ import annotations

from alone_helpers import LF_PACKAGES, assert_from_wheel, installed, lf, only_in

pytestmark = only_in("lf-board")


def test_lf_board_brings_the_whole_stack():
    import lf_board

    assert_from_wheel(lf_board)
    have = installed()
    assert [name for name in LF_PACKAGES if name in have] == list(LF_PACKAGES)
    assert {"torch", "trl", "gradio", "fastapi"} <= set(have)
    version = lf("version")
    assert version.returncode == 0, version.stdout  # every sibling inside the ranges the others declare
    assert "not installed" not in version.stdout
    usage = lf("--help")
    assert usage.returncode == 0
    assert "not installed here" not in usage.stdout
    for command in ("train", "chat", "api", "eval", "export", "board", "data", "version"):
        assert f"\n  {command} " in usage.stdout
