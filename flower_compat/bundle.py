"""The files ``flwr run`` would put into an app bundle, found without walking folders Flower drops whole.

Uses four names Flower 1.42 does not export (``flwr.cli.utils``: ``build_pathspec``,
``filter_paths_for_publish``, ``load_gitignore_patterns``; ``flwr.supercore.constant``:
``APP_PUBLISH_EXCLUDE_PATTERNS``), so that the bundle is Flower's own, file for file. ``flwr run``
walks every file under the app folder before filtering (``flwr.cli.utils.collect_files``); in a
checkout that holds ``.venv`` and ``.cache`` that is about 50 000 files per run.
"""

from __future__ import annotations

import os
from pathlib import Path

from flower_compat.version import require_flower


def bundle_files(app_dir: Path) -> dict[str, Path]:
    """The files ``flwr run <app_dir>`` puts into the app bundle (FAB): relative POSIX path -> file.

    Flower's own filter (``flwr.cli.utils.filter_paths_for_publish``: included suffixes, its excludes,
    the app's top-level ``.gitignore``) applied to a walk that does not descend into folders that filter
    drops whole (``.venv/``, ``.cache/``, ``runs/`` ...). Flower walks them file by file. Without
    negated (``!``) patterns in ``.gitignore`` the two walks give the same files.
    """
    require_flower("bundle_files")
    from flwr.cli.utils import build_pathspec, filter_paths_for_publish, load_gitignore_patterns
    from flwr.supercore.constant import APP_PUBLISH_EXCLUDE_PATTERNS

    root = Path(app_dir).expanduser().resolve()
    gitignore = root / ".gitignore"
    patterns = tuple(load_gitignore_patterns(gitignore.read_bytes() if gitignore.is_file() else b""))
    prune = not any(p.lstrip().startswith("!") for p in patterns)
    dropped = (build_pathspec(patterns), build_pathspec(APP_PUBLISH_EXCLUDE_PATTERNS))
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if prune:
            dirnames[:] = [
                d for d in dirnames if not any(spec.match_file(f"{(rel_dir / d).as_posix()}/") for spec in dropped)
            ]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.resolve().is_relative_to(root):  # as collect_files
                continue
            files[(rel_dir / name).as_posix()] = path
    return filter_paths_for_publish(files)  # type: ignore[return-value]  # Flower types it for str values; it keeps ours
