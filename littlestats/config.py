"""The one typed configuration object.

Settings come from, in increasing priority: defaults, a TOML file (``littlestats.toml`` in the data
directory or the file named by ``LITTLESTATS_CONFIG``), ``LITTLESTATS_*`` environment variables, and
command-line options. They are read once, at start; no other module reads the environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "LITTLESTATS_"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "littlestats"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    # Authentication off for local development; refused on anything but loopback (SPEC §11).
    dev: bool = False
    # Client IP is taken from X-Forwarded-For only when the peer is one of these networks.
    trusted_proxies: tuple[str, ...] = ()
    # A trusted proxy's country header (e.g. "CF-IPCountry") wins over the IP database.
    country_header: str = ""
    # A MaxMind/DB-IP country or city .mmdb; overrides the bundled database.
    geoip_mmdb: str = ""
    # Drop referrer spam and visits from cloud providers' networks (ingest/traffic.py) on this
    # instance; each site may still turn either off for itself.
    drop_referrer_spam: bool = True
    drop_datacenter_ips: bool = True
    # Request limits (SPEC §3).
    max_body_bytes: int = 64 * 1024
    max_batch_events: int = 100
    max_props: int = 30
    max_prop_key_length: int = 64
    max_prop_value_length: int = 500
    max_string_length: int = 2000
    # Slow or oversized requests (littlestats/worker.py): a request's line and headers must
    # arrive within this many seconds and its body may pause no longer between two reads;
    # header bytes and count are capped (431).
    request_header_timeout_seconds: float = 10.0
    request_body_timeout_seconds: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    # Client timestamps (`ts`) are accepted this far in the past, never in the future.
    client_ts_window_hours: int = 24
    # Write-ahead log: segments are rotated (and then sealed into Parquet) this often.
    segment_seconds: float = 30.0
    # Warehouse loads run this often inside `serve`.
    load_interval_seconds: float = 60.0
    # A job run by hand (`littlestats load`, `backfill`, ...) waits this long for the warehouse
    # database while another process holds it, or for a running server's warehouse process.
    job_wait_seconds: float = 120.0
    # Rows per load transaction when a backlog is loaded (bounds the loader's memory).
    load_chunk_rows: int = 1_000_000
    # DuckDB limits for the warehouse process (it spills to disk beyond the memory limit).
    warehouse_memory_limit: str = "2GB"
    warehouse_threads: int = 0  # 0 = one per core
    # DuckDB writes its write-ahead log into the database file once the log is this big. Rarer
    # checkpoints rewrite the busy row groups (recent hours and days) once for many loads.
    warehouse_checkpoint_threshold: str = "256MB"
    # Analysts' read-only SQL (`littlestats sql`, POST /api/v2/sql): a query is stopped after this
    # many seconds and answers at most this many rows (a request may ask for less).
    sql_time_limit_seconds: float = 30.0
    sql_max_rows: int = 100_000
    # Default retention for new sites; pre-aggregates are kept this long (0 = forever).
    default_retention_days: int = 0
    rollup_retention_days: int = 0
    log_level: str = "info"
    log_format: str = "text"  # text | json (one JSON object per line)
    # Testing hook: `pause:<step>` stops an erasure at that step until killed (warehouse.erase).
    erase_fault: str = ""
    # Outgoing mail for scheduled reports and alerts (docs/reports.md). No host: nothing is sent.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"  # starttls | tls (implicit, usually port 465) | none
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_timeout_seconds: float = 15.0
    # Webhooks (docs/reports.md): receivers must be HTTPS; plain http is accepted only for a
    # loopback receiver when this is on (development and tests).
    webhook_allow_http_loopback: bool = False
    # A PEM file of extra certificate authorities trusted for webhook receivers (an internal CA).
    webhook_ca_file: str = ""
    webhook_timeout_seconds: float = 10.0
    # Several machines (docs/cluster.md). All empty: one machine, everything in data_dir.
    # This machine's name in the cluster (unique per node; its raw files and leases carry it).
    node_name: str = ""
    # S3-compatible object storage for the raw Parquet files (same Hive layout under s3_prefix).
    s3_endpoint: str = ""  # e.g. http://10.0.0.5:7480
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # The shared catalog and load leases: a PostgreSQL connection string.
    catalog_dsn: str = ""
    # A node's load lease lasts this long unless renewed (every third of it): a killed loader's
    # work is taken over this long after its last renewal (docs/cluster.md).
    load_lease_seconds: float = 30.0
    # The broker that carries every node's accepted events to every node's live buffer.
    broker_url: str = ""  # nats://host:4222

    @property
    def clustered(self) -> bool:
        """Whether this node is one of several sharing object storage, a catalog and a broker."""
        return bool(self.s3_endpoint or self.catalog_dsn or self.broker_url)

    @property
    def smtp_configured(self) -> bool:
        """Whether reports and alerts can be mailed (an SMTP host and a From address are set)."""
        return bool(self.smtp_host and self.smtp_from)

    # Derived locations inside the data directory -------------------------------------------
    @property
    def control_db(self) -> Path:
        return self.data_dir / "control.sqlite3"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def warehouse_db(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def warehouse_socket(self) -> Path:
        return self.run_dir / "warehouse.sock"

    @property
    def metrics_dir(self) -> Path:
        """Prometheus's multiprocess files. They are memory-mapped, and a write to a page that the
        disk cannot back kills the process (SIGBUS): so they live in memory (``/dev/shm``, one
        folder per data directory) where there is one, never on the data disk that may fill up."""
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
            return shm / f"littlestats-metrics-{digest}"
        return self.run_dir / "metrics"

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies]

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.wal_dir, self.raw_dir, self.run_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)  # private (littlestats.permissions)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, to hand to child processes."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


def _coerce(name: str, raw: Any, typ: Any) -> Any:
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is Path:
            return Path(raw).expanduser()
        if typ == tuple[str, ...]:
            if isinstance(raw, (list, tuple)):
                return tuple(str(x) for x in raw)
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from exc


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, the config file, the environment and ``overrides``.

    ``overrides`` holds command-line options; ``None`` values are ignored.
    """
    environ = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}

    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG"
    }
    cli_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    data_dir = Path(
        cli_values.get("data_dir") or env_values.get("data_dir") or default_data_dir()
    ).expanduser()

    config_file = environ.get(ENV_PREFIX + "CONFIG")
    path = Path(config_file) if config_file else data_dir / "littlestats.toml"
    if path.is_file():
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        values.update(file_values)
    elif config_file:
        raise ConfigError(f"config file {path} does not exist")

    values.update(env_values)
    values.update(cli_values)
    values["data_dir"] = data_dir

    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in hints:
            if name in env_values:
                continue  # unrelated LITTLESTATS_* variables are not ours to judge
            raise ConfigError(f"unknown setting {name!r}")
        kwargs[name] = _coerce(name, raw, hints[name])
    settings = Settings(**kwargs)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.workers < 1:
        raise ConfigError("setting 'workers' must be at least 1")
    if not 0 < s.port < 65536:
        raise ConfigError("setting 'port' must be between 1 and 65535")
    try:
        s.trusted_networks()
    except ValueError as exc:
        raise ConfigError(f"setting 'trusted_proxies': {exc}") from exc
    if s.log_format not in ("text", "json"):
        raise ConfigError("setting 'log_format' must be 'text' or 'json'")
    if s.smtp_security not in ("starttls", "tls", "none"):
        raise ConfigError("setting 'smtp_security' must be 'starttls', 'tls' or 'none'")
    if s.smtp_host and not s.smtp_from:
        raise ConfigError("setting 'smtp_from' is needed when 'smtp_host' is set (the reports' From address)")
    if s.webhook_ca_file and not Path(s.webhook_ca_file).is_file():
        raise ConfigError(f"setting 'webhook_ca_file': file {s.webhook_ca_file} does not exist")
    if s.clustered and not s.node_name:
        raise ConfigError("setting 'node_name' is needed on a cluster node (unique per machine;"
                          " see docs/cluster.md)")
    if s.load_lease_seconds < 1:
        raise ConfigError("setting 'load_lease_seconds' must be at least 1")
    if s.s3_endpoint and not s.s3_bucket:
        raise ConfigError("setting 's3_bucket' is needed when 's3_endpoint' is set")
    if s.geoip_mmdb and not Path(s.geoip_mmdb).is_file():
        raise ConfigError(f"setting 'geoip_mmdb': file {s.geoip_mmdb} does not exist")
