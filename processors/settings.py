"""The environment the ledger's processes read (SPEC §5's CLI variables), in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from processors.ledger.config import Asset, LedgerConfig
from schemas.topics import DEFAULT_PARTITIONS, ENV_PARTITIONS, Topics

__all__ = [
    "ENV_ASSETS",
    "ENV_DATA_DIR",
    "ENV_HTTP_PORT",
    "LedgerEnvironment",
    "default_data_dir",
    "ledger_config_from_env",
    "parse_assets",
]

ENV_DATA_DIR = "LEDGER_DATA_DIR"
ENV_HTTP_PORT = "LEDGER_HTTP_PORT"
ENV_ASSETS = "LEDGER_ASSETS"  # "1:USD:2,2:EUR:2": ledger:code:scale, comma-separated


def parse_assets(text: str) -> dict[int, Asset]:
    """`ledger:code:scale` entries, comma-separated, e.g. "1:USD:2,2:EUR:2"."""
    assets: dict[int, Asset] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            ledger_text, code, scale_text = item.split(":")
            ledger, scale = int(ledger_text), int(scale_text)
        except ValueError:
            raise ValueError(
                f"{ENV_ASSETS}: {item!r} is not ledger:code:scale (e.g. 1:USD:2)"
            ) from None
        if not 0 < ledger < 2**32 or not 0 <= scale <= 255 or not code:
            raise ValueError(f"{ENV_ASSETS}: {item!r}: ledger 1..2^32-1, scale 0..255, a code")
        assets[ledger] = Asset(code, scale)
    return assets


def ledger_config_from_env() -> LedgerConfig:
    return LedgerConfig(assets=parse_assets(os.environ.get(ENV_ASSETS, "")))


def default_data_dir() -> Path:
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    return Path(base) / "ledger"


@dataclass(frozen=True)
class LedgerEnvironment:
    topics: Topics
    partitions: int
    data_dir: Path
    http_port: int

    @classmethod
    def from_env(cls) -> LedgerEnvironment:
        raw_partitions = os.environ.get(ENV_PARTITIONS, str(DEFAULT_PARTITIONS))
        raw_port = os.environ.get(ENV_HTTP_PORT, "8080")
        try:
            partitions = int(raw_partitions)
        except ValueError:
            raise ValueError(f"{ENV_PARTITIONS}: not an integer: {raw_partitions!r}") from None
        try:
            http_port = int(raw_port)
        except ValueError:
            raise ValueError(f"{ENV_HTTP_PORT}: not an integer: {raw_port!r}") from None
        if not 1 <= partitions <= 64:
            raise ValueError(f"{ENV_PARTITIONS}: must be within 1..64, got {partitions}")
        return cls(Topics.from_env(), partitions, default_data_dir(), http_port)
