"""Walk a hospital's folder: regular files only, each once, links that lead outside it reported, not followed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def walk_files(root: Path, rejected: list[tuple[str, str]], where: str, prune: Path | None = None) -> Iterator[Path]:
    """Regular files under ``root`` as resolved paths, sorted, each once; hidden files and folders skipped.

    A symbolic link is followed when its target lies inside ``root`` (``where`` names the folder in
    reasons). A link out of it is reported in ``rejected``, not followed: the manifest would name a
    file nobody put in the folder, and it has no path relative to the folder. Dangling links, link
    loops and what is not a regular file (a FIFO blocks the reader forever) are reported too. Links to
    folders are not walked: inside ``root`` their files are found where they are. ``prune`` is a folder
    left out (the masks folder, walked on its own).
    """
    seen: set[Path] = set()
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != prune)
        for name in dirs:
            link = here / name
            if link.is_symlink():
                try:
                    target = link.resolve(strict=True)
                except (OSError, RuntimeError):
                    continue  # os.walk lists a link as a folder only when it leads to one
                if not is_under(target, root):
                    rejected.append(
                        (
                            str(link),
                            f"symbolic link to a folder outside the {where} ({target}); "
                            "not followed: copy the files into the folder",
                        )
                    )
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = here / name
            try:
                target = path.resolve(strict=True)
            except FileNotFoundError:
                rejected.append(
                    (
                        str(path),
                        f"symbolic link to {os.readlink(path)}, which does not exist"
                        if path.is_symlink()
                        else "file disappeared while the folder was read",
                    )
                )
                continue
            except (OSError, RuntimeError) as error:  # a link loop, or a folder on the way without permission
                rejected.append((str(path), f"cannot be opened ({type(error).__name__}: {error})"))
                continue
            if not is_under(target, root):
                rejected.append(
                    (
                        str(path),
                        f"symbolic link to a file outside the {where} ({target}); not "
                        "followed: copy the file into the folder",
                    )
                )
            elif not target.is_file():
                rejected.append((str(path), "not a regular file (a pipe, socket or device); only files are read"))
            elif target not in seen:
                seen.add(target)
                yield target


def is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
