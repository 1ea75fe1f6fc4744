"""TLS and basic auth for the HTTP server, from a Prometheus exporter-toolkit `web-config.yml`.

The file format is the one every Prometheus exporter reads, so operators
reuse what they have:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # mutual TLS
      client_ca_file: clients-ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hash

Options that would restrict clients further but cannot be honoured here are
refused rather than ignored. Relative paths are relative to the file.
"""

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Client-auth types that accept certificates without verifying them: Python's
# ssl module cannot ask for a certificate without verifying it.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OLD_VERSIONS = ("TLS10", "TLS11")
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
_TLS_KEYS |= {"max_version", "prefer_server_cipher_suites"}
# Options of the format that restrict who may connect: refused, never ignored.
_UNSUPPORTED = {"cipher_suites", "curve_preferences", "client_allowed_sans", "cert", "key"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}


class WebConfigError(ValueError):
    """The web config file cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files a TLS context was loaded from."""

    cert: Path
    key: Path
    client_ca: Path | None


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the server needs: a TLS context (or none) and the basic-auth users (or none)."""

    path: Path
    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes] = field(default_factory=dict)
    client_auth: str = "NoClientCert"
    tls_files: TlsFiles | None = None

    def files(self) -> tuple[Path, ...]:
        """Return the web config file and the files it names."""
        if self.tls_files is None:
            return (self.path,)
        tls = self.tls_files
        return (self.path, tls.cert, tls.key, *([tls.client_ca] if tls.client_ca else []))

    def __repr__(self) -> str:
        return (
            f"WebConfig(path={self.path}, tls={self.ssl_context is not None}, "
            f"client_auth={self.client_auth}, users={sorted(self.users)})"
        )


def _kind(value: object) -> str:
    """Name the YAML type of a value, for messages that must not quote it."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        msg = f"{where} must be a mapping, not {_kind(value)}"
        raise WebConfigError(msg)
    for key in value:
        if not isinstance(key, str):
            msg = f"{where}: the key {key!r} is not a string"
            raise WebConfigError(msg)
    return value


def _text(section: Mapping[str, Any], key: str, where: str) -> str | None:
    """Return a string option, None when absent or empty."""
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        msg = f"{where}.{key} must be a string, not {_kind(value)}"
        raise WebConfigError(msg)
    return value


def _flag(section: Mapping[str, Any], key: str, where: str) -> None:
    """Check that a true/false option, when given, is one."""
    value = section.get(key)
    if value is not None and not isinstance(value, bool):
        msg = f"{where}.{key} must be true or false, not {_kind(value)}"
        raise WebConfigError(msg)


def _file(base: Path, tls: Mapping[str, Any], key: str) -> Path | None:
    value = _text(tls, key, "tls_server_config")
    if value is None:
        return None
    path = base / value
    if not path.is_file():
        msg = f"tls_server_config.{key}: {path} is not a readable file"
        raise WebConfigError(msg)
    return path


def _version(tls: Mapping[str, Any], key: str) -> ssl.TLSVersion | None:
    value = _text(tls, key, "tls_server_config")
    if value is None:
        return None
    if value in _OLD_VERSIONS:
        msg = f"tls_server_config.{key}: {value} is refused; TLS 1.2 is the oldest allowed"
        raise WebConfigError(msg)
    if value not in _VERSIONS:
        msg = f"tls_server_config.{key}: {value!r} is not one of {', '.join(_VERSIONS)}"
        raise WebConfigError(msg)
    return _VERSIONS[value]


def _tls_context(base: Path, tls: Mapping[str, Any]) -> tuple[ssl.SSLContext, str, TlsFiles]:
    for option in sorted(tls.keys() - _TLS_KEYS):
        why = "not supported by this exporter" if option in _UNSUPPORTED else "unknown option"
        msg = f"tls_server_config.{option}: {why}; remove it"
        raise WebConfigError(msg)
    cert, key = _file(base, tls, "cert_file"), _file(base, tls, "key_file")
    if cert is None or key is None:
        msg = "tls_server_config needs both cert_file and key_file"
        raise WebConfigError(msg)
    client_ca = _file(base, tls, "client_ca_file")
    _flag(tls, "prefer_server_cipher_suites", "tls_server_config")
    client_auth = _text(tls, "client_auth_type", "tls_server_config") or (
        "RequireAndVerifyClientCert" if client_ca else "NoClientCert"
    )
    if client_auth in _UNVERIFIED_CLIENT_AUTH:
        msg = (
            f"tls_server_config.client_auth_type: {client_auth} (client certificates not "
            "verified) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
        raise WebConfigError(msg)
    if client_auth not in _CLIENT_AUTH:
        msg = f"tls_server_config.client_auth_type: {client_auth!r} is not one of " + ", ".join(
            [*_CLIENT_AUTH, *_UNVERIFIED_CLIENT_AUTH]
        )
        raise WebConfigError(msg)
    if _CLIENT_AUTH[client_auth] != ssl.CERT_NONE and client_ca is None:
        msg = f"tls_server_config: client_auth_type {client_auth} needs client_ca_file"
        raise WebConfigError(msg)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _version(tls, "min_version") or ssl.TLSVersion.TLSv1_2
    maximum = _version(tls, "max_version")
    if maximum is not None:
        if maximum < context.minimum_version:
            msg = "tls_server_config: max_version is older than min_version"
            raise WebConfigError(msg)
        context.maximum_version = maximum
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
    except (ssl.SSLError, OSError, ValueError) as exc:
        msg = f"tls_server_config: cannot load the certificate, key or client CA: {exc}"
        raise WebConfigError(msg) from None
    context.verify_mode = _CLIENT_AUTH[client_auth]
    return context, client_auth, TlsFiles(cert, key, client_ca)


def _users(value: object) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for name, hashed in _mapping(value, "basic_auth_users").items():
        if not name or ":" in name:
            msg = f"basic_auth_users: {name!r} is not a user name (non-empty, no ':')"
            raise WebConfigError(msg)
        # Never echo the hash: it is a secret too (it can be attacked offline).
        if not isinstance(hashed, str):
            msg = f"basic_auth_users.{name} must be a string (a bcrypt hash), not {_kind(hashed)}"
            raise WebConfigError(msg)
        if not _is_bcrypt(hashed.encode()):
            msg = f"basic_auth_users.{name}: the value is not a bcrypt hash ($2a$, $2b$ or $2y$)"
            raise WebConfigError(msg)
        users[name] = hashed.encode()
    return users


def _is_bcrypt(hashed: bytes) -> bool:
    if len(hashed) != 60 or hashed[:4] not in (b"$2a$", b"$2b$", b"$2y$"):
        return False
    try:
        bcrypt.checkpw(b"", hashed)
    except ValueError:
        return False
    return True


def load_web_config(path: Path) -> WebConfig:
    """Read and check the file; raise WebConfigError saying what is wrong."""
    return build(path, read_file(path))


def read_file(path: Path) -> dict[str, Any]:
    """Parse the file into its top-level mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise WebConfigError(msg) from None
    except yaml.YAMLError as exc:
        # Name the place only: PyYAML's own message quotes the file, hashes and all.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        msg = f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or 'syntax error'}"
        raise WebConfigError(msg) from None
    except UnicodeDecodeError:
        msg = f"{path} is not UTF-8 text"
        raise WebConfigError(msg) from None
    except RecursionError:
        msg = f"{path} is nested too deeply to be a web config"
        raise WebConfigError(msg) from None
    return _mapping(data, str(path))


def build(path: Path, top: Mapping[str, Any]) -> WebConfig:
    """Check the options of a parsed file and load the files they name."""
    for key in sorted(top.keys() - _TOP_KEYS):
        msg = f"{key}: unknown option of a web config file"
        raise WebConfigError(msg)
    http = _mapping(top.get("http_server_config"), "http_server_config")
    for key in sorted(http):
        if key != "http2":
            msg = f"http_server_config.{key}: not supported by this exporter; remove it"
            raise WebConfigError(msg)
    _flag(http, "http2", "http_server_config")
    tls = _mapping(top.get("tls_server_config"), "tls_server_config")
    users = _users(top.get("basic_auth_users"))
    if not tls:
        return WebConfig(path, None, users)
    context, client_auth, files = _tls_context(path.parent, tls)
    return WebConfig(path, context, users, client_auth, files)


def named_files(path: Path, top: Mapping[str, Any]) -> list[Path]:
    """Return the files a parsed config names, as far as it names them properly."""
    tls = top.get("tls_server_config")
    if not isinstance(tls, dict):
        return []
    names = (tls.get(key) for key in ("cert_file", "key_file", "client_ca_file"))
    return [path.parent / name for name in names if isinstance(name, str) and name]
