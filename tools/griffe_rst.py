"""A griffe extension for the API reference: the docstrings are written with Sphinx roles
(``:func:`get_spec```, ``:class:`~dynattn.DynamicConv2d```) and ``Example::`` blocks, which mkdocstrings
renders as Markdown; this turns each role into inline code of the name (``~`` keeps its last part, as Sphinx
does) and ``::`` at a line's end into ``:`` before the indented block."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|py:\w+):`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``text`` with Sphinx roles as inline code and a literal block's ``::`` as ``:``."""
    text = ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.M)


class RstRoles(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
