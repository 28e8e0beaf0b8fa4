"""The API's JSON parser: DRF's, with a bound on how deeply a body may nest.

Its own module: DRF imports the parser classes while `rest_framework.views` is still
loading, so this must not import the views (zenith.api does).
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers

from tickets.text import json_depth

# The deepest nesting of arrays and objects an API body may have; Zenith's deepest is 3.
MAX_JSON_DEPTH = 32


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing a body nested deeper than MAX_JSON_DEPTH (400): deeper
    ones only make validation and error messages recurse, past Python's limit a 500."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            data = None
        else:
            if json_depth(data) <= MAX_JSON_DEPTH:
                return data
        raise exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH}")
