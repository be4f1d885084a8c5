"""The Train tab's estimate beside Start: peak memory per device and time of the form's run.

Why: "will it fit, and how long will it take?" is answered while the form is filled in, before
anything starts. The numbers are `lf_train.estimate`'s (config.json or a GGUF header read, no weights
loaded) for the very dict Start turns into YAML; this module only words them in the page's language.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lf_board.train_form import build_config, place_in_runs_root
from lf_board.translations import text

if TYPE_CHECKING:
    from lf_board.runs import RunsRoot
    from lf_train.estimate import Estimate

logger = logging.getLogger(__name__)
THIS_MACHINE = ""
"""The device dropdown's value for this machine (its GPU, else its CPU): what `lf train` runs on."""


def device_choices() -> list[tuple[str, str]]:
    """The device dropdown: this machine first, then every device `lf estimate --device` knows."""
    from lf_train.estimate import known_devices

    return [("—", THIS_MACHINE)] + [(name, name) for name in known_devices()]


def form_estimate(values: dict[str, Any], extra_yaml: str, device: str, lang: str, runs: RunsRoot) -> str:
    """The block for a filled form: the config Start would launch (folders placed under the runs root as
    Start places them), estimated on `device` ("" = this machine)."""
    try:
        config = build_config(values, extra_yaml)
        place_in_runs_root(config, runs)
    except Exception as err:  # noqa: BLE001 - bad input: one line in the block, never a traceback
        return failed(lang, err)
    return config_estimate(config, device, lang)


def config_estimate(config: dict[str, Any], device: str, lang: str) -> str:
    """The Markdown block for an `lf train` config, or the one line saying why there is no estimate."""
    try:
        from lf_train.estimate import estimate

        result = estimate(config, device=device or None, source="the board's form")
    except Exception as err:  # noqa: BLE001 - ConfigError and anything an odd model raises: one line
        return failed(lang, err)
    return render(result, lang)


def render(result: Estimate, lang: str) -> str:
    """Parameters, peak memory with its main parts, speed and run time; when it does not fit, a warning
    with the keys that would make it fit (the estimator's own suggestions)."""
    f = result.figures()
    if f["steps"]:
        speed = text(lang, "msg.estimate_speed", tokens_per_second=f["tokens_per_second"], duration=f["duration"],
                     steps=f["steps"])
    else:
        speed = text(lang, "msg.estimate_speed_unknown", tokens_per_second=f["tokens_per_second"])
    lines = [
        f"**{text(lang, 'msg.estimate_title')}** · {f['method']} · {f['device']} · {f['precision']}",
        "",
        "- " + text(lang, "msg.estimate_params", trainable=f["trainable"], total=f["total"], percent=f["percent"]),
        "- " + text(lang, "msg.estimate_memory", peak=f["peak"], memory=f["memory"]),
        "  - " + text(lang, "msg.estimate_parts", weights=f["weights"], gradients=f["gradients"],
                    optimizer=f["optimizer"], activations=f["activations"], logits=f["logits"],
                    overhead=f["overhead"]),
        "- " + speed,
    ]
    if not result.fits:
        if result.suggestions:
            warning = text(lang, "msg.estimate_too_big", memory=f["memory"], device=f["device"],
                           fixes="; ".join(f"`{s}`" for s in result.suggestions))
        else:
            warning = text(lang, "msg.estimate_no_fix", memory=f["memory"], device=f["device"])
        lines += ["", f"**⚠️ {warning}**"]
    return "\n".join(lines)


def failed(lang: str, err: BaseException) -> str:
    """One line: the library's message (English, like every detail the board shows), never a traceback."""
    from lf_data.errors import LFError

    logger.debug("no estimate", exc_info=err)
    detail = str(err) if isinstance(err, (LFError, ValueError)) else f"{type(err).__name__}: {err}"
    detail = " ".join(detail.split()).replace("<", "&lt;") or type(err).__name__  # one line, no stray HTML
    return f"**{text(lang, 'msg.estimate_failed')}** {detail}"
