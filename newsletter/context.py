"""What every command and the web app need: the resolved config, the store, the segments and topics.

The store opens only an existing newsletter database; `create_store` (for `init` alone) may make a new one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .segments import Segment, load_segments
from .settings import Config, load_config
from .store import Store
from .topics import Topics, load_topics


class Context:
    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def load(cls, config_path: str | Path | None = None, **kw: Any) -> "Context":
        return cls(load_config(config_path, **kw))

    @functools.cached_property
    def store(self) -> Store:
        return Store(self.config.database, secret=self.config.secret)

    def create_store(self) -> Store:
        """Open the database, creating it when missing or empty: what `newsletter init` does, and only it."""
        store = self.__dict__["store"] = Store(self.config.database, create=True, secret=self.config.secret)
        return store

    @functools.cached_property
    def segments(self) -> dict[str, Segment]:
        return load_segments(self.config.segments_file or None)

    @functools.cached_property
    def topics(self) -> Topics:
        return load_topics(self.config.topics_file or None)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
