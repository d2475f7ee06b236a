"""Whether a folder run may download a pretrained backbone: asked once on a terminal, the answer remembered.

A run on the user's own folder clusters far better with a pretrained backbone, but its weights are a download
of tens of megabytes. When a person is there to answer (stdin and stderr are terminals), the run asks once,
naming the backbone, its size and where it goes; the answer is remembered per backbone in
``$XDG_CONFIG_HOME/scanlearn/downloads.json`` (default ``~/.config/scanlearn/downloads.json``), so later runs do
not ask again. Without a terminal nothing is asked and no remembered answer is used: scripts decide with
``--allow-download`` / ``--no-download``. End of input or Ctrl-C at the question means no for this run only
(not remembered: it was no answer); a reply other than y/n is asked again, at most ``ATTEMPTS`` times.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ConfigError
from .runs.fsutil import atomic_write_bytes

LOG = logging.getLogger(__name__)

ANSWERS_FILE = "downloads.json"
YES = ("y", "yes")
NO = ("", "n", "no")
ATTEMPTS = 3
CHANGE = "--allow-download or --no-download decide a single run; delete that file to be asked again"


@dataclass(frozen=True)
class DownloadOffer:
    """A download the run could make: the preset it gives, its backbone, its size and the folders it goes into."""

    preset: str
    backbone: str
    megabytes: float
    folders: tuple[Path, ...]

    @property
    def where(self) -> str:
        """The download folders as the user reads them (``~`` for the home folder)."""
        return " and ".join(shown(folder) for folder in self.folders)

    def question(self) -> str:
        """The one question asked on the terminal."""
        return (f"Download the pretrained backbone {self.preset} (about {self.megabytes:.0f} MB, once, into "
                f"{self.where}) for better clusters in minutes? [y/N] ")


def shown(path: Path) -> str:
    """``path`` with the home folder written ``~``, as the user would type it."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def answers_file() -> Path:
    """Where answers are remembered: ``$XDG_CONFIG_HOME/scanlearn/downloads.json``, default under ``~/.config``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".config") / "scanlearn" / ANSWERS_FILE


def on_terminal() -> bool:
    """Whether a person can answer: stdin and stderr are both terminals."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stderr))


def read_line(prompt: str) -> str:
    """Like ``input``, but the prompt goes to stderr (stdout carries results): one line of stdin, EOFError at its end."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    try:
        line = sys.stdin.readline()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        raise
    if not line:
        sys.stderr.write("\n")
        raise EOFError
    return line


def download_wanted(offer: DownloadOffer, terminal: Callable[[], bool] = on_terminal,
                    read: Callable[[str], str] | None = read_line, file: Path | None = None) -> bool:
    """Whether to download ``offer``: never without a terminal; on one, the remembered answer, else the question
    (``read`` None: remembered answers only), its answer remembered in ``file``."""
    if not terminal():
        return False
    path = file or answers_file()
    remembered = read_answers(path).get(offer.backbone)
    if remembered is not None:
        LOG.info(f"download of {offer.preset}: {word(remembered)}, as answered before ({shown(path)}); {CHANGE}")
        return remembered
    answer = ask(offer, read) if read is not None else None
    if answer is None:
        LOG.info(f"no answer: {offer.preset} is not downloaded this time, and the next run asks again")
        return False
    remember(path, offer.backbone, answer)
    return answer


def ask(offer: DownloadOffer, read: Callable[[str], str]) -> bool | None:
    """The person's y/n to ``offer``; None at end of input, on Ctrl-C or after ``ATTEMPTS`` replies that are neither."""
    prompt = offer.question()
    try:
        for _ in range(ATTEMPTS):
            reply = read(prompt).strip().lower()
            if reply in YES or reply in NO:
                return reply in YES
            prompt = "Please answer y or n: "
    except (EOFError, KeyboardInterrupt):
        pass
    return None


def read_answers(path: Path) -> dict[str, bool]:
    """The answers remembered in ``path`` (none when it does not exist); a damaged file is refused, naming the fix."""
    if not path.is_file():
        return {}
    try:
        answers = json.loads(path.read_text())
    except (OSError, ValueError):
        answers = None
    if not isinstance(answers, dict) or not all(isinstance(value, bool) for value in answers.values()):
        raise ConfigError(f"{path} is not a record of download answers; delete it to be asked again")
    return answers


def remember(path: Path, backbone: str, answer: bool) -> None:
    """Add ``answer`` for ``backbone`` to ``path`` and say so; a file that cannot be written only means asking again."""
    answers = {**read_answers(path), backbone: answer}
    try:
        atomic_write_bytes(path, lambda f: f.write(json.dumps(answers, indent=1, sort_keys=True).encode()))
    except OSError as exc:
        LOG.info(f"could not remember the answer in {shown(path)} ({exc}); the next run asks again")
        return
    LOG.info(f"remembered your answer ({word(answer)}) in {shown(path)}: later runs do not ask; {CHANGE}")


def word(answer: bool) -> str:
    """``yes`` or ``no``."""
    return "yes" if answer else "no"
