"""The reader of deploy/README.md's trial section (runbook.py): what it takes from the guide, and what it refuses.

The guide itself is executed by conftest.py and test_consortium.py; these checks take a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.runbook import Command, Runbook, environment, parse_commands, read_blocks


def test_the_guide_has_every_step_in_order():
    blocks = read_blocks()
    assert list(blocks) == ["env", "credentials", "coordinator", "register", "hospitals", "nodes", "run", "resume"]
    assert [c.text.split()[:3] for c in blocks["coordinator"]] == [
        ["sarcofed", "deploy", "superlink"],
        ["sarcofed", "deploy", "proxy"],
    ]
    hospitals = [c.text for c in blocks["hospitals"]]
    assert len(hospitals) == 3 and all("\\" not in h and "--site-name" in h for h in hospitals)


def test_continuations_join_and_comments_stay_beside_their_command():
    body = 'sarcofed a --x "1 # not a comment" \\\n    --y 2   # the comment\n# a line of its own\nsarcofed b\n'
    assert parse_commands(body) == [
        Command('sarcofed a --x "1 # not a comment" --y 2', "the comment"),
        Command("sarcofed b", "a line of its own"),
    ]
    with pytest.raises(ValueError, match="line continuation"):
        parse_commands("sarcofed a \\\n")


def test_unmarked_blocks_and_duplicate_names_are_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "## 8. A trial consortium on one machine\n\n<!-- runbook: env -->\n```bash\nexport A=1\n```\n"
        "```bash\nsarcofed x\n```\n"
    )
    with pytest.raises(ValueError, match="1 bash block"):
        read_blocks(readme)
    readme.write_text("## 8. A trial consortium on one machine\n" + "<!-- runbook: a -->\n```bash\nx\n```\n" * 2)
    with pytest.raises(ValueError, match="two runbook blocks named 'a'"):
        read_blocks(readme)


def test_overrides_replace_the_guides_values_and_the_rest_expands():
    exports = parse_commands(
        "export TRIAL=/tmp/t PORT=1   # c\nexport ADDRESS=127.0.0.1:$PORT RUN=\"dir='$TRIAL/runs' n=2\"\n"
    )
    env = environment(exports, {"TRIAL": "/x y", "PORT": "5"}, {"PATH": os.environ["PATH"]})
    assert (env["TRIAL"], env["ADDRESS"], env["RUN"]) == ("/x y", "127.0.0.1:5", "dir='/x y/runs' n=2")
    with pytest.raises(ValueError, match=r"no longer sets \['GONE'\]"):
        environment(exports, {"GONE": "1"}, {"PATH": os.environ["PATH"]})
    with pytest.raises(ValueError, match="only export lines"):
        environment(parse_commands("rm -rf /tmp/t\n"), {}, {"PATH": os.environ["PATH"]})


def test_placeholders_are_the_run_id_or_refused(tmp_path: Path):
    book = Runbook(
        {"PATH": os.environ["PATH"]},
        tmp_path,
        {"x": [Command("echo started run 42"), Command("echo <run-id>")], "y": [Command("echo <node-id>")]},
    )
    first, second = book.run("x")
    assert book.run_ids == [42] and second.stdout.strip() == "42"
    with pytest.raises(AssertionError, match="placeholder"):
        book.run("y")
