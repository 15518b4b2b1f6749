"""Every command the README shows works as written after its first set-up command: the subcommand exists,
each option is one it takes, each file it names is in the repo, and a bare `fmx` is on PATH (the first
command activates the virtual environment)."""

from __future__ import annotations

import re
import shlex

import typer.main

from orchestrator.cli import app
from tests.cli_helpers import REPO

README = (REPO / "README.md").read_text()


def _shell_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _fmx_commands() -> list[list[str]]:
    commands = []
    for line in _shell_lines():
        for part in re.split(r"&&|\|\||;", line):
            words = shlex.split(part.strip())
            if words and words[0] in ("fmx", ".venv/bin/fmx"):
                commands.append(words)
    return commands


def test_the_first_set_up_command_puts_fmx_on_path_for_the_readmes_commands():
    first = _shell_lines()[0]
    assert "pip install" in first and "fmx sweep sweeps/smoke.yaml" in first
    bare = [c for c in _fmx_commands() if c[0] == "fmx"]
    if bare:
        assert re.search(r"(\.|source) \.venv/bin/activate", first), "bare `fmx` lines need the venv activated"


def test_every_fmx_command_in_the_readme_names_a_real_subcommand_options_and_files():
    group = typer.main.get_command(app)
    commands = _fmx_commands()
    assert len(commands) >= 8
    for words in commands:
        name = words[1]
        assert name in group.commands, f"README: `{' '.join(words)}`: no subcommand {name!r}"
        command = group.commands[name]
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in words[2:]:
            flag = word.split("=")[0]
            if flag.startswith("--"):
                assert flag in options, f"README: `{' '.join(words)}`: `fmx {name}` has no option {flag}"
            elif word.endswith((".yaml", ".yml")) and "/" in word and not word.isupper():
                assert (REPO / word).is_file(), f"README: `{' '.join(words)}`: {word} is not in the repo"
