"""The state directory: the last applied configuration, written so that a crash at any point leaves either
the old or the new file, never a torn one (temp file in the same directory, fsync, rename, fsync of the
directory).

`--state-dir` (default `.vamp/`) holds `gateways.json`, the configuration in the documented shape. On start
the gateway serves it; the `--config` file only seeds a state directory that has none yet.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gateway.config.load import ConfigError, from_dict, to_dict
from gateway.config.model import Config

STATE_FILE = "gateways.json"


class StateError(RuntimeError):
    pass


class StateStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE

    def load(self) -> Config | None:
        """The last applied configuration, or None when the state directory has none yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            return from_dict(json.loads(text))
        except (ValueError, ConfigError) as exc:
            raise StateError(f"{self.path} is not a valid configuration: {exc}") from exc

    def save(self, config: Config) -> None:
        """Atomically replace the stored configuration."""
        data = json.dumps(to_dict(config), indent=2).encode("utf-8") + b"\n"
        write_atomically(self.path, data)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, never a torn one."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
