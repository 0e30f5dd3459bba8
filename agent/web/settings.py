"""Changing one setting in the config file from the console, comments and layout kept (tomlkit).

The new file is checked by the config schema (agent.config.config_from_dict) before it replaces the old one
(atomically, with the old file's permissions: it may hold secrets), so a value the agent would refuse at its
next start is never written. The running agent reads its config once, when it starts: a change takes effect
after a restart (the console says so).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import tomlkit

from agent.config import ConfigError, config_from_dict
from agent.files import atomic_write

log = logging.getLogger(__name__)


class SettingError(ValueError):
    """The setting could not be written (no config file, not writable, not valid); the message says why."""


def write_setting(path: Path | None, section: str, key: str, value: Any, note: str = "") -> Any:
    """Set `[section] key = value` in the config file at `path`, keeping every comment and line of it; a key
    already there keeps its own comment, a new one gets `note` as its comment. Returns the value the file had
    (None: not set). SettingError when there is no file, it cannot be read or written, or the new file would
    not be a valid config."""
    if path is None:
        raise SettingError("the console was started without a config file, so there is none to change: add "
                           f"[{section}] {key} = {value!r} to agent.toml by hand")
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
        doc = tomlkit.parse(text)
    except OSError as exc:
        raise SettingError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomlkit.exceptions.TOMLKitError as exc:
        raise SettingError(f"{path} is not valid TOML ({exc}): fix it by hand first") from None
    if section not in doc:
        doc.add(tomlkit.nl())
        doc.add(section, tomlkit.table())
    table = doc[section]
    old = table.get(key)
    item = tomlkit.item(value)
    if old is not None and getattr(old, "trivia", None) is not None and old.trivia.comment:
        item.trivia.comment_ws = old.trivia.comment_ws
        item.trivia.comment = old.trivia.comment
    elif note:
        item.comment(note)
    table[key] = item
    new_text = tomlkit.dumps(doc)
    try:
        config_from_dict(tomlkit.parse(new_text).unwrap(), base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise SettingError(f"not written: {exc}") from None
    try:
        atomic_write(path, new_text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise SettingError(f"cannot write {path}: {exc.strerror or exc} (the console's user needs write access "
                           "to the file and its folder; or set it by hand)") from None
    log.info("web: %s: [%s] %s = %r (was %r)", path, section, key, value,
             old.unwrap() if hasattr(old, "unwrap") else old)
    return old.unwrap() if hasattr(old, "unwrap") else old

