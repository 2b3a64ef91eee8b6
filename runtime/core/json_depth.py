"""How deeply a JSON body nests, checked before it is parsed.

Python's json module parses nested arrays and objects by recursion, so a body of a few thousand
`[` ends in RecursionError (a 500, and a deep stack for every such request). The check here
counts nesting without recursion and without a Python loop over the bytes; every step is one
C-level bytes operation:

1. fast path: a body with no more `[` and `{` bytes in all than the limit cannot nest deeper
   (a typical infer request stops here after two `bytes.count` calls);
2. otherwise escaped backslashes and escaped quotes are dropped, every byte but brackets and
   quotes is deleted, and the string contents (every other piece between quotes) are cut out,
   which leaves the brackets outside strings;
3. their nesting is measured by removing innermost pairs, once per level up to the limit (few
   brackets), or by a running sum in numpy (many).
"""

from __future__ import annotations

import numpy as np

from trident.runtime.errors import InvalidArgumentError

#: Default of --http-max-json-depth.
DEFAULT_MAX_JSON_DEPTH = 64

_KEPT = b'[]{}"'
_DELETE = bytes(byte for byte in range(256) if byte not in _KEPT)
_SQUARE = bytes.maketrans(b"{}", b"[]")
#: Past this many brackets outside strings, numpy's running sum beats one pass per level.
_PAIR_REMOVAL_LIMIT = 1 << 14
_CHUNK = 1 << 20
#: Bytes of a large body looked at first, on their own.
_PREFIX = 1 << 16
_STEP = np.zeros(256, np.int8)
_STEP[ord("[")] = 1
_STEP[ord("]")] = -1


def _brackets_outside_strings(body: bytes) -> bytes:
    """The body's brackets that are not inside JSON strings, `{}` written as `[]`."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = unescaped.translate(_SQUARE, _DELETE)
    return b"".join(kept.split(b'"')[::2])


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body` (0 for a scalar)."""
    return _max_level(_brackets_outside_strings(body))


def _max_level(brackets: bytes) -> int:
    if not brackets:
        return 0
    steps = _STEP[np.frombuffer(brackets, np.uint8)]
    return max(int(np.cumsum(steps, dtype=np.int64).max()), 0)


def _deeper_than(brackets: bytes, max_depth: int) -> bool:
    if len(brackets) > _PAIR_REMOVAL_LIMIT:
        # A running sum, chunk by chunk (bounded memory), stopping at the first chunk too deep.
        level = 0
        view = np.frombuffer(brackets, np.uint8)
        for start in range(0, len(view), _CHUNK):
            sums = np.cumsum(_STEP[view[start : start + _CHUNK]], dtype=np.int32)
            if level + int(sums.max()) > max_depth:
                return True
            level += int(sums[-1])
        return level != 0
    # Each pass removes the innermost level; balanced brackets of depth d vanish in d passes.
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    # Left over: deeper, or brackets that do not balance (the parser would recurse on those
    # too before it noticed, so they are refused here as well).
    return bool(brackets)


def check_json_depth(body: bytes, max_depth: int, what: str = "request") -> None:
    """Raise InvalidArgumentError (400) when `body` nests deeper than `max_depth`."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return
    # A large body that is already too deep at its start (an attack) is refused from its first
    # bytes; cutting there only drops brackets, so the prefix's depth never overstates.
    if len(body) > _PREFIX and _max_level(_brackets_outside_strings(body[:_PREFIX])) > max_depth:
        deeper = True
    else:
        deeper = _deeper_than(_brackets_outside_strings(body), max_depth)
    if deeper:
        raise InvalidArgumentError(
            f"the {what} JSON nests deeper than the {max_depth} levels allowed "
            "(--http-max-json-depth), or its brackets do not balance"
        )
