"""The errors a user of minillm can meet, each with a message that names the problem and the fix.

Everything that can go wrong because of *input* (a config value, a data file, a tokenizer or
checkpoint file, a command-line argument) raises a subclass of `MinillmError`. The command line
catches exactly these and prints one clear line (exit code 2, argparse's code for a bad argument)
instead of a traceback; any other exception is a bug in minillm and keeps its traceback (exit code
1). Scripts (the lessons, bench/) do the same with `one_line_errors()`, which also ends them as a
command ends when its output is cut short or closed (minillm.console).
"""

import sys
from pathlib import Path
from types import TracebackType

from minillm.console import discard_stdout, stand_in_for_closed_output, write_lines_as_they_come


class MinillmError(Exception):
    """Base class: a problem with the user's input, explained in plain words."""


class ConfigError(MinillmError, ValueError):
    """A configuration value is out of range or inconsistent with another one."""


class DataError(MinillmError, ValueError):
    """A corpus, JSONL or preferences file is missing, empty or malformed."""


class TokenizerError(MinillmError, ValueError):
    """A tokenizer cannot be trained, loaded or used as asked."""


class CheckpointError(MinillmError, RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the model asked for."""


class ModelInputError(MinillmError, ValueError):
    """Ids, masks or lengths given to a model do not fit its configuration."""


class TrainingError(MinillmError, RuntimeError):
    """Training had to stop (e.g. the loss became NaN); a checkpoint saved before it, if any, is kept."""


class RunLockedError(MinillmError, RuntimeError):
    """Another process is writing into the same run folder, or into the same rankings file (annotate)."""


def one_line_errors() -> None:
    """For a script (a lesson, a bench/ script, `python -m minillm.datasets`): it ends as a `minillm`
    command does (cli.main). A MinillmError that nothing caught prints as one line naming the problem
    and the fix, and ends it with 2; a reader that left (`python lessons/01_tokenizer.py | head`) ends
    it quietly with 141; any other exception is a bug and keeps its traceback (and 1). A stdout or
    stderr closed at the start is /dev/null (`stand_in_for_closed_output`), and stdout is written a
    line at a time (`write_lines_as_they_come`)."""
    stand_in_for_closed_output()
    write_lines_as_they_come()

    def excepthook(kind: type[BaseException], err: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(kind, BrokenPipeError):  # the reader has all it wanted, nothing went wrong
            discard_stdout()
            raise SystemExit(141)  # 128 + SIGPIPE, as cli.main returns (Python exits with the code a hook raises)
        if issubclass(kind, MinillmError):
            print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
            raise SystemExit(2)  # as cli.main returns for it (a hook that returns ends the script with 1)
        sys.__excepthook__(kind, err, traceback)

    sys.excepthook = excepthook
