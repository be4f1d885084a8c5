"""Chat templates: the registry (`TEMPLATES`), `get_template` and the check against a tokenizer."""

from lf_data.templates.conformance import check_against_tokenizer
from lf_data.templates.registry import TEMPLATES, get_template, register
from lf_data.templates.template import AutoTemplate, Template, Thought
from lf_data.templates.tools import TOOL_FORMATS, ToolFormat

__all__ = ["TEMPLATES", "TOOL_FORMATS", "AutoTemplate", "Template", "Thought", "ToolFormat",
           "check_against_tokenizer", "get_template", "register", "with_options"]


def with_options(template: Template | AutoTemplate, data_args: object) -> Template | AutoTemplate:
    """The template with the data keys that change how it writes: `default_system`, `tool_format` and
    `preserve_thinking` (a tokenizer's own template, `AutoTemplate`, is used as it is; lf-serve passes
    default_system to it as a system message)."""
    import dataclasses

    if not isinstance(template, Template):
        return template
    default_system = getattr(data_args, "default_system", None)
    if default_system is not None and default_system != template.default_system:
        template = dataclasses.replace(template, default_system=default_system)
    tool_format = getattr(data_args, "tool_format", None)
    if tool_format and tool_format != template.tool_format:
        template = dataclasses.replace(template, tool_format=tool_format)
    if getattr(data_args, "preserve_thinking", False) and template.thought is not None:
        template = dataclasses.replace(template, thought=dataclasses.replace(template.thought, strip_history=False))
    return template
