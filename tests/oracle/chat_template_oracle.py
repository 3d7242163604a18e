#!/usr/bin/env python3
"""Reference chat template rendering with jinja2, configured as Hugging Face transformers does.

transformers (utils/chat_template_utils.py, _compile_jinja_template) renders chat templates with
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) plus the loopcontrols
extension and its {% generation %} tag, overrides the tojson filter with
json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False), and adds the
globals raise_exception(message) -> TemplateError and strftime_now(format).

Usage:
  chat_template_oracle.py render CASES.json   -> JSON list on stdout, one entry per case:
      {"ok": true, "out": "..."} or {"ok": false, "error": "..."}
    CASES.json is a list of {"template": str, "context": {...}}.
  chat_template_oracle.py gguf-template MODEL.gguf  -> the tokenizer.chat_template string
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(Extension):
    """transformers' AssistantTracker tag; renders its body unchanged when tracking is off."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body)


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_cases(path):
    env = make_env()
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    for case in cases:
        try:
            out = env.from_string(case["template"]).render(**case["context"])
            results.append({"ok": True, "out": out})
        except Exception as e:  # every jinja2 failure counts as "the template raised"
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    sys.stdout.write(json.dumps(results, ensure_ascii=True))


def gguf_template(path):
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.chat_template"]
    sys.stdout.buffer.write(bytes(field.parts[field.data[0]]))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "render":
        render_cases(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "gguf-template":
        gguf_template(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
