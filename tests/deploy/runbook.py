"""deploy/README.md's trial consortium (its last section) as steps a test executes, word for word.

Each ```bash block there follows a ``<!-- runbook: NAME -->`` mark. The ``env`` block holds only
``export`` lines; a test gives some of those variables its own values (a temporary folder, free
ports), and every later command runs with the result. ``run`` executes a block's commands one after
the other, as a person types them (bash, ``set -euo pipefail``, in the checkout with the virtual
environment first on PATH); ``start`` starts a block's long-running commands, one process each, as
"each in a terminal of its own". What a comment beside a command says a person does, the runner does:
``<run-id>`` is the number the last ``started run N`` line printed, and ``until "TEXT", then Ctrl-C``
follows the command's output until TEXT shows, then sends SIGINT.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.launch import Managed, start

REPO = Path(__file__).resolve().parents[2]
README = REPO / "deploy" / "README.md"
SECTION_TITLE = "A trial consortium on one machine"
BLOCK = re.compile(r"<!-- runbook: ([\w-]+) -->\s*```bash\n(.*?)```", re.S)
UNTIL = re.compile(r'until "([^"]+)", then Ctrl-C')
STARTED = re.compile(r"started run (\d+)")


@dataclass(frozen=True)
class Command:
    """One command of the guide (continuation lines joined) and the comment the guide puts beside it."""

    text: str
    comment: str = ""


def _split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at a `#` after whitespace, outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def parse_commands(body: str) -> list[Command]:
    commands, pending, comments = [], "", []
    for raw in body.splitlines():
        text, comment = _split_comment(raw)
        if comment:
            comments.append(comment)
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        text = (pending + text.strip()).strip()
        pending = ""
        if text:  # a comment on a line of its own belongs to the command below it
            commands.append(Command(text, " ".join(comments)))
            comments = []
    if pending:
        raise ValueError(f"{README}: a command ends with a line continuation: {pending!r}")
    return commands


def read_blocks(readme: Path = README) -> dict[str, list[Command]]:
    """The runbook blocks of the trial section, by name, in the order the guide gives them."""
    text = readme.read_text()
    start_at = text.find(SECTION_TITLE)
    if start_at < 0:
        raise ValueError(f"{readme}: no section {SECTION_TITLE!r}")
    section = text[start_at:]
    end = section.find("\n## ")
    section = section if end < 0 else section[:end]
    blocks: dict[str, list[Command]] = {}
    for name, body in BLOCK.findall(section):
        if name in blocks:
            raise ValueError(f"{readme}: two runbook blocks named {name!r}")
        blocks[name] = parse_commands(body)
    unmarked = section.count("```bash") - len(blocks)
    if unmarked:
        raise ValueError(f"{readme}: {unmarked} bash block(s) of the trial section have no runbook mark")
    return blocks


def environment(exports: list[Command], overrides: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """BASE plus the guide's exports, with OVERRIDES in place of the guide's own values for those names."""
    assigned, lines = set(), []
    for command in exports:
        words = shlex.split(command.text)
        if words[0] != "export" or len(words) < 2:
            raise ValueError(f"{README}: the env block holds only export lines, not {command.text!r}")
        parts = []
        for word in words[1:]:
            name, _, value = word.partition("=")
            assigned.add(name)
            if name in overrides:
                value = overrides[name]
                parts.append(f"{name}={shlex.quote(value)}")
            else:
                if '"' in value or "\\" in value:
                    raise ValueError(f"{README}: keep {name}'s value free of double quotes and backslashes")
                parts.append(f'{name}="{value}"')  # the guide's own text: $VARIABLES expand as in a shell
        lines.append("export " + " ".join(parts))
    missing = set(overrides) - assigned
    if missing:
        raise ValueError(f"{README}: the env block no longer sets {sorted(missing)}")
    out = subprocess.run(
        ["bash", "-c", "set -eu\n" + "\n".join(lines) + "\nenv -0"], env=dict(base), capture_output=True, check=True
    )
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


def default_sigint() -> None:
    """In the child: Ctrl-C as a coordinator's terminal delivers it. A test run started in the background by
    a non-interactive shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Runbook:
    """The trial section, executed step by step in ``env`` (from ``environment``), in the checkout."""

    env: dict[str, str]
    logs: Path
    blocks: dict[str, list[Command]] = field(default_factory=read_blocks)
    run_ids: list[int] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)

    @classmethod
    def prepare(cls, overrides: Mapping[str, str], logs: Path) -> Runbook:
        blocks = read_blocks()
        scripts = str(Path(sys.executable).parent)  # "the virtual environment active"
        base = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]), "COLUMNS": "200"}
        base.pop("FLWR_HOME", None)
        return cls(environment(blocks["env"], overrides, base), logs, blocks, executed=["env"])

    def _text(self, command: Command) -> str:
        text = command.text
        if "<run-id>" in text:
            if not self.run_ids:
                raise AssertionError(f"{command.text!r} needs a run id, and no `started run N` line came before it")
            text = text.replace("<run-id>", str(self.run_ids[-1]))
        if re.search(r"<[\w-]+>", text):
            raise AssertionError(f"the runbook has a placeholder this runner does not know: {command.text!r}")
        return text

    def _note_run_ids(self, output: str) -> None:
        self.run_ids += [int(m) for m in STARTED.findall(output)]

    def run(self, name: str, timeout: float = 300) -> list[subprocess.CompletedProcess]:
        """Execute block NAME's commands in order; each must exit 0 (a command with `until` is followed, then
        interrupted)."""
        results = []
        for command in self.blocks[name]:
            until = UNTIL.search(command.comment)
            if until:
                results.append(self.follow_until(command, until.group(1), timeout))
                continue
            out = subprocess.run(
                ["bash", "-c", "set -euo pipefail\n" + self._text(command)],
                env=self.env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            self._log(name, command, out.stdout + out.stderr)
            assert out.returncode == 0, (
                f"runbook [{name}] `{command.text}` exited {out.returncode}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )
            self._note_run_ids(out.stdout)
            results.append(out)
        self.executed.append(name)
        return results

    def follow_until(self, command: Command, text: str, timeout: float) -> subprocess.CompletedProcess:
        """Run COMMAND until TEXT shows in its output, then Ctrl-C (SIGINT) it, as the guide says."""
        log = self.logs / f"follow-{len(self.run_ids)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as handle:
            popen = subprocess.Popen(
                ["bash", "-c", "exec " + self._text(command)],
                env=self.env,
                cwd=REPO,
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=default_sigint,
            )
        deadline = time.monotonic() + timeout
        try:
            while text not in log.read_text():
                assert popen.poll() is None, (
                    f"`{command.text}` ended (exit {popen.returncode}) before {text!r}:\n{log.read_text()[-3000:]}"
                )
                assert time.monotonic() < deadline, (
                    f"no {text!r} from `{command.text}` in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                )
                time.sleep(0.5)
            popen.send_signal(signal.SIGINT)
            popen.wait(timeout=30)
        finally:
            if popen.poll() is None:
                popen.kill()
        output = log.read_text()
        assert popen.returncode == 0, f"`{command.text}` after Ctrl-C exited {popen.returncode}:\n{output[-3000:]}"
        return subprocess.CompletedProcess(command.text, popen.returncode, output, "")

    def start(self, name: str, only: str | None = None) -> dict[str, Managed]:
        """Start block NAME's commands as long-running processes (or ONLY the one of that name), by name:
        a SuperNode by its --site-name, anything else by what `sarcofed deploy` starts."""
        started = {}
        for command in self.blocks[name]:
            words = shlex.split(command.text)
            label = words[words.index("--site-name") + 1] if "--site-name" in words else words[2]
            if only is not None and label != only:
                continue
            log_name, n = label, 1
            while (self.logs / f"{log_name}.log").exists():  # a restart gets a log of its own
                n += 1
                log_name = f"{label}-{n}"
            process = start(log_name, ["bash", "-c", "exec " + self._text(command)], self.env, self.logs, cwd=REPO)
            started[label] = process
        if only is None:
            self.executed.append(name)
        return started

    def _log(self, name: str, command: Command, output: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "runbook.log", "a") as handle:
            handle.write(f"\n$ [{name}] {command.text}\n{output}")
