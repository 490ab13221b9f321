"""Every command line the README, docs/ and config/README.md show in a ```bash block, and `make demo`,
is checked without running the work: `snakemake ...` plans (a dry-run, with the environment variables
the line or an earlier `export` of its block sets; `snakemake --report <file>`: the plan it reports
on, and a .html or .zip file), `python -m dkd ...` parses with the package's own parser, and every
other command names something that exists (a Makefile target, a script, the venv).
A command of a kind this file does not know fails the test, so a new kind gets a check."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from .test_workflow import ROOT, snakemake

DOCUMENTS = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(default=())
    where: str = ""

    def __str__(self) -> str:
        return " ".join(self.words)


def _lines(block: str):
    """The block's command lines: continuations joined, comments dropped."""
    line = ""
    for raw in block.splitlines():
        line += raw[:-1] + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            yield line
            line = ""


def documented_commands(documents=DOCUMENTS) -> list[Command]:
    commands = []
    for document in documents:
        for block in re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.S):
            exported: dict[str, str] = {}
            for line in _lines(block):
                for part in re.split(r"\s*&&\s*", line):
                    words = shlex.split(part, comments=True)
                    if not words:
                        continue
                    if words[0] == "export":
                        exported.update(word.split("=", 1) for word in words[1:])
                        continue
                    env = dict(exported)
                    while words and ASSIGNMENT.match(words[0]):
                        env.update([words.pop(0).split("=", 1)])
                    commands.append(Command(tuple(words), tuple(sorted(env.items())), document.name))
    return commands


def _makefile_commands() -> list[Command]:
    """The snakemake command of each Makefile recipe (make demo, make study), continuation lines joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if " snakemake " in line]
    assert len(lines) == 2, lines
    return [Command(tuple(shlex.split(line[line.index("snakemake ") :])), where="Makefile") for line in lines]


# Snakemake options that take a value: what is left are the targets. Commands that differ only in their
# targets are planned in one dry-run (each target must plan; a failure names the commands).
# `--report <file>` renders Snakemake's report of a finished run from the plan of the same targets and
# options: that plan is checked (a dry-run without `--report`), and the file's kind (REPORT_KINDS).
VALUE_OPTIONS = {
    "--cores",
    "-c",
    "--jobs",
    "-j",
    "--profile",
    "--software-deployment-method",
}
# Options that take every word up to the next option, as Snakemake's parser does (nargs "+" / "*"):
# a target written after them would be read as a config file or a key=value.
LIST_OPTIONS = {"--configfile", "--configfiles", "--config", "-C"}


def plan_groups(commands: list[Command]) -> dict[tuple, list[Command]]:
    """{(options, env): commands}: the commands' options (without targets and -n) and environment."""
    groups: dict[tuple, list[Command]] = {}
    for command in commands:
        words, options, targets = list(command.words[1:]), [], []
        while words:
            word = words.pop(0)
            if word == "-n":
                continue
            if word == "--report":  # and its file: see report_files
                del words[:1]
                continue
            if word.startswith("-"):
                options.append(word)
                if word in VALUE_OPTIONS and words:
                    options.append(words.pop(0))
                while word in LIST_OPTIONS and words and not words[0].startswith("-"):
                    options.append(words.pop(0))
            else:
                targets.append(word)
        groups.setdefault((tuple(options), command.env), []).append(Command(tuple(targets), command.env, command.where))
    return groups


def report_files(commands: list[Command]) -> list[tuple[str, Command]]:
    """(file, command) of every `snakemake --report <file>`."""
    return [
        (command.words[i + 1] if i + 1 < len(command.words) else "", command)
        for command in commands
        for i, word in enumerate(command.words)
        if word == "--report"
    ]


REPORT_KINDS = (".html", ".zip")  # what Snakemake's html reporter writes: one self-contained file or a zip

COMMANDS = documented_commands()
PLANS = plan_groups([c for c in [*COMMANDS, *_makefile_commands()] if c.words[0] == "snakemake"])
OTHERS = [c for c in COMMANDS if c.words[0] != "snakemake"]
REPORTS = report_files([c for c in COMMANDS if c.words[0] == "snakemake"])


def test_the_documents_show_commands_of_each_kind():
    kinds = {c.words[0] for c in COMMANDS}
    assert {"snakemake", "python", "make"} <= kinds, kinds
    assert any(env for _, env in PLANS), "no command with environment variables in front was found"


@pytest.mark.parametrize(
    "options,env",
    list(PLANS),
    ids=[" ".join(options) + "".join(f" {name}=" for name, _ in env) for options, env in PLANS],
)
def test_documented_snakemake_commands_plan(options, env):
    """A dry-run (`-n`, nothing is written) with the commands' environment, of every target they name."""
    commands = PLANS[(options, env)]
    targets = sorted({t for c in commands for t in c.words})
    run = snakemake(*targets, *options, "-n", env={**os.environ, **dict(env)})
    shown = "; ".join(f"{c.where}: snakemake {' '.join(options)} {c}" for c in commands)
    assert run.returncode == 0, f"{shown}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert re.search(r"^total\s+\d+$", run.stdout, flags=re.M) or "Nothing to be done" in run.stdout, run.stdout


@pytest.mark.parametrize("file,command", REPORTS, ids=[str(c) for _, c in REPORTS])
def test_documented_reports_are_html_or_zip(file, command):
    assert file.endswith(REPORT_KINDS), f"{command.where}: {command}: --report takes a .html or .zip file"


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def check_other(command: Command) -> None:
    """Raises AssertionError when the command would not run as documented."""
    program, *args = command.words
    if program == "python" and args[:2] == ["-m", "dkd"]:
        from dkd.__main__ import build_parser

        try:
            build_parser().parse_args(args[2:])
        except SystemExit as exit:
            raise AssertionError(f"python -m dkd rejects {args[2:]}") from exit
    elif program == "python" and args and args[0].endswith(".py"):
        script = ROOT / args[0]
        assert script.is_file(), f"{args[0]} does not exist"
        done = subprocess.run(
            [sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
    elif program == "make":
        missing = set(args) - _makefile_targets()
        assert not missing, f"Makefile has no target {missing}"
    elif program == "source":
        venv = re.search(r"^VENV \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
        assert args == [f"{venv}/bin/activate"], args
    else:
        raise AssertionError(f"no check for commands of the kind {program!r}; add one to this test")


@pytest.mark.parametrize("command", OTHERS, ids=str)
def test_documented_command_is_valid(command):
    check_other(command)


def test_the_checks_refuse_what_would_not_run(tmp_path):
    """The checks above can fail: a misspelt option, target, script or program is refused."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\nexport A=1\nB=2 python -m dkd sample --outt x \\\n  model\nmake dmeo\n"
        "python benchmarks/missing.py\nsource venv/bin/activate\ncurl x\n```\n"
    )
    commands = documented_commands([page])
    assert [c.words[0] for c in commands] == ["python", "make", "python", "source", "curl"]
    assert dict(commands[0].env) == {"A": "1", "B": "2"} and commands[0].words[-1] == "model"
    grouped = plan_groups(
        [Command(("snakemake", "a", "--cores", "2", "-n")), Command(("snakemake", "--cores", "2", "b"))]
    )
    assert [(options, [c.words for c in group]) for (options, _), group in grouped.items()] == [
        (("--cores", "2"), [("a",), ("b",)])
    ]
    merged = plan_groups([Command(("snakemake", "all", "--configfile", "a.yaml", "b.yaml", "--cores", "1"))])
    assert [(options, [c.words for c in group]) for (options, _), group in merged.items()] == [
        (("--configfile", "a.yaml", "b.yaml", "--cores", "1"), [("all",)])
    ]  # a target after --configfile would be read as a config file, as Snakemake reads it
    reports = [
        Command(("snakemake", "--report", "r.pdf", "--configfile", "c.yaml")),
        Command(("snakemake", "--report")),
    ]
    assert [options for options, _ in plan_groups(reports)] == [("--configfile", "c.yaml"), ()]
    assert [file for file, _ in report_files(reports)] == ["r.pdf", ""]
    for file, _ in report_files(reports):
        assert not file.endswith(REPORT_KINDS)
    for command in commands:
        with pytest.raises(AssertionError):
            check_other(command)
