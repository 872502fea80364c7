"""One error type for bad user input, and the CLI wrapper that prints it as one line."""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class InputError(Exception):
    """Bad input from the user: a file, a config, a model directory, a feature array.

    The message is a single line that names the file (and dialogue, when there is one) and the
    problem, e.g. ``data.pkl: dialogue 'Ses01F_impro01': 12 labels but 11 sentences``.
    """

    def __init__(self, message: str, *, path: str | None = None, dialogue: str | None = None,
                 advice: str | None = None):
        parts = []
        if path:
            parts.append(str(path))
        if dialogue is not None:
            parts.append(f"dialogue {dialogue!r}")
        parts.append(message if not advice else f"{message}; {advice}")
        super().__init__(": ".join(parts))
        self.path = path
        self.dialogue = dialogue
        self.reason = message  # the problem alone: no file name, no advice (for summaries)
        self.advice = advice


class BackendUnavailableError(InputError):
    """An inference backend cannot run on this machine (its library or device is missing); nothing
    is wrong with the model, and a slower backend is the expected fallback."""


class ExportMismatchError(InputError):
    """A model's export (ONNX files) is missing, incomplete or made from another version of the
    model: the fast backends cannot use it until it is exported again."""


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn an InputError into ``error: ...`` on stderr and exit code 2.

    ``--debug`` anywhere in argv keeps the traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        return int(main(args) or 0)
    except InputError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        sys.stderr.close()
        return 0
