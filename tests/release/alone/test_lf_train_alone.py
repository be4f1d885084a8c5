"""`pip install lf-train`: training with every stage's dependencies, and no web UI."""

from __future__ import annotations

from alone_helpers import LF_PACKAGES, assert_from_wheel, installed, lf, only_in

pytestmark = only_in("lf-train")


def test_lf_train_alone_brings_trl_but_no_ui():
    import lf_train

    assert_from_wheel(lf_train)
    have = installed()
    assert {"torch", "trl", "peft"} <= set(have)
    assert "gradio" not in have
    assert [name for name in LF_PACKAGES if name in have] == list(LF_PACKAGES[:5])
    assert lf("version").returncode == 0
