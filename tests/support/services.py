"""The machine's services the tests use: MariaDB (a throwaway database per test) and Redis."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import pymysql
from yarl import URL

MYSQL_URL = os.environ.get("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def mysql_args() -> dict[str, Any]:
    url = URL(MYSQL_URL)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.user or "root",
        "password": url.password or "",
    }


def redis_problem() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                return "no PONG"
    except OSError as exc:
        return str(exc)
    return None


def mysql_problem() -> str | None:
    try:
        pymysql.connect(**mysql_args(), connect_timeout=3).close()
    except pymysql.err.MySQLError as exc:
        return f"{exc}"
    return None


@dataclass
class MySqlDatabase:
    """A throwaway database on the test MariaDB server."""

    name: str = field(default_factory=lambda: f"gw_test_{uuid.uuid4().hex[:12]}")

    @property
    def url(self) -> str:
        return str(URL(MYSQL_URL).with_path(f"/{self.name}"))

    def execute(self, sql: str) -> None:
        conn = pymysql.connect(**mysql_args(), autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> None:
        self.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")

    def drop(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
