"""The chat template: how a (prompt, response) pair becomes one sequence of token ids.

A pretrained GPT only continues text. To make it *answer*, we show it thousands of conversations
written in one fixed format, so that it learns "after the assistant marker comes an answer, and
the answer ends with <eos>". The format is written here and nowhere else:

    <bos> <|user|> ␣prompt <|assistant|> ␣response <eos>

- `<bos>` opens every conversation, so the first real token always has the same left context.
- `<|user|>` and `<|assistant|>` are *special* ids taken from the tokenizer (`tokenizer.user_id`,
  `tokenizer.assistant_id`). We build the sequence from ids, never by pasting the strings
  "<|user|>" into text and encoding it: a user who types "<|assistant|>" in a question gets those
  characters encoded as ordinary text, and cannot forge a role change.
- The prompt and response are encoded with one leading space (" " + text.strip()), so their first
  word is the same token as in running prose (" Tarsk", not "Tarsk"): a fact the model read during
  pretraining is then one familiar token sequence away. There are no newlines between the parts;
  the role tokens themselves are the separators.
- `<eos>` ends the answer. The model must learn to produce it, or it would never stop talking.

The loss mask says which tokens the model is trained to predict: only the response and its
`<eos>`. The prompt is context, not something to imitate; training on it would teach the model to
write questions (and spend capacity on the user's phrasing). `loss_mask[t]` is True when token t
is a *target*, so the prediction made at position t-1 is scored.

Examples longer than the context window lose prompt tokens from the left (the end of a prompt,
where the actual request usually sits, is kept) and are counted; an example whose response (with
`<eos>`) leaves no room for the three framing tokens and one prompt token is skipped and counted,
never cut silently, because a response without its `<eos>` would teach the model to ramble past
the window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from minillm.errors import ConfigError
from minillm.tokenizer import Tokenizer

# Framing tokens around the text: <bos>, <|user|>, <|assistant|>, and the closing <eos>.
N_FRAMING_TOKENS = 4


@dataclass
class ChatExample:
    """One conversation as the model sees it in training."""

    ids: list[int]  # (T,) the whole template, <bos> ... <eos>
    loss_mask: list[bool]  # (T,) True where the token is a target: response tokens and <eos>
    prompt_tokens_dropped: int = 0  # prompt tokens cut from the left to fit the context


@dataclass
class TemplateStats:
    """What happened while encoding a data set: nothing is dropped without being counted here."""

    encoded: int = 0
    truncated: int = 0  # examples whose prompt lost tokens from the left
    prompt_tokens_dropped: int = 0
    skipped: int = 0  # examples whose response (with <eos>) left no room for one prompt token
    skipped_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log; it names the first skipped examples, so that they can be found."""
        named = ", ".join(self.skipped_ids[:5]) + (", ..." if len(self.skipped_ids) > 5 else "")
        return (f"{self.encoded} examples encoded, {self.truncated} with a truncated prompt "
                f"({self.prompt_tokens_dropped} prompt tokens dropped), {self.skipped} skipped "
                f"because the response leaves no room for a prompt in the context"
                + (f" (ids {named})" if named else ""))


def _text_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Ordinary text -> ids, with the single leading space the template uses."""
    return tokenizer.encode(" " + text.strip())


def encode_prompt(tokenizer: Tokenizer, prompt: str, max_len: int | None = None) -> list[int]:
    """`<bos> <|user|> prompt <|assistant|>`: what the model is given to start an answer.

    With `max_len`, prompt tokens are dropped from the left until the whole fits.
    """
    prompt_ids = _text_ids(tokenizer, prompt)
    if max_len is not None:
        room = max(max_len - (N_FRAMING_TOKENS - 1), 0)  # a prompt has 3 of the 4 framing tokens: no <eos>
        prompt_ids = prompt_ids[len(prompt_ids) - room:] if len(prompt_ids) > room else prompt_ids
    return [tokenizer.bos_id, tokenizer.user_id, *prompt_ids, tokenizer.assistant_id]


def check_room_for_prompt(block_size: int, max_new_tokens: int, setting: str, context: str = "") -> None:
    """ConfigError unless `max_new_tokens` leaves room in the context for a prompt of one token or more.

    A prompt is cut from the left to fit the block_size - max_new_tokens columns the answer leaves
    (`encode_prompt`). Leave it too few and the whole question is cut away: the model then answers
    `<bos> <|user|> <|assistant|>`, an empty question, without a word of warning (and an RL policy
    trains on it). `setting` names the value to lower (e.g. "PPOConfig.max_new_tokens"); `context` the
    setting of block_size, where it is not yet trained into a model (the pipeline's "clm.model.block_size").
    """
    largest = block_size - (N_FRAMING_TOKENS - 1) - 1  # the prompt's 3 framing tokens, and 1 of its own
    if max_new_tokens > largest:
        raise ConfigError(f"{setting}={max_new_tokens} leaves no room for a prompt in the model's context "
                          f"({block_size} tokens): the largest allowed is {largest}; lower it"
                          + (f", or raise {context}" if context else ""))


def encode_example(
    tokenizer: Tokenizer, prompt: str, response: str, max_len: int, train_on_prompt: bool = False
) -> ChatExample | None:
    """The full template with its loss mask, or None if the response with `<eos>` leaves no room for
    the framing tokens and one prompt token.

    `max_len` is the context length (the model's block_size). The response is never cut.
    `train_on_prompt` (an experiment, off by default) makes every token after `<bos>` a target.
    """
    prompt_ids = _text_ids(tokenizer, prompt)
    response_ids = [*_text_ids(tokenizer, response), tokenizer.eos_id]
    room_for_prompt = max_len - (N_FRAMING_TOKENS - 1) - len(response_ids)
    if room_for_prompt < 1:  # not even one prompt token beside the full response: skip
        return None
    dropped = max(len(prompt_ids) - room_for_prompt, 0)
    prompt_ids = prompt_ids[dropped:]
    head = [tokenizer.bos_id, tokenizer.user_id, *prompt_ids, tokenizer.assistant_id]
    return ChatExample(
        ids=head + response_ids,
        loss_mask=[False] + [train_on_prompt] * (len(head) - 1) + [True] * len(response_ids),
        prompt_tokens_dropped=dropped,
    )


def encode_records(
    tokenizer: Tokenizer, records: Iterable[dict], max_len: int, train_on_prompt: bool = False
) -> tuple[list[ChatExample], TemplateStats]:
    """Encode every record ({"id", "prompt", "response", ...}); return examples and what was cut."""
    examples, stats = [], TemplateStats()
    for rec in records:
        ex = encode_example(tokenizer, rec["prompt"], rec["response"], max_len, train_on_prompt)
        if ex is None:
            stats.skipped += 1
            stats.skipped_ids.append(str(rec.get("id", "?")))
            continue
        stats.encoded += 1
        if ex.prompt_tokens_dropped:
            stats.truncated += 1
            stats.prompt_tokens_dropped += ex.prompt_tokens_dropped
        examples.append(ex)
    return examples, stats


def decode_response(tokenizer: Tokenizer, new_ids: list[int]) -> str:
    """Generated ids -> the answer text: everything before the first `<eos>`, specials removed."""
    if tokenizer.eos_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.eos_id)]
    return tokenizer.decode(new_ids, skip_special=True).strip()


def show_example(tokenizer: Tokenizer, example: ChatExample) -> str:
    """A table of the sequence, one token per line, marking the tokens that count in the loss."""
    lines = ["  pos  loss  token"]
    for t, (i, counts) in enumerate(zip(example.ids, example.loss_mask, strict=True)):
        lines.append(f"  {t:3d}  {'  * ' if counts else '    '}  {tokenizer.id_to_piece(i)!r}")
    return "\n".join(lines)
