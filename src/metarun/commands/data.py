"""`metarun-data`: fetch, verify and list the datasets metarun reads.

    metarun-data list                        every dataset, where metarun looks, present and verified?
    metarun-data omniglot [--root DIR]       download the two official archives and verify them
    metarun-data miniimagenet [--root DIR]   verify your miniImageNet copy and build its cache

Errors are one paragraph (`metarun-data: error: ...`): exit code 2 for data that is missing or
wrong, 1 for a download that failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from metarun.commands.exits import INTERRUPTED, console, fail, say
from metarun.config.schema import MiniImageNetData, OmniglotData
from metarun.data.cache import DataError, expand, file_digest
from metarun.data.download import DownloadError, fetch

PROG = "metarun-data"
URL_ENV = "METARUN_OMNIGLOT_URL"
MINIIMAGENET_LAYOUTS = """\
miniImageNet (Ravi & Larochelle's split: 64 / 16 / 20 classes of 600 images) is ImageNet's images, which metarun
cannot distribute. Put in DIR, for each of the splits train, val and test, either
  - mini-imagenet-cache-<split>.pkl: the pickles that learn2learn and other few-shot repositories distribute
    (a dict with image_data, uint8 [N, 84, 84, 3], and class_dict, {wnid: [indices]}), or
  - images/<filename>.jpg: the JPEGs named in the split's CSV, as Ravi & Larochelle's script makes them
    (https://github.com/twitter/meta-learning-lstm);
then `metarun-data miniimagenet --root DIR` verifies every class and image and builds the cache that
`metarun data=miniimagenet data.root=DIR` reads (or set METARUN_DATA to the folder holding miniimagenet/)."""


def default_root(schema: type) -> Path:
    """Where the dataset's config looks when `data.root` is not given (METARUN_DATA, else ~/.cache/...)."""
    return expand(OmegaConf.create({"root": schema.root}).root)


def default_cache() -> Path:
    return expand(OmegaConf.create({"cache": OmniglotData.cache_dir}).cache)


# ---- omniglot ------------------------------------------------------------------------------------------------

def omniglot_verdict(name: str, path: Path, md5: str | None, where: str, fix: str) -> str:
    """Say what a source is, or raise DataError: the official archive (md5), or a copy whose content verifies."""
    from metarun.data import omniglot

    official = omniglot.OFFICIAL_MD5[name]
    if md5 == official:
        return "the official archive (md5 matches)"
    if path.is_dir():
        omniglot.verify(name, where, omniglot.listing(name, path), fix=fix)
        return "an extracted folder whose content verifies (alphabets, characters, 20 drawings each)"
    try:
        characters = omniglot.verify_archive(name, path, where, fix=fix)
    except DataError as e:
        raise DataError(f"{where} has md5 {md5}, not the official archive's {official}, and its content is not "
                        f"the release either: {e}") from None
    return (f"md5 {md5} is not the official archive's, but its content verifies ({len(characters)} characters, "
            "20 drawings each, every member's CRC intact): a repacked copy")


def downloaded(name: str, tmp: Path, md5: str, url: str, dest: Path) -> str:
    """The verdict on a download; a refusal is a failed download (exit 1), and nothing is kept."""
    fix = f"The server does not serve the Omniglot release: check `--url` (or {URL_ENV})."
    try:
        return omniglot_verdict(name, tmp, md5, url, fix)
    except DataError as e:
        raise DownloadError(f"{e} Nothing was kept under {dest}.") from None


def omniglot_main(args: argparse.Namespace) -> int:
    from metarun.data import omniglot

    root = expand(args.root) if args.root else default_root(OmniglotData)
    base = (args.url or os.environ.get(URL_ENV) or omniglot.OFFICIAL_URL).rstrip("/")
    offline = (
        "Without network access: get images_background.zip and images_evaluation.zip from "
        f"https://github.com/brendenlake/omniglot (folder python/) on another machine, put them in {root}, and run "
        f"`{PROG} omniglot --root {root}` to verify them."
    )
    for name in omniglot.SOURCES:
        found = omniglot.find(root, name)
        if found is not None:
            md5 = file_digest(found, "md5") if found.is_file() else None
            fix = f"Delete it and run `{PROG} omniglot` again to download it."
            print(f"{name}: {found} is present: {omniglot_verdict(name, found, md5, str(found), fix)}")
            continue
        url, dest = f"{base}/{name}.zip", root / f"{name}.zip"
        note = fetch(url, dest, lambda tmp, md5, name=name, url=url, dest=dest: downloaded(name, tmp, md5, url, dest),
                     offline)
        print(f"{name}: downloaded {url} to {dest}: {note}")
    where = "" if root == default_root(OmniglotData) else f" data.root={root}"
    print(f"Omniglot is ready: `metarun data=omniglot{where}` reads it.")
    return 0


# ---- miniimagenet ---------------------------------------------------------------------------------------------

def miniimagenet_source(root: str | None = None, cache_dir: str | None = None, image_size: int = 84,
                        split_dir: str | None = None):
    from metarun.data.miniimagenet import MiniImageNet

    folder = expand(root) if root else default_root(MiniImageNetData)
    return MiniImageNet("miniimagenet", str(folder), cache_dir or str(default_cache()), image_size, split_dir)


def miniimagenet_main(args: argparse.Namespace) -> int:
    import torch

    source = miniimagenet_source(args.root, args.cache_dir, args.image_size, args.split_dir)
    if not expand(source.root).is_dir():
        print(MINIIMAGENET_LAYOUTS)
        raise DataError(f"{source.root} does not exist: put the images there as described above, or name their "
                        "folder with `--root DIR`.")
    start = time.perf_counter()
    source.setup(torch.device("cpu"), 1, (1, 1), (1, 1))
    for split, episodes in source.splits.items():
        print(f"{split}: {episodes.classes} classes x {episodes.per_class} images ({source.forms[split]}), verified")
    print(f"The {source.image_size}x{source.image_size} cache is in {source.cache_dir} "
          f"({time.perf_counter() - start:.1f} s): `metarun data=miniimagenet data.root={source.root}` starts from it.")
    return 0


# ---- list -----------------------------------------------------------------------------------------------------

def missing_data(data: Any) -> str | None:
    """Why the dataset a config node names is absent, with how to get it, or None (present, or nothing to
    fetch). Checked once before a reproduction launches its jobs, which would each say it again."""
    if data._target_ == OmniglotData._target_:
        from metarun.data import omniglot

        root = expand(data.root)
        missing = [name for name in omniglot.SOURCES if omniglot.find(root, name) is None]
        if missing:
            return (f"Omniglot is not under {root} ({' and '.join(missing)} missing). `{PROG} omniglot` downloads "
                    "it there (the folder follows METARUN_DATA), or set `data.root` to where it is.")
    if data._target_ == MiniImageNetData._target_:
        from metarun.data import miniimagenet

        root = expand(data.root)
        pickles = [root / miniimagenet.PICKLE.format(split=split) for split in ("train", "val", "test")]
        if not (root / miniimagenet.FOLDER).is_dir() and not any(p.is_file() for p in pickles):
            return (f"miniImageNet is not under {root} (no {miniimagenet.FOLDER}/ and no "
                    f"{miniimagenet.PICKLE.format(split='train')}). It cannot be downloaded: bring your own copy "
                    f"(`{PROG} miniimagenet --help` says which layouts are read), or set `data.root`.")
    return None


def omniglot_status(root: Path) -> str:
    from metarun.data import omniglot

    found = {name: omniglot.find(root, name) for name in omniglot.SOURCES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return f"missing ({' and '.join(missing)}): `{PROG} omniglot` downloads it"
    kinds = []
    try:
        for name, path in found.items():
            md5 = file_digest(path, "md5") if path.is_file() else None
            omniglot_verdict(name, path, md5, str(path), "")
            kinds.append("official" if md5 == omniglot.OFFICIAL_MD5[name] else "content-verified copy")
    except DataError as e:
        return f"INVALID: {e}"
    return f"present, verified ({', '.join(sorted(set(kinds)))})"


def miniimagenet_status() -> str:
    from metarun.data import cache, miniimagenet

    source = miniimagenet_source()
    root = expand(source.root)
    pickles = [root / miniimagenet.PICKLE.format(split=split) for split in ("train", "val", "test")]
    if not (root / miniimagenet.FOLDER).is_dir() and not any(p.is_file() for p in pickles):
        return f"missing: bring your own copy (`{PROG} miniimagenet --help` says how)"
    try:
        files, _, sources = source.locate()
    except DataError as e:
        return f"INVALID: {e}"
    forms = ", ".join(sorted({form for form, _ in sources.values()}))
    fresh = all(cache.matches(folder, m) for folder, m in source.manifests(files, sources).values())
    if fresh:
        return f"present ({forms}), verified and cached at {source.image_size}x{source.image_size}"
    return f"present ({forms}), not verified yet: `{PROG} miniimagenet` verifies it and builds the cache"


def list_main(args: argparse.Namespace) -> int:
    rows = [
        ("sine", "-", "generated on the fly: nothing to fetch"),
        ("omniglot", str(default_root(OmniglotData)), omniglot_status(default_root(OmniglotData))),
        ("miniimagenet", str(default_root(MiniImageNetData)), miniimagenet_status()),
        ("folder", "-", "your own images: `metarun data=folder data.root=PATH` (docs/data.md, Your own dataset)"),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    print(f"{'dataset':<{width[0]}}  {'where':<{width[1]}}  status")
    for name, where, status in rows:
        print(f"{name:<{width[0]}}  {where:<{width[1]}}  {status}")
    print("(`where` follows METARUN_DATA; the cache follows METARUN_CACHE.)")
    return 0


# ---- the command ----------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description="Fetch, verify and list the datasets metarun reads.")
    commands = top.add_subparsers(dest="command", required=True, metavar="{list,omniglot,miniimagenet}")
    commands.add_parser("list", help="every dataset, where metarun looks for it, present and verified?")
    omni = commands.add_parser(
        "omniglot", help="download the official Omniglot archives and verify them",
        description="Download images_background.zip and images_evaluation.zip (torchvision's URLs), check their md5 "
                    "(or, for a repacked copy, their content), and leave them where `data=omniglot` looks. "
                    "Archives already there are verified, not downloaded again.")
    omni.add_argument("--root", help=f"where to put them (default: {default_root(OmniglotData)}, i.e. "
                                     "$METARUN_DATA/omniglot)")
    omni.add_argument("--url", help=f"base URL of the two archives, e.g. a mirror (default: ${URL_ENV}, else the "
                                    "official https://raw.githubusercontent.com/brendenlake/omniglot/master/python)")
    mini = commands.add_parser("miniimagenet", help="verify your miniImageNet copy and build its cache",
                               description=MINIIMAGENET_LAYOUTS, formatter_class=argparse.RawDescriptionHelpFormatter)
    mini.add_argument("--root", help=f"the folder holding it (default: {default_root(MiniImageNetData)})")
    mini.add_argument("--cache-dir", help=f"where the cache goes (default: {default_cache()}, or $METARUN_CACHE)")
    mini.add_argument("--image-size", type=int, default=84, help="cached image size (default: 84)")
    mini.add_argument("--split-dir", help="a folder with train/val/test.csv (default: the packaged split)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run = {"list": list_main, "omniglot": omniglot_main, "miniimagenet": miniimagenet_main}[args.command]
    try:
        return run(args)
    except DataError as e:  # DownloadError among them: exits says which code each has
        return fail(e, PROG)
    except KeyboardInterrupt:
        say(PROG, "interrupted; no partial file was left under a dataset's name.")
        return INTERRUPTED


def entry() -> None:
    # The loaders say what they build and what they skip through logging.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    console(main)
