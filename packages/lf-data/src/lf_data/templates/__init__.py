"""Chat templates: the registry (`TEMPLATES`) and `get_template`."""

from lf_data.templates.registry import TEMPLATES, get_template, register
from lf_data.templates.template import AutoTemplate, Template

__all__ = ["TEMPLATES", "AutoTemplate", "Template", "get_template", "register"]
