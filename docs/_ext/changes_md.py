"""``.. markdown-include:: PATH``: include a simple Markdown file as reST.

``CHANGES.md`` stays Markdown (it is read on GitHub and in the sdist), and
the docs need no Markdown parser: this converts the few constructs a
changelog uses, and nothing else.

- ATX headings (``#`` to ``####``);
- paragraphs and ``-``, ``*`` or ``1.`` lists, with continuation lines
  indented as Markdown and reST both expect;
- fenced code blocks (```` ```lang ````);
- inline code (```x```), links (``[text](url)``), ``**bold**``, ``*italic*``.

Outside inline code, characters that mean something to reST and nothing to
Markdown (``|``, a word ending in ``_``, a backslash) are escaped. Anything
else is passed through, so a construct this does not know shows up as a
build warning rather than as silently wrong output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.typing import ExtensionMetadata

_UNDERLINES = {1: "=", 2: "-", 3: "~", 4: "^"}
_HEADING = re.compile(r"^(#{1,4})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def markdown_to_rst(text: str) -> str:
    """The reST form of the Markdown *text* (see the module docstring for what it knows)."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            indent, language = fence.groups()
            out += [f"{indent}.. code-block:: {language or 'text'}", ""]
            index += 1
            while index < len(lines) and not _FENCE.match(lines[index]):
                body = lines[index]
                out.append(f"{indent}   {body[len(indent) :]}" if body.strip() else "")
                index += 1
            out.append("")
            index += 1  # the closing fence
            continue
        heading = _HEADING.match(line)
        if heading:
            marks, title = heading.groups()
            title = inline(title)
            if out and out[-1] != "":
                out.append("")
            out += [title, _UNDERLINES[len(marks)] * len(title)]
            if index + 1 < len(lines) and lines[index + 1].strip():
                out.append("")
        else:
            out.append(inline(line))
        index += 1
    return "\n".join(out) + "\n"


def inline(line: str) -> str:
    """Convert the inline markup of one line."""
    parts: list[str] = []
    position = 0
    for match in _CODE.finditer(line):
        parts.append(_plain(line[position : match.start()]))
        before = line[match.start() - 1] if match.start() else " "
        after = line[match.end()] if match.end() < len(line) else " "
        # reST inline markup must stand apart from letters and digits; "\ " joins it.
        lead = "\\ " if before.isalnum() else ""
        trail = "\\ " if after.isalnum() else ""
        parts.append(f"{lead}``{match.group(1)}``{trail}")
        position = match.end()
    parts.append(_plain(line[position:]))
    return "".join(parts)


def _plain(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)
    return _LINK.sub(lambda match: f"`{match.group(1)} <{match.group(2)}>`__", text)


class MarkdownInclude(Directive):
    """Insert the Markdown file at the given path (relative to this document) as reST."""

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {"encoding": directives.encoding}

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        relative, absolute = env.relfn2path(self.arguments[0], env.docname)
        path = Path(absolute)
        env.note_dependency(relative)
        try:
            text = path.read_text(encoding=self.options.get("encoding", "utf-8"))
        except OSError as error:
            raise self.severe(f"Cannot read {path}: {error}") from error
        rst = markdown_to_rst(text)
        self.state_machine.insert_input(StringList(rst.splitlines(), source=str(path)), str(path))
        return []


def setup(app: Sphinx) -> ExtensionMetadata:
    """Register the ``markdown-include`` directive."""
    app.add_directive("markdown-include", MarkdownInclude)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
