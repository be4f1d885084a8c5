"""Console logging for training commands: LF's own messages at INFO, libraries at WARNING."""

from __future__ import annotations

import logging
import os


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s|%(name)s] %(message)s")
    for name in ("lf_data", "lf_models", "lf_train"):
        logging.getLogger(name).setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_warning()
