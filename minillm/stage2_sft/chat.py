"""Talk to a fine-tuned model in the terminal, one user turn at a time.

Each line you type is wrapped in the same chat template the model was trained on
(`<bos> <|user|> your text <|assistant|>`), the model continues it until it writes `<eos>`, and the
text before `<eos>` is the answer. There is no memory across turns: the SFT data holds single-turn
conversations, so each question starts a fresh conversation.

A line that starts with "/" (after any spaces) is a command for the chat itself, never a prompt, and
only its first word counts ("/quit now" quits): /help lists them,
/reset starts the sampling over (the same seed, so the same answers again), /quit leaves.

The answer's control characters but newline and tab are shown as escapes (`utils.escape_controls`):
a model may write any byte, and an escape sequence would otherwise clear or recolour the terminal.

`chat_loop` reads from and writes to any text streams, so a test can drive it with `io.StringIO`;
`minillm chat --ckpt DIR` calls it with the terminal's stdin and stdout, after a note on stderr when DIR
is a CLM run, which never learnt the template (`template_note`).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import TextIO

import torch

from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage2_sft.template import N_FRAMING_TOKENS, check_room_for_prompt, encode_prompt
from minillm.tokenizer import Tokenizer
from minillm.train.checkpoint import CKPT_NAME, load_checkpoint
from minillm.utils import escape_controls

QUIT = "/quit"
COMMANDS = {
    "/help": "list these commands",
    "/reset": "start the sampling over from its seed (no turn is remembered anyway)",
    QUIT: "leave (or Ctrl-D)",
}


def chat_loop(
    model: GPT,
    tokenizer: Tokenizer,
    input_stream: TextIO,
    output_stream: TextIO,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> int:
    """Read a line, answer it, repeat until `/quit` or end of input. Returns the number of turns."""
    check_room_for_prompt(model.config.block_size, max_new_tokens, "--max-new-tokens")
    room = model.config.block_size - max_new_tokens  # the prompt's share of the context
    model.eval()
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same random draws on any device
    mode = "greedy" if temperature == 0 else f"sampling at temperature {temperature}"
    output_stream.write(f"minillm chat ({mode}). Type a request; each one starts a fresh conversation.\n")
    output_stream.write(command_help())
    turns = 0
    while True:
        output_stream.write("you> ")
        output_stream.flush()
        line = unicodedata.normalize("NFC", input_stream.readline())  # as the corpus and --data are read
        command = line.split()[0] if line.lstrip().startswith("/") else None  # "/quit now" is /quit too
        if not line or command == QUIT:  # "" means end of input (Ctrl-D)
            output_stream.write("\n" if not line else "bye\n")
            return turns
        if not line.strip():
            continue
        if command:
            if command == "/reset":
                generator.manual_seed(seed)
                output_stream.write("(sampling starts over from its seed)\n")
            else:
                unknown = "" if command == "/help" else f"unknown command {command}; "
                output_stream.write(unknown + command_help())
            continue
        if len(encode_prompt(tokenizer, line)) > room:  # generate_answers keeps its end: say so
            output_stream.write(f"(only the end of this request fits the {model.config.block_size}-token context "
                                f"beside a {max_new_tokens}-token answer: the model reads its last "
                                f"{room - (N_FRAMING_TOKENS - 1)} tokens)\n")
        reply = generate_answers(model, tokenizer, [line], max_new_tokens, temperature=temperature,
                                 top_k=top_k, top_p=top_p, generator=generator)[0]
        output_stream.write(f"bot> {escape_controls(reply)}\n")  # an ESC in it must not steer the terminal
        turns += 1


def command_help() -> str:
    """The chat's commands and what each does, on one line."""
    return "commands: " + "; ".join(f"{name} {what}" for name, what in COMMANDS.items()) + "\n"


def template_note(run_dir: str | os.PathLike) -> str | None:
    """A note for a chat with a CLM run, None for a run that learnt the chat template.

    Pretraining (clm.py, whose checkpoints the training loop saves with the stage "clm") teaches a model
    to continue text; it never saw <|user|> and <|assistant|>, so it goes on with the template's text
    instead of answering. SFT teaches the template, and PPO, DPO and GRPO start from an SFT model. A
    checkpoint that names no stage (PPO's and GRPO's, or one saved before stages were) gets no note."""
    path = Path(run_dir)  # (its checkpoint is read a second time, after the model's load: a fraction of a second)
    if load_checkpoint(path if path.is_file() else path / CKPT_NAME).get("stage") != "clm":
        return None
    return (f"{run_dir} is a CLM run, which never saw the chat template: it continues the template's text "
            "instead of answering (chat with an SFT, PPO, DPO or GRPO run for answers)")
