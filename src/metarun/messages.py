"""How a failure is told: one paragraph that names the setting or file and says what to do.

The rule for error types: each lives in the module whose failure it names (ConfigError in config,
DataError in data.cache, WeightingError in weighting, Diverged in train, ...). A setting the user must
change is a ConfigError or a subclass of it (exit 2); a run that failed on the way is a RuntimeError
(exit 1). This module holds no error types, only the wording shared by them and by metarun's own
reports of Hydra's and the operating system's errors.

Hydra's own reports of a bad command line are several paragraphs, and for a misspelt key they
suggest `+key=value`, which the schema would refuse too; an OSError names neither the run folder
nor the fix. The functions here turn both into metarun's style. No torch here: these run before
a job imports it.
"""

from __future__ import annotations

import difflib
import errno
import os
from pathlib import Path

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
TYPES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def one_paragraph(text: str) -> str:
    return " ".join(text.split())


def composition(e: Exception) -> str:
    """A Hydra config-composition or override-parsing error, as one paragraph naming the setting."""
    if isinstance(e, MissingConfigException):
        return _missing_option(e)
    if isinstance(e, OverrideParseException):
        return (f"`{e.override}` is not a valid override ({one_paragraph(e.message.splitlines()[0])}). Write "
                "overrides as key=value or group=option; quote a value that holds spaces or brackets.")
    cause = e.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return _unknown_key(cause)
    if isinstance(cause, ValidationError) and cause.full_key:
        return _wrong_type(e, cause)
    detail = one_paragraph(f"{e} {cause.msg if isinstance(cause, OmegaConfBaseException) else ''}")
    return (f"the config cannot be composed: {detail}. Check the command-line overrides; `metarun --help` lists "
            "the config groups and their options.")


def one_command() -> str:
    """Hydra's "Only one of --run, --multirun, --cfg, --info and --shell_completion" as metarun says it."""
    return ("`--cfg`, `--info` and `--shell-completion` show one config and run nothing, so they cannot be combined "
            "with `-m`/`--multirun` (nor with each other). To see the config of one job of a sweep, drop `-m` and "
            "give one value per key, e.g. `metarun --cfg job algo=maml`.")


def _missing_option(e: MissingConfigException) -> str:
    group, _, option = (e.missing_cfg_file or "").rpartition("/")
    if e.options:
        near = difflib.get_close_matches(option, e.options, n=1)
        hint = f" (did you mean `{group}={near[0]}`?)" if near else ""
        return (f"`{group}={option}` is not an option of the config group `{group}`{hint}. Valid options: "
                f"{', '.join(e.options)}.")
    return (f"`{e.missing_cfg_file}` is not a config that metarun has ({one_paragraph(str(e).splitlines()[0])}). "
            "Choose one option per group, e.g. `algo=maml`; `metarun --help` lists the groups and their options.")


def _unknown_key(cause: OmegaConfBaseException) -> str:
    key, parent = cause.full_key, cause.parent_node
    section, _, leaf = key.rpartition(".")
    known = [str(k) for k in parent.keys()] if parent is not None else []
    near = difflib.get_close_matches(leaf, known, n=1)
    hint = f" (did you mean `{section + '.' if section else ''}{near[0]}`?)" if near else ""
    where = f"`{section}`" if section else "the top level"
    return (f"`{key}` is not a setting: {where} has no key `{leaf}`{hint}. Fix the spelling; "
            "`metarun --cfg job` prints every setting with its value.")


def _wrong_type(e: Exception, cause: ValidationError) -> str:
    key = cause.full_key
    override = str(e).removeprefix("Error merging override ").strip() or key
    reason = cause.msg.splitlines()[0].rstrip(".")
    return (f"`{override}` has the wrong type: {reason}. {_wanted(cause)}`metarun --cfg job` shows every setting "
            "with its current value.")


def _wanted(cause: ValidationError) -> str:
    """What the setting takes, with its current value as the example when it is a plain one."""
    key = cause.full_key
    try:
        node = cause.parent_node._get_node(key.rpartition(".")[2])
        ref, value = node._metadata.ref_type, node._value()
    except (AttributeError, KeyError, TypeError):
        return ""
    if ref not in TYPES:
        return ""
    plain = isinstance(value, (int, float, bool)) or (isinstance(value, str) and "${" not in value)
    example = f", e.g. `{key}={str(value).lower() if isinstance(value, bool) else value}`" if plain else ""
    return f"`{key}` takes {TYPES[ref]}{example}; "


def _inside(path: str | os.PathLike | None, folder: Path) -> bool:
    if path is None:
        return False
    return Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(folder)))


def cannot_write(e: OSError, choose: str, out_dir: Path | None = None, kept: str = "") -> str:
    """An OSError while creating or writing the output, with the fix for its cause.

    `choose` says how to pick another output folder (e.g. "`hydra.run.dir=...`"); `kept` says
    what survived (the last checkpoint), when something did.
    """
    where = e.filename or out_dir or "the output folder"
    reason = e.strerror or str(e)
    if e.errno in DISK_FULL:
        fix = f"The disk is full: free space on it, or choose an output folder on another disk with {choose}."
    elif e.errno in NOT_WRITABLE:
        fix = f"The folder is not writable by you: fix its permissions, or choose another folder with {choose}."
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = f"A file stands where a folder must be made: move it, or choose another folder with {choose}."
    else:
        fix = f"Choose another output folder with {choose}."
    return one_paragraph(f"cannot write {where} ({reason}). {fix} {kept}")


def cannot_use(e: OSError) -> str:
    """An OSError about a file outside the run folder: data, split files, caches."""
    return one_paragraph(f"cannot use {e.filename or 'a file'} ({e.strerror or e}). Check that the paths in the "
                         "config (`data.root`, `data.split_dir`, `data.cache_dir`) point at readable files and "
                         "writable folders.")


def is_output(e: OSError, out_dir: Path) -> bool:
    """Whether the error concerns the run's own folder, or space or permission to write at all."""
    return _inside(e.filename, out_dir) or e.errno in DISK_FULL
