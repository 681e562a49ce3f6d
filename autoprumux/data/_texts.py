"""How much of a text is read: the one rule every text is held to where it enters (torch-free).

- Tokenising: a text is cut to its first `max_text_chars(max_seq_len)` characters
  (`CHARS_PER_TOKEN` per token) before it is tokenised (`clip_text`, applied by
  `data.encode`), so one long text costs bounded work and memory wherever it comes from.
- Data files: a value longer than `MAX_VALUE_CHARS` is refused, naming the row, before it costs
  memory (`check_value_length`).
"""

from __future__ import annotations

from typing import Any

from autoprumux.errors import ConfigError

# Characters of a text read per token of `max_seq_len`. WordPiece makes at least one token of
# every word (split at blanks and punctuation) of up to 100 characters, and one [UNK] of a longer
# word, so a text averages more characters per token than this only with runs of dozens of
# blanks between its words or with words over 100 characters (base64, hashes); prose, code and
# URLs average a few. The cut changes no token of a text that averages at most this many over
# its first `max_seq_len` tokens.
CHARS_PER_TOKEN = 128
# The longest value a data file may hold, in characters: the cut of a max_seq_len of 8,192, more
# positions than a BERT has, so no text the cut keeps is refused. A longer value is almost always
# a broken file (a quote left open makes the rest of a CSV one field).
MAX_VALUE_CHARS = CHARS_PER_TOKEN * 8192


def max_text_chars(max_seq_len: int) -> int:
    """The characters of a text read before tokenising it to `max_seq_len` tokens."""
    return CHARS_PER_TOKEN * max_seq_len


def clip_text(text: str, max_seq_len: int) -> str:
    """`text` cut to its first `max_text_chars(max_seq_len)` characters. Tokenised, it gives the
    same first `max_seq_len` tokens as the whole text unless those characters hold fewer
    (more than `CHARS_PER_TOKEN` characters per token)."""
    limit = max_text_chars(max_seq_len)
    return text if len(text) <= limit else text[:limit]


def check_value_length(where: str, value: Any) -> None:
    """A ConfigError naming `where` when `value` is a string of more than `MAX_VALUE_CHARS`."""
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ConfigError(
            f"{where}: a value of {len(value):,} characters, more than the limit of "
            f"{MAX_VALUE_CHARS:,}; {TOO_LONG}"
        )


# the fix named for a value over `MAX_VALUE_CHARS` (by a CSV reader's field limit too)
TOO_LONG = (
    f"a model reads only a text's first {CHARS_PER_TOKEN} characters per token of max_seq_len, "
    "so cut the long texts, or fix the file where a quote was left open or line breaks were lost"
)
