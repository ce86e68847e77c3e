"""The README and the pages under docs/ say what the program does: every command in their fenced `bash` blocks
is one the program takes, every row of the configuration table (docs/configuration.md) names keys that exist,
with the defaults they have, and every relative link leads to a file of the repository.

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

import os
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
from metarun.config.checks import check
from metarun.config.keys import lookup
from metarun.config.store import config_dir, register

register()
README = (ROOT / "README.md").read_text()
# Every page a reader can reach: the README and docs/ (result folders' own READMEs included), by repository path.
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text()
         for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}
CONFIGURATION = PAGES["docs/configuration.md"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]


def fenced_commands(text: str) -> list[str]:
    """Every command line of a page's ```bash blocks, comments dropped and continuations joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.extend(part.strip() for part in line.split("&&"))
    return commands


COMMANDS = [(page, line) for page, text in PAGES.items() for line in fenced_commands(text)]


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


PIP_VALUES = ("--index-url", "-i", "--extra-index-url")  # pip options that take a value (a package index)


def pip_command(argv: list[str]) -> None:
    assert argv[0] == "install", argv
    extras = PYPROJECT["project"]["optional-dependencies"]
    for before, target in zip(argv, argv[1:], strict=False):
        if before in PIP_VALUES:
            assert target.startswith("https://"), f"{before} {target}: an index is an https URL"
            continue
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


def test_the_pages_have_commands_to_check():
    lines = [line for _, line in COMMANDS]
    assert len(lines) > 20 and any(c.startswith("metarun -m ") for c in lines)
    assert len(fenced_commands(README)) >= 10


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{page}: {line}" for page, line in COMMANDS])
def test_every_fenced_command_composes_or_parses(hydra_conf, page, line):
    check_command(line)


def test_the_readme_opens_with_the_two_commands_ci_runs():
    """CI runs the README's test command verbatim (.ci/run's last line): the first block must keep it."""
    first = re.search(r"^```bash\n(.*?)^```", README, flags=re.S | re.M).group(1)
    assert first == 'pip install . && metarun\npip install -e ".[test]" && python -m pytest -q\n', first
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in first.splitlines(), f".ci/run runs `{ci}`, which the README's first block does not hold"


def test_the_readme_is_a_front_door():
    """Reference material lives under docs/; the README says what metarun is and where to read on."""
    assert len(README.splitlines()) <= 250, f"README.md has {len(README.splitlines())} lines: move some to docs/"


def sweep_jobs(line: str) -> tuple[str, list[dict[str, str]]] | None:
    """A `metarun -m ... hydra.sweep.dir=DIR` line's folder and its jobs' overrides (key -> value), else None."""
    argv = shlex.split(line)
    while re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        argv = argv[1:]
    if argv[:2] != ["metarun", "-m"]:
        return None
    parsed = OverridesParser.create().parse_overrides(argv[2:])
    folder = next((o.value() for o in parsed if o.get_key_element() == "hydra.sweep.dir"), None)
    if folder is None:
        return None
    jobs: list[dict[str, str]] = [{}]
    for o in parsed:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        jobs = [{**job, o.get_key_element(): v} for job in jobs for v in values]
    return folder, jobs


def test_every_compare_of_a_sweep_picks_runs_the_sweep_makes():
    """A `metarun-compare SWEEP SWEEP --a ... --b ...` after the sweep that makes SWEEP: each side selects runs of
    that sweep, and they differ only in seed (metarun-compare refuses a side of two methods)."""
    checked = 0
    for page, text in PAGES.items():
        sweeps = dict(filter(None, (sweep_jobs(line) for line in fenced_commands(text))))
        for line in fenced_commands(text):
            argv = shlex.split(line)
            if argv[0] != "metarun-compare" or argv[1] not in sweeps:
                continue
            for folder, flag in ((argv[1], "--a"), (argv[2], "--b")):
                wanted = [argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == flag]
                runs = [job for job in sweeps[folder] if all(job.get(k) == v for k, v in wanted)]
                assert runs, f"{page}: `{line}`: {flag} selects none of the runs of the sweep into {folder}"
                differ = {k for k in runs[0] if len({job.get(k) for job in runs}) > 1}
                assert differ <= {"seed"}, f"{page}: `{line}`: {flag}'s runs differ in {sorted(differ)}, not only seed"
            checked += 1
    assert checked >= 3


# ---- the configuration table -------------------------------------------------------------------------------------

def table_rows() -> list[tuple[str, str]]:
    rows = [line.split("|")[1:3] for line in CONFIGURATION.splitlines() if line.startswith("| `")]
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
        assert stated(lookup(config, name)) == value(text), f"`{name}`: docs/configuration.md says {text}"


def test_every_group_option_is_listed_and_exists():
    listed = dict(re.findall(r"`(\w+)=([\w|]+)`", CONFIGURATION.split("Groups (choose with `group=option`): ", 1)[1]
                                                           .split("Plain values", 1)[0]))
    for group, options in listed.items():
        actual = {p.stem for p in (Path(config_dir()) / group).glob("*.yaml")}
        assert set(options.split("|")) == actual, f"{group}: docs {options}, conf/{group}: {sorted(actual)}"
    assert set(listed) == {"data", "model", "algo", "weighting"}


def test_every_preset_is_listed():
    """docs/reproducing.md names every conf/paper/ preset in its list."""
    listed = set(re.findall(r"`(\w+)`", PAGES["docs/reproducing.md"].split("`conf/paper/` holds", 1)[1]
                                                               .split(".\n", 1)[0]))
    actual = {p.stem for p in (Path(config_dir()) / "paper").glob("*.yaml")}
    assert actual <= listed, f"presets missing from docs/reproducing.md: {sorted(actual - listed)}"


# ---- links and references ----------------------------------------------------------------------------------------

def prose(text: str, code: bool = False) -> str:
    """A page without its fenced blocks, and without its inline code unless `code`: brackets there are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return text if code else re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated heading's gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose(text, code=True), flags=re.M):
        base = slug(heading)
        out.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return out


def links(page: str) -> list[tuple[str, Path, str]]:
    """Each relative link of a page: as written, the path it leads to, and its anchor ('' without one)."""
    out = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(PAGES[page])):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of the repository
            continue
        path, _, anchor = target.partition("#")
        resolved = (ROOT / page).parent / path if path else ROOT / page
        out.append((target, Path(os.path.normpath(resolved)), anchor))
    return out


LINKS = [(page, *link) for page in PAGES for link in links(page)]


def test_the_pages_have_links_to_check():
    assert len(LINKS) > 20
    assert any(anchor for *_, anchor in LINKS)


@pytest.mark.parametrize(("page", "target", "path", "anchor"), LINKS, ids=[f"{p}: {t}" for p, t, *_ in LINKS])
def test_every_relative_link_leads_to_a_file_of_the_repository(page, target, path, anchor):
    assert path.is_relative_to(ROOT), f"{page}: `{target}` leads outside the repository"
    assert path.exists(), f"{page}: `{target}`: no such file"
    if anchor and path.suffix == ".md":
        assert anchor in anchors(path.read_text()), f"{page}: `{target}`: {path.name} has no heading #{anchor}"


def test_the_readme_links_every_docs_page():
    """The README's contents are the way in: every page under docs/ is one link from it."""
    linked = {path.relative_to(ROOT).as_posix() for _, path, _ in links("README.md") if path.is_relative_to(ROOT)}
    assert set(PAGES) - {"README.md"} <= linked, f"the README links no {sorted(set(PAGES) - linked - {'README.md'})}"


ISSUE = re.compile(r"(?i)\b(?:issue|pr|pull request)s?[\s_-]*#?\d+|(?<![\w&])#\d+\b")
OUTSIDE = ("../shared", "/work/")


@pytest.mark.parametrize("page", PAGES)
def test_no_page_points_outside_the_repository_or_at_an_issue(page):
    text = PAGES[page]
    for outside in OUTSIDE:
        assert outside not in text, f"{page} points outside the repository: {outside}"
    assert not ISSUE.findall(text), f"{page} cites issue numbers, which a reader of the repository cannot follow: " \
                                    f"{ISSUE.findall(text)}"


@pytest.mark.parametrize("page", PAGES)
def test_a_preset_is_added_with_a_plus(page):
    """`paper` is not in the defaults list: `paper=NAME` fails to compose, `+paper=NAME` adds it."""
    assert not re.findall(r"(?<![+\w.~])paper=\w", PAGES[page]), f"{page}: write +paper=NAME"
