"""The run folder: whether a command may use it, and what metarun writes there once a run is accepted.

A folder holds one config's run. Hydra would write `.hydra/` (config.yaml, hydra.yaml, overrides.yaml)
before the job even starts, so a command that is then refused would rewrite the record of the run
already in the folder; metarun turns that off (`hydra.output_subdir: null`) and writes the same three
files itself when a run is accepted (`accept`). The folders Hydra makes for a run that is then refused
are removed again: `FolderGuard` notes, before Hydra makes them, which did not exist.

No torch here: a finished folder is reported without it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from metarun.config.resume import continuing_differences, describe_differences, lookup, run_differences
from metarun.config.schema import ConfigError
from metarun.files import atomic_write, remove_temporaries
from metarun.report.record import config_keys
from metarun.report.results import FAILED, RESULTS
from metarun.run.checkpoint import FILENAME as CHECKPOINT

HYDRA_DIR = ".hydra"
CONFIG_FILE = f"{HYDRA_DIR}/config.yaml"


class FolderTaken(ConfigError):
    """The folder holds a run of another config; nothing in it was touched."""


def saved_config(out_dir: Path) -> dict[str, Any] | None:
    """The config of the run the folder holds, resolved as a run resolves it; None if it records none."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:  # an interpolation that no longer resolves: compare it as written
        return OmegaConf.to_container(cfg, resolve=False)


def _checkpoint_config(out_dir: Path) -> dict[str, Any] | None:
    """The config inside checkpoint.pt (imports torch): for folders whose `.hydra/` is gone."""
    from metarun.run import checkpoint

    try:
        return checkpoint.load(out_dir).get("config")
    except Exception:
        return None


def claim(out_dir: Path, config: dict[str, Any], choose: str) -> Path | None:
    """Check that the folder may take the run of `config`; returns its results.json when it already holds them.

    A folder that records another config is refused (FolderTaken) with the differing keys named, whatever it
    holds: results, a checkpoint, or the start of a run. `choose` says how to pick another folder.
    """
    out_dir = Path(out_dir)
    results = out_dir / RESULTS
    saved = saved_config(out_dir)
    if saved is None and results.is_file():
        saved = _checkpoint_config(out_dir) if (out_dir / CHECKPOINT).is_file() else None
        if saved is None:
            raise FolderTaken(
                f"{results} holds finished results but the folder records no config ({CONFIG_FILE} and "
                f"{CHECKPOINT} are missing), so metarun cannot tell whether they are this config's. Run in another "
                f"folder ({choose}), or delete {results} to run this config there."
            )
    if saved is None:
        return None
    if results.is_file():
        _check_agrees(results, saved)
    # A finished run answers only for its own config; a stopped one may continue with other execution settings.
    changed = run_differences(saved, config) if results.is_file() else continuing_differences(saved, config)
    if changed:
        if results.is_file():
            held = f"the finished results ({RESULTS}) of"
        elif (out_dir / CHECKPOINT).is_file():
            held = f"a stopped run ({CHECKPOINT}) of"
        else:
            held = "a run started with"
        raise FolderTaken(
            f"{out_dir} holds {held} a different config ({describe_differences(saved, config, changed)}), so they "
            f"are not reported for, nor continued with, this config, and nothing in the folder was changed. Run "
            f"in another folder ({choose}), `metarun --resume {out_dir}` to repeat that run's own command, or "
            "delete the folder to start over."
        )
    return results if results.is_file() else None




def _check_agrees(results: Path, saved: dict[str, Any]) -> None:
    """Refuse a folder whose results.json contradicts its `.hydra/config.yaml`: older versions of metarun let a
    command that only reported the results rewrite `.hydra/`, so the config there may not be the results'."""
    import json

    try:
        record = json.loads(results.read_text())
    except (OSError, ValueError):
        return  # reading it says what is wrong with it
    if not isinstance(record, dict):
        return
    wrong = [(key, field) for field, key in config_keys("setting", "stream").items()
             if field in record and lookup(saved, key) is not None and record[field] != lookup(saved, key)]
    if wrong:
        shown = "; ".join(f"{key}: {record[field]} in {RESULTS}, {lookup(saved, key)} in {CONFIG_FILE}"
                          for key, field in wrong[:3])
        raise FolderTaken(
            f"{results} and {results.parent / CONFIG_FILE} disagree ({shown}): an older metarun rewrote "
            f"{CONFIG_FILE} when a later command only reported these results, so which config they belong to is "
            "not known, and they are not reported. Delete the folder to run it again, or run in another folder."
        )


def fresh(out_dir: Path) -> bool:
    """Whether the folder holds nothing of a run (Hydra's log file aside)."""
    return not Path(out_dir).is_dir() or {p.name for p in Path(out_dir).iterdir()} <= {"metarun.log"}


def write_hydra_files(out_dir: Path, cfg: DictConfig) -> None:
    """`.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`, as Hydra writes them; kept if already there."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(out_dir) / HYDRA_DIR
    if (folder / "config.yaml").is_file() or not HydraConfig.initialized():
        return
    hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    with read_write(hydra_cfg.hydra):
        hydra_cfg.hydra.output_subdir = HYDRA_DIR  # what Hydra itself records beside these files
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    atomic_write(folder / "overrides.yaml", OmegaConf.to_yaml(HydraConfig.get().overrides.task))
    atomic_write(folder / "config.yaml", OmegaConf.to_yaml(cfg))  # last: its presence marks the folder taken


def accept(out_dir: Path, cfg: DictConfig) -> None:
    """The run goes ahead in this folder: clear what an earlier attempt left, record the config."""
    remove_temporaries(out_dir)  # what a run killed while writing left; never a complete file
    (Path(out_dir) / FAILED).unlink(missing_ok=True)  # an earlier failed attempt at this config
    write_hydra_files(out_dir, cfg)


class FolderGuard(Callback):
    """Notes which folders of `hydra.run.dir` do not exist yet, before Hydra makes them (single runs)."""

    created: list[Path] = []  # deepest first; class-level: the job reads it in the same process

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        FolderGuard.created = []
        try:
            path = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        except OmegaConfBaseException:
            return
        while not path.exists() and path != path.parent:
            FolderGuard.created.append(path)
            path = path.parent


def discard_created(out_dir: Path) -> None:
    """Remove the run folder and its parents if this process made them: a refused run leaves no folder."""
    out_dir = Path(out_dir).absolute()
    if out_dir not in FolderGuard.created:
        return
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    for folder in FolderGuard.created[FolderGuard.created.index(out_dir) + 1:]:
        try:
            folder.rmdir()  # only if empty: another run may have started in it meanwhile
        except OSError:
            break


def resume_argv(argv: list[str]) -> list[str]:
    """`metarun --resume DIR [OVERRIDES...]` as the command line it stands for: the overrides saved in DIR
    (a run's `.hydra/`, or a multirun's `multirun.yaml`), OVERRIDES in place of saved ones of the same key, and
    DIR as the output folder. Any other command line is returned as it is.

    An override that changes the config is refused when the folder is claimed (`claim`), with the keys named.
    """
    at = next((i for i, a in enumerate(argv) if a == "--resume" or a.startswith("--resume=")), None)
    if at is None:
        return argv
    if argv[at] == "--resume":
        if at + 1 >= len(argv) or argv[at + 1].startswith("-"):
            raise ConfigError("`--resume` needs the folder to continue, e.g. `metarun --resume "
                              "outputs/runs/2026-01-01/10-00-00` (the stop message prints the whole command).")
        folder, rest = argv[at + 1], argv[:at] + argv[at + 2:]
    else:
        folder, rest = argv[at].partition("=")[2], argv[:at] + argv[at + 1:]
    if any(a in ("-m", "--multirun") for a in rest):
        raise ConfigError(f"`--resume {folder}` continues what the folder holds, a run or a multirun; leave out "
                          "`-m`.")
    path = Path(folder)
    if (path / HYDRA_DIR / "overrides.yaml").is_file():
        task = list(OmegaConf.load(path / HYDRA_DIR / "overrides.yaml"))
        hydra_file = path / HYDRA_DIR / "hydra.yaml"
        saved = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.overrides.hydra") if hydra_file.is_file() else []
        # Only where configs are found matters for a single run (a reproduction's generated cell configs).
        hydra = [o for o in saved or [] if o.startswith("hydra.searchpath=")]
        mode, where = [], f"hydra.run.dir={quoted(path)}"
    elif (path / "multirun.yaml").is_file():
        saved_cfg = OmegaConf.load(path / "multirun.yaml")
        task = list(OmegaConf.select(saved_cfg, "hydra.overrides.task") or [])
        hydra = [o for o in OmegaConf.select(saved_cfg, "hydra.overrides.hydra") or []
                 if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
        mode, where = ["-m"], f"hydra.sweep.dir={quoted(path)}"
    elif not path.exists():
        raise ConfigError(f"`--resume {folder}`: there is no {path.absolute()}. Pass the folder that the stop "
                          "message or the run's `results:` line names (relative to where you run the command).")
    else:
        raise ConfigError(f"`--resume {folder}`: {path} is not a folder that metarun wrote: it has neither "
                          f"{HYDRA_DIR}/overrides.yaml (a run) nor multirun.yaml (a multirun). Pass the folder that "
                          "the stop message or the run's `results:` line names.")
    flags, overrides = _split_flags(rest)
    replaced = {_key(o) for o in overrides}
    return [*mode, *(o for o in task if _key(o) not in replaced), *hydra, *overrides, where, *flags]


VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                "-cd"}


def _split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) and the overrides; flags go last, as Hydra's parser wants them."""
    flags, overrides, taking = [], [], False
    for arg in argv:
        if taking or arg.startswith("-"):
            flags.append(arg)
            taking = arg in VALUED_FLAGS
        else:
            overrides.append(arg)
    return flags, overrides


def _key(override: str) -> str:
    """The key or group an override sets (`+paper=x` -> paper), as Hydra parses it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([override])[0].key_or_group
    except HydraException:
        return override  # Hydra says what is wrong with it when it composes


def quoted(path: Path) -> str:
    """A path as a Hydra override value: quoted, so spaces and `=` or `,` in it stay part of it."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"
