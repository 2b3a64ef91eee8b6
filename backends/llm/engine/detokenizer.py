"""Incremental detokenization and stop strings, per request.

Decoding token by token does not work: a word can take several tokens, a character several byte
tokens, and SentencePiece tokenizers drop a leading space at the start of a text. So, as TGI and
vLLM do, each new token decodes a small window: `prefix_offset..read_offset` (text already
emitted) and `prefix_offset..end`; the delta is the difference. A window that ends in U+FFFD is
an incomplete UTF-8 character and waits for the next token.

Stop strings: the text is searched where a stop string could newly end; on a match the text is
cut before it (or after it with include_stop_str_in_output). While streaming, the last
`max(len(stop)) - 1` characters are held back, because they may be the start of a stop string:
a stop string never leaks, even in part.
"""

from __future__ import annotations

from typing import Any

#: Prompt tokens decoded with the first output tokens, so the first word gets its leading space.
_INITIAL_CONTEXT = 5


class IncrementalDetokenizer:
    """Turns one request's new tokens into text deltas and finds its stop strings."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        stop: list[str],
        include_stop_str_in_output: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_token_ids[-_INITIAL_CONTEXT:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.stop = stop
        self.include_stop = include_stop_str_in_output
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""  # the output text so far (cut at a stop string once one is found)
        self.emitted = 0  # characters of self.text already handed out

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add_token(self, token_id: int) -> str | None:
        """Append a token; returns the stop string when one now ends the text, else None."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return None
        new = full[len(prefix) :]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        search_from = max(0, len(self.text) - self.hold)
        self.text += new
        best: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, search_from)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, s)
        if best is None:
            return None
        at, s = best
        self.text = self.text[: at + len(s)] if self.include_stop else self.text[:at]
        return s

    def take_delta(self, finished: bool) -> str:
        """The text not handed out yet, less what may still be part of a stop string."""
        end = len(self.text) if finished or not self.stop else len(self.text) - self.hold
        if end <= self.emitted:
            return ""
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta

    def token_text(self, token_id: int) -> str:
        """One token's own text (for logprobs)."""
        return self._decode([token_id])
