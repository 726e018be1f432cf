"""The quiet console: library output goes to train.log, errors still reach the person, known
noise is dropped at its source and nothing else is."""
from __future__ import annotations

import io
import logging
import sys
import warnings

import pytest

import kit.runtime  # noqa: F401  (installs the known-noise filters)
from kit.progress import Console, format_duration


def _console(tmp_path, verbose=False):
    out, err = io.StringIO(), io.StringIO()
    console = Console(verbose=verbose, out=out, err=err)
    console.open_log(tmp_path / "train.log")
    return console, out, err


def test_quiet_routes_library_output_to_the_log_and_errors_to_the_console(tmp_path):
    console, out, err = _console(tmp_path)
    stdout = sys.stdout
    with console.libraries():
        print("a library banner")
        logging.getLogger("somelib").warning("a library warning")
        logging.getLogger("somelib").error("a library error")
        warnings.warn("an old api", UserWarning, stacklevel=1)
        console.say("kit: a line for the person")
        console.detail("[grpo step 1] {'loss': 0.0}")
    assert sys.stdout is stdout  # restored
    console.close()
    log = (tmp_path / "train.log").read_text()
    for text in ("a library banner", "a library warning", "a library error", "an old api", "kit: a line",
                 "[grpo step 1]"):
        assert text in log, text
    assert out.getvalue() == "kit: a line for the person\n"
    assert "a library error" in err.getvalue() and "a library warning" not in err.getvalue()
    assert console.library_warnings == 3


def test_an_exception_inside_propagates_and_restores_the_streams(tmp_path):
    console, _, _ = _console(tmp_path)
    stderr = sys.stderr
    with pytest.raises(RuntimeError, match="real failure"):
        with console.libraries():
            raise RuntimeError("real failure")
    assert sys.stderr is stderr
    console.close()


def test_verbose_leaves_everything_on_the_console(tmp_path, capsys):
    console, out, _ = _console(tmp_path, verbose=True)
    with console.libraries():
        print("a library banner")
        console.detail("[grpo step 1] {'loss': 0.0}")
    console.close()
    assert "a library banner" in capsys.readouterr().out
    assert "[grpo step 1]" in out.getvalue() and "[grpo step 1]" in (tmp_path / "train.log").read_text()


def test_known_noise_is_dropped_at_its_source_and_only_it():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("torch.utils._pytree")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("%s is an Enum subclass and is now natively supported by torch.compile as an opaque value "
                       "type. Calling register_constant() on Enum subclasses is deprecated and will be an error in "
                       "a future release.", "<enum 'KernelPreference'>")
        logger.warning("some other pytree problem")
        logger.error("a pytree error")
    finally:
        logger.removeHandler(handler)
    assert seen == ["some other pytree problem", "a pytree error"]


@pytest.mark.parametrize("seconds,text", [(12, "12 s"), (89, "89 s"), (430, "7.2 min"), (1500, "25 min"),
                                         (3900, "65 min"), (5700, "1 h 35 min")])
def test_durations_read_as_estimates(seconds, text):
    assert format_duration(seconds) == text
