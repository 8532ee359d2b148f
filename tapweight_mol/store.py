"""The persistent image cache: PNG depictions keyed by (canonical SMILES, size), in SQLite shards.

A million molecules must not be a million files, and images are drawn where they are needed
(in DataLoader workers, as batches are drawn) by several processes at once, possibly by
several runs sharing the cache. So images live in ``SHARDS`` SQLite databases per image size
(``<root>/<size>px/shard-<i>.sqlite``, the shard picked by the key's first byte), in WAL mode:
readers never wait, a writer waits (up to ``TIMEOUT`` seconds) only for another writer of the
same shard, and a write is one ``INSERT OR IGNORE`` transaction, so two processes drawing the
same molecule both succeed and the first image stays. SQLite answers "database is locked"
without waiting in a few moments (two processes switching a new shard to WAL, a last
connection cleaning up its WAL file, a recovery after a crash: see sqlite.org/wal.html), so
every statement is retried until ``TIMEOUT``. PNG is lossless: an image read back is
pixel for pixel the image that was drawn.

Connections are opened lazily by the process that uses them (a store built in the main
process and handed to forked or spawned workers opens its own there). This module imports no
torch.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
from pathlib import Path

SHARDS = 16
TIMEOUT = 120.0  # seconds a statement waits for another process's lock on the same shard


def key(smiles: str, size: int) -> bytes:
    """The 20-byte key of canonical ``smiles`` drawn at ``size`` pixels."""
    return hashlib.sha1(f"{smiles}|{size}".encode()).digest()


class ImageStore:
    """PNG bytes of molecule images of one ``size``, under ``root``."""

    def __init__(self, root: Path, size: int):
        self.folder = Path(root) / f"{size}px"
        self.size = size
        self._pid = -1
        self._connections: dict[int, sqlite3.Connection] = {}

    def _connection(self, shard: int) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked worker: the parent's connections are not ours
            self._connections, self._pid = {}, os.getpid()
        connection = self._connections.get(shard)
        if connection is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.folder / f"shard-{shard:02d}.sqlite", timeout=TIMEOUT,
                                         isolation_level=None, check_same_thread=False)
            _patiently(connection, "PRAGMA journal_mode=WAL")
            _patiently(connection, "PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed image
            _patiently(connection, "CREATE TABLE IF NOT EXISTS images "
                                   "(key BLOB PRIMARY KEY, png BLOB NOT NULL) WITHOUT ROWID")
            self._connections[shard] = connection
        return connection

    def _execute(self, k: bytes, sql: str, *parameters) -> tuple | None:
        """The first row of ``sql`` run on the shard of key ``k``."""
        return _patiently(self._connection(k[0] % SHARDS), sql, *parameters)

    def get(self, smiles: str) -> bytes | None:
        """The PNG of ``smiles``, or None when it has not been drawn yet."""
        k = key(smiles, self.size)
        row = self._execute(k, "SELECT png FROM images WHERE key = ?", k)
        return None if row is None else row[0]

    def put(self, smiles: str, png: bytes) -> None:
        """Keep the PNG of ``smiles`` (a concurrent writer's copy of it wins if it came first)."""
        k = key(smiles, self.size)
        self._execute(k, "INSERT OR IGNORE INTO images (key, png) VALUES (?, ?)", k, png)

    def __len__(self) -> int:
        """How many images of this size are stored."""
        return sum(_patiently(self._connection(s), "SELECT COUNT(*) FROM images")[0]
                   for s in range(SHARDS))

    def __getstate__(self) -> dict:  # spawned workers: no connections travel
        return {**self.__dict__, "_pid": -1, "_connections": {}}


def _patiently(connection: sqlite3.Connection, sql: str, *parameters) -> tuple | None:
    """The first row of ``sql``, retried while SQLite answers "database is locked" (up to ``TIMEOUT``)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return connection.execute(sql, parameters).fetchone()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.001, 0.02))  # jittered, so that racing processes part
