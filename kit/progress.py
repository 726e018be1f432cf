"""What a run prints: the kit's own lines and one progress bar per stage on the console;
everything else (library output, the trainers' log dictionaries, sample completions) in the
run's `train.log`. With `verbose`, everything is on the console as well.

Library output is routed, not dropped: errors (logging level ERROR and up) still reach the
console, exceptions propagate as usual, and the rest is in train.log for whoever needs it.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

# Figures shown on a stage's bar, by phase and the trainer's log key (the rest: train.log, metrics.jsonl).
# GRPO's loss is ~0 by construction without KL; its reward and the spread within groups are what move.
BAR_FIGURES = {"priming": {"loss": "loss"}, "grpo": {"reward": "reward", "reward_std": "spread"}}


def format_duration(seconds: float) -> str:
    """`45 s`, `7 min`, `1 h 05 min`: coarse on purpose (these are estimates)."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


class _LogStream(io.TextIOBase):
    """A text stream that appends to train.log (what libraries print while a run is quiet)."""

    def __init__(self, console: "Console"):
        self.console = console

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.console.to_log(text, newline=False)
        return len(text)

    def flush(self) -> None:
        if self.console.log_file:
            self.console.log_file.flush()

    def isatty(self) -> bool:
        return False


class Console:
    """The run's two outputs: the console (few lines, bars) and train.log (everything)."""

    def __init__(self, verbose: bool = False, say: Callable[[str], None] | None = None,
                 out: TextIO | None = None, err: TextIO | None = None, silent: bool = False):
        self.verbose = verbose
        self.silent = silent  # a run's other processes: the main one speaks for them
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._say = say
        self.log_file: TextIO | None = None
        self._handlers: list[logging.Handler] = []
        self.library_warnings = 0

    # ----------------------------------------------------------------- lines
    def say(self, message: str) -> None:
        """A line for the person running it (and for the log)."""
        if self.silent:
            return
        if self._say is not None:
            self._say(message)
        else:
            print(message, file=self.out, flush=True)
        self.to_log(message)

    def detail(self, message: str) -> None:
        """A line for the log (and for the console with --verbose)."""
        if self.verbose and not self.silent:
            print(message, file=self.out, flush=True)
        self.to_log(message)

    def to_log(self, text: str, newline: bool = True) -> None:
        if self.log_file is not None and not self.log_file.closed:
            self.log_file.write(text + ("\n" if newline else ""))

    # ----------------------------------------------------------------- train.log
    def open_log(self, path: Path) -> None:
        """Append everything to `path` from now on, with a header naming the start time."""
        self.log_file = open(path, "a", encoding="utf-8", buffering=1)
        self.to_log(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}")

    def close(self) -> None:
        for handler in self._handlers:
            logging.getLogger().removeHandler(handler)
        self._handlers.clear()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    @contextlib.contextmanager
    def libraries(self) -> Iterator[None]:
        """While inside: library prints, warnings, log records and progress bars go to train.log
        (and the console with verbose); log records at ERROR and above reach the console always."""
        if self.verbose or self.log_file is None:
            yield
            return
        import warnings

        root = logging.getLogger()
        before = list(root.handlers)  # e.g. Unsloth's basicConfig handler, bound to the real stderr
        for handler in before:
            root.removeHandler(handler)
        to_file = _CountingHandler(self, logging.StreamHandler(_LogStream(self)))
        to_file.setLevel(logging.INFO)
        to_console = logging.StreamHandler(self.err)
        to_console.setLevel(logging.ERROR)
        for handler in (to_file, to_console):
            handler.setFormatter(logging.Formatter("[%(name)s|%(levelname)s] %(message)s"))
            root.addHandler(handler)
            self._handlers.append(handler)
        restore = _quiet_libraries()
        stream = _LogStream(self)
        show = warnings.showwarning

        def to_log(message, category, filename, lineno, file=None, line=None):
            self.library_warnings += 1
            self.to_log(warnings.formatwarning(message, category, filename, lineno, line).rstrip())

        warnings.showwarning = to_log
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            warnings.showwarning = show
            restore()
            for handler in (to_file, to_console):
                root.removeHandler(handler)
                if handler in self._handlers:
                    self._handlers.remove(handler)
            for handler in before:
                root.addHandler(handler)

    # ----------------------------------------------------------------- bars
    def bar(self, desc: str, total: int, unit: str, initial: int = 0):
        """One stage's bar on the console (off with verbose: the libraries' own bars are back)."""
        from tqdm.auto import tqdm

        interactive = hasattr(self.err, "isatty") and self.err.isatty()
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.err, leave=True,
                    disable=self.verbose or self.silent, dynamic_ncols=True, mininterval=1.0 if interactive else 30.0,
                    bar_format="{desc}: {n_fmt}/{total_fmt} {unit}s [{elapsed}<{remaining}]{postfix}")


class _CountingHandler(logging.Handler):
    """Forwards to a handler and counts warnings, so the ending can say how many went to train.log."""

    def __init__(self, console: Console, inner: logging.Handler):
        super().__init__()
        self.console, self.inner = console, inner

    def setFormatter(self, fmt) -> None:  # noqa: N802 (logging's name)
        super().setFormatter(fmt)
        self.inner.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.console.library_warnings += 1
        self.inner.emit(record)


def _quiet_libraries() -> Callable[[], None]:
    """Route transformers' and datasets' own handlers to the root logger (train.log) and turn
    their progress bars off; returns the function that undoes it."""
    undo: list[Callable[[], None]] = []
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        undo.append(lambda: (hf_logging.disable_propagation(), hf_logging.enable_default_handler(),
                             bars and hf_logging.enable_progress_bar()))
    except ImportError:
        pass
    try:
        import datasets

        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        undo.append(lambda: bars and datasets.enable_progress_bars())
    except (ImportError, AttributeError):
        pass

    def restore() -> None:
        for fn in reversed(undo):
            fn()

    return restore


def trainer_progress(console: Console, bar, phase: str, figures: Callable[[], dict[str, str]] | None = None):
    """A TrainerCallback: one bar step per optimizer step, the figures that matter on the bar,
    and the trainer's full log dictionary in train.log (metrics.jsonl has them too)."""
    from transformers import TrainerCallback

    class StageProgress(TrainerCallback):
        def __init__(self):
            self.shown: dict[str, str] = {}

        def on_step_end(self, args, state, control, **kwargs):
            if figures is not None:
                self.shown.update(figures())
            bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in self.shown.items()), refresh=False)
            bar.update(state.global_step - bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            console.detail(f"[{phase} step {state.global_step}] "
                           + json.dumps({k: v for k, v in logs.items() if isinstance(v, (int, float, str))}))
            for key, label in BAR_FIGURES.get(phase, {}).items():
                if isinstance(logs.get(key), (int, float)):
                    self.shown[label] = f"{logs[key]:.3g}"

    return StageProgress()


def drop_default_bars(trainer: Any) -> None:
    """Remove the trainer's own console bar and log printer (they are in train.log instead)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(cls)
