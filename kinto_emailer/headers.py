"""Header values the plugin writes: one line each, that every reader shows as written.

Setting a header decodes the RFC 2047 encoded words (``=?charset?q?...?=``) of its value,
and Python 3.11's folder then writes decoded line breaks out raw; readers decode them
too, some again and again. Data would become headers of its own, or a new body.
"""

import re


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters (Unicode category Cc) and line separators."""
_BREAKS = re.compile(r"(?:\s|" + CONTROL.pattern + r")+")
ENCODED_WORD_START = "=?"


def header_value(text: str) -> str:
    """``text`` as one header line that holds no control character and no encoded word.

    Runs of white space and control characters become one space; ``=?``, which every
    encoded word starts with, becomes ``= ?``, so that no value is ever decoded.
    """
    return _BREAKS.sub(" ", text).replace(ENCODED_WORD_START, "= ?").strip()
