"""The README says what the program does: every command in its fenced `bash` blocks is one the program
takes, and every row of its configuration table names keys that exist, with the defaults they have.

Cheap by design: `metarun` commands are composed in-process with Hydra's compose API (as `--cfg job`
would) and checked with `metarun.config.checks.check`, never run; a sweep composes each of its values. That also
covers commands that cannot run here (a GPU, a dataset that is absent, Slurm). The other commands are
parsed by their own argument parsers; scripts and console scripts must exist.

How the configuration table is read: a row's first cell lists keys in backquotes, optionally followed by
`with `group=option`` (the config they are the defaults of); its second cell lists one default per key,
separated by commas (lists in brackets): a number, true/false, a word, a class name (`Adam` for a
`_target_`), or a key in backquotes that the default follows by interpolation.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import tomllib
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import ROOT
from metarun.commands.table import parser as table_parser
from metarun.config.store import config_dir
from metarun.config.checks import check
from metarun.config.resume import lookup
from metarun.config.store import register

register()
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]


def fenced_commands() -> list[str]:
    """Every command line of the README's ```bash blocks, comments dropped and continuations joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", README, flags=re.S | re.M):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.extend(part.strip() for part in line.split("&&"))
    return commands


COMMANDS = fenced_commands()


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield


def configs(overrides: list[str]):
    """The config of each job the overrides ask for: a sweep's values one at a time (the others at their first)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [i for i, o in enumerate(parsed) if o.is_sweep_override()]
    first = [o.input_line if i not in sweeps else f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
             for i, o in enumerate(parsed)]
    jobs = [first]
    for i in sweeps:
        jobs += [first[:i] + [f"{parsed[i].get_key_element()}={v}"] + first[i + 1:]
                 for v in parsed[i].sweep_string_iterator()]
    return [compose("config", overrides=job, return_hydra_config=True) for job in jobs]


def metarun_command(argv: list[str]) -> None:
    argv = [a for a in argv if a != "..."]  # "more overrides here"
    if "--resume" in argv:  # the folder is a placeholder: the rest of the line must still be a command line
        at = argv.index("--resume")
        assert at + 1 < len(argv), "--resume needs a folder"
        argv = argv[:at] + argv[at + 2:]
    args = get_args_parser().parse_args(argv)
    for cfg in configs(args.overrides):
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        check(job)
        if args.cfg:
            OmegaConf.to_yaml(job, resolve=True)


def reproduce_command(argv: list[str]) -> None:
    from metarun.commands.reproduce import parse, preset_names

    args = parse(argv)
    name = args.preset.replace("-", "_")
    assert name in preset_names(), f"no preset {args.preset}"
    if args.cells:
        cells = compose("config", overrides=[f"+paper={name}"]).paper.cells
        assert set(args.cells.split(",")) <= set(cells), f"{args.cells} are not all cells of {name}"


def plot_command(argv: list[str]) -> None:
    from metarun.commands.plot import parser

    parser().parse_args(argv)


def pip_command(argv: list[str]) -> None:
    assert argv[0] == "install", argv
    extras = PYPROJECT["project"]["optional-dependencies"]
    for target in argv[1:]:
        if target.startswith("-"):
            continue
        match = re.fullmatch(r"(metarun|\.)\[(.+)\]", target)
        if match:
            assert set(match.group(2).split(",")) <= set(extras), f"no extra {match.group(2)}"
        else:  # `.`, or a pinned dependency
            assert target == "." or re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9.]+", target), target


def torchrun_command(argv: list[str]) -> None:
    """torchrun's own options, then `-m metarun` and a metarun command line."""
    from torch.distributed.run import get_args_parser as torchrun_parser

    at = argv.index("-m")
    torchrun_parser().parse_args(argv[:at] + ["script.py"])
    assert argv[at + 1] == "metarun", argv
    metarun_command(argv[at + 2:])


def check_command(line: str) -> None:
    argv = shlex.split(line)
    while re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):  # environment assignments before the command
        argv = argv[1:]
    program, rest = argv[0], argv[1:]
    if program == "python" and rest[:2] == ["-m", "pytest"]:
        return  # the suite itself
    if program == "python" and rest[0].startswith("scripts/"):
        assert (ROOT / rest[0]).is_file(), rest[0]
        program, rest = rest[0], rest[1:]
    if program in ("bash", "sh"):
        assert (ROOT / rest[0]).is_file(), rest[0]
        return
    runners = {"metarun": metarun_command, "metarun-table": table_parser().parse_args,
               "metarun-reproduce": reproduce_command, "scripts/reproduce.py": reproduce_command,
               "metarun-plot": plot_command, "pip": pip_command, "torchrun": torchrun_command}
    if program in runners:
        runners[program](rest)
    elif program.startswith("scripts/"):
        assert (ROOT / program).is_file(), program
    else:  # a console script added since this test was written: it must at least be one
        assert program in SCRIPTS, f"`{line}`: {program} is not a command of this project"


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 20 and any(c.startswith("metarun -m ") for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS, ids=COMMANDS)
def test_every_fenced_command_composes_or_parses(hydra_conf, line):
    check_command(line)


# ---- the configuration table -------------------------------------------------------------------------------------

def table_rows() -> list[tuple[str, str]]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return [(keys.strip(), defaults.strip()) for keys, defaults in rows]


def split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()]


def value(text: str):
    if text.startswith("`") and text.endswith("`"):
        return "${" + text.strip("`") + "}"
    if text.startswith("["):
        return [value(v) for v in split_top(text[1:-1])]
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def stated(raw):
    """The config's value as the README states it (a `_target_` by its class name)."""
    if isinstance(raw, dict) and "_target_" in raw:
        return raw["_target_"].rsplit(".", 1)[-1]
    return raw


def has(config: dict, key: str) -> bool:
    *parents, leaf = key.split(".")
    node = lookup(config, ".".join(parents)) if parents else config
    return isinstance(node, dict) and leaf in node


ROWS = table_rows()


def test_the_table_has_rows_to_check():
    assert len(ROWS) > 15


@pytest.mark.parametrize(("keys", "defaults"), ROWS, ids=[k for k, _ in ROWS])
def test_every_table_key_exists_with_its_stated_default(hydra_conf, keys, defaults):
    names = re.findall(r"`([^`]+)`", keys.split(" with ")[0])
    context = re.findall(r"`([^`]+)`", keys.split(" with ")[1]) if " with " in keys else []
    wanted = split_top(defaults)
    assert len(names) == len(wanted), f"{len(names)} keys but {len(wanted)} defaults in the row `{keys}`"
    config = OmegaConf.to_container(compose("config", overrides=context), resolve=False)
    for name, text in zip(names, wanted, strict=True):
        assert has(config, name), f"`{name}` is not a setting"
        assert stated(lookup(config, name)) == value(text), f"`{name}`: the README says {text}"


def test_every_group_option_is_listed_and_exists():
    listed = dict(re.findall(r"`(\w+)=([\w|]+)`", README.split("Groups (choose with `group=option`): ", 1)[1]
                                                    .split("Plain values", 1)[0]))
    for group, options in listed.items():
        actual = {p.stem for p in (Path(config_dir()) / group).glob("*.yaml")}
        assert set(options.split("|")) == actual, f"{group}: README {options}, conf/{group}: {sorted(actual)}"
    assert set(listed) == {"data", "model", "algo", "weighting"}
