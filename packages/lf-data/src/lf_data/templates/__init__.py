"""Chat templates: the registry (`TEMPLATES`), `get_template` and the check against a tokenizer."""

from lf_data.templates.conformance import check_against_tokenizer
from lf_data.templates.registry import TEMPLATES, get_template, register
from lf_data.templates.template import AutoTemplate, Template, Thought
from lf_data.templates.tools import TOOL_FORMATS, ToolFormat

__all__ = ["TEMPLATES", "TOOL_FORMATS", "AutoTemplate", "Template", "Thought", "ToolFormat",
           "check_against_tokenizer", "get_template", "register"]
