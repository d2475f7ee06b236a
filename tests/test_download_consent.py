"""The download question: asked once on a terminal only, its answer remembered per backbone, no answer means no.

No test needs a real terminal: the terminal check and the reading of an answer are passed in.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from scanlearn.download_consent import (
    answers_file, download_wanted, DownloadOffer, on_terminal, read_line,
)
from scanlearn.errors import ConfigError

pytestmark = pytest.mark.timeout(60)
BACKBONE = "timm:vit_small_patch14_dinov2.lvd142m"


class Replies:
    """Stands in for the person: each call records the prompt and gives the next reply (or raises it)."""

    def __init__(self, *replies: str | BaseException) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.replies:
            raise EOFError
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply + "\n"


def never(prompt: str) -> str:
    pytest.fail(f"asked although it must not: {prompt}")


def terminal() -> bool:
    return True


def no_terminal() -> bool:
    return False


@pytest.fixture
def offer() -> DownloadOffer:
    return DownloadOffer("dinov2-vits14", BACKBONE, 88.3, (Path.home() / ".cache" / "huggingface" / "hub",))


@pytest.fixture
def file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "scanlearn" / "downloads.json"


def test_yes_is_remembered_and_later_runs_do_not_ask(offer, file, caplog):
    replies = Replies("y")
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        assert download_wanted(offer, terminal, replies, file) is True
    assert replies.prompts == [offer.question()]
    question = replies.prompts[0]
    assert "dinov2-vits14" in question and "about 88 MB, once" in question and "[y/N]" in question
    assert "into ~/.cache/huggingface/hub)" in question and "\n" not in question
    assert json.loads(file.read_text()) == {BACKBONE: True}
    assert "remembered your answer (yes)" in caplog.text and "delete that file" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        assert download_wanted(offer, terminal, never, file) is True
    lines = caplog.text.strip().splitlines()
    assert len(lines) == 1 and "yes, as answered before" in lines[0]
    assert "--no-download" in lines[0] and "delete that file to be asked again" in lines[0]


@pytest.mark.parametrize("reply", ["n", "", " No "])
def test_no_and_a_bare_enter_are_remembered_as_no(offer, file, reply):
    assert download_wanted(offer, terminal, Replies(reply), file) is False
    assert json.loads(file.read_text()) == {BACKBONE: False}
    assert download_wanted(offer, terminal, never, file) is False


def test_without_a_terminal_nothing_is_asked_and_no_remembered_yes_is_used(offer, file):
    assert download_wanted(offer, no_terminal, never, file) is False
    assert not file.exists()
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps({BACKBONE: True}))
    assert download_wanted(offer, no_terminal, never, file) is False


@pytest.mark.parametrize("ending", [EOFError(), KeyboardInterrupt()], ids=["end-of-input", "ctrl-c"])
def test_no_answer_means_no_this_time_and_the_next_run_asks_again(offer, file, caplog, ending):
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        assert download_wanted(offer, terminal, Replies(ending), file) is False
    assert not file.exists() and "the next run asks again" in caplog.text
    assert download_wanted(offer, terminal, Replies("yes"), file) is True


def test_other_replies_are_asked_again_a_few_times(offer, file):
    replies = Replies("maybe", "YES")
    assert download_wanted(offer, terminal, replies, file) is True
    assert replies.prompts == [offer.question(), "Please answer y or n: "]
    stubborn = Replies("a", "b", "c", "y")
    assert download_wanted(offer, terminal, stubborn, file.with_name("other.json")) is False
    assert len(stubborn.prompts) == 3 and not file.with_name("other.json").exists()


def test_without_a_reader_only_remembered_answers_count(offer, file):
    assert download_wanted(offer, terminal, None, file) is False and not file.exists()
    download_wanted(offer, terminal, Replies("y"), file)
    assert download_wanted(offer, terminal, None, file) is True


def test_answers_are_remembered_per_backbone(offer, file):
    download_wanted(offer, terminal, Replies("n"), file)
    other = DownloadOffer("clip-vitb16", "timm:vit_base_patch16_clip_224.openai", 350.0, offer.folders)
    replies = Replies("y")
    assert download_wanted(other, terminal, replies, file) is True and len(replies.prompts) == 1
    assert json.loads(file.read_text()) == {BACKBONE: False, other.backbone: True}


def test_an_answer_that_cannot_be_written_still_counts_this_time(offer, tmp_path, caplog):
    (tmp_path / "a file").write_text("")
    unwritable = tmp_path / "a file" / "downloads.json"
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        assert download_wanted(offer, terminal, Replies("y"), unwritable) is True
    assert "could not remember the answer" in caplog.text and "the next run asks again" in caplog.text


def test_a_damaged_answers_file_is_refused_naming_the_fix(offer, file):
    file.parent.mkdir(parents=True)
    for text in ("not json", json.dumps({BACKBONE: "yes"}), "[true]"):
        file.write_text(text)
        with pytest.raises(ConfigError, match="delete it to be asked again"):
            download_wanted(offer, terminal, never, file)


def test_the_answers_file_follows_xdg_config_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert answers_file() == tmp_path / "scanlearn" / "downloads.json"
    for unset in ("", "relative/folder"):
        monkeypatch.setenv("XDG_CONFIG_HOME", unset)
        assert answers_file() == Path.home() / ".config" / "scanlearn" / "downloads.json"


def test_the_prompt_goes_to_stderr_and_end_of_input_raises(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert read_line("Download? [y/N] ") == "y\n"
    with pytest.raises(EOFError):
        read_line("Download? [y/N] ")
    out, err = capsys.readouterr()
    assert out == "" and err == "Download? [y/N] Download? [y/N] \n"


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("stdin, stderr, expected", [(True, True, True), (True, False, False), (False, True, False)])
def test_a_terminal_is_stdin_and_stderr_both_ttys(monkeypatch, stdin, stderr, expected):
    monkeypatch.setattr(sys, "stdin", Stream(stdin))
    monkeypatch.setattr(sys, "stderr", Stream(stderr))
    assert on_terminal() is expected
