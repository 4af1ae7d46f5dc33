"""Load `Settings`: application.yml, then application-{profile}.yml, then MLPLATFORM_* variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import SecretStr, ValidationError

from mlplatform.settings import Settings

ENV_PREFIX = "MLPLATFORM_"
# Read by the command line client, not settings of the server.
_NOT_KEYS = {"MLPLATFORM_PROFILE", "MLPLATFORM_CONFIG_DIR", "MLPLATFORM_URL", "MLPLATFORM_API_KEY"}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
# Children of these keys are names (logger names), not settings keys: never rewritten.
_FREE_FORM = {"level", "fallbacks"}
REDACTED = "******"
# The wheel carries a copy of the repository's config/ here (pyproject.toml, force-include), so an installed
# mlplatform finds its profiles wherever it runs.
BUNDLED_CONFIG = Path(__file__).parent / "bundled_config"


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message is one line naming the key."""


def active_profiles(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("MLPLATFORM_PROFILE") or environ.get("SPRING_PROFILES_ACTIVE") or ""
    return [p.strip() for p in raw.split(",") if p.strip()]


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings. `overrides` (nested, kebab or snake keys) win over everything."""
    env = dict(os.environ if environ is None else environ)
    folder = config_dir or default_config_dir(env)
    profiles = active_profiles(env)
    data: dict[str, Any] = {}
    for name in ["application.yml", *[f"application-{p}.yml" for p in profiles]]:
        path = folder / name
        if path.is_file():
            _merge(data, _normalise(_read_yaml(path)))
        elif name != "application.yml":
            raise ConfigError(f"profile {name[12:-4]!r}: {path} does not exist")
    data = _interpolate(data, env, "")
    for parts, value in _environment_overrides(env).items():
        _set_path(data, parts, value)
    if overrides:
        _merge(data, _normalise(dict(overrides)))
    data["profile"] = ",".join(profiles) or "default"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def default_config_dir(environ: Mapping[str, str]) -> Path:
    """MLPLATFORM_CONFIG_DIR, else ./config when there is one (a checkout, an operator's own), else the copy
    in the installed package."""
    if environ.get("MLPLATFORM_CONFIG_DIR"):
        return Path(environ["MLPLATFORM_CONFIG_DIR"])
    local = Path("config")
    if not local.is_dir() and BUNDLED_CONFIG.is_dir():
        return BUNDLED_CONFIG
    return local


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return loaded


def _normalise(node: Any, free_form: bool = False) -> Any:
    if isinstance(node, dict):
        return {
            (str(k) if free_form else str(k).replace("_", "-")): _normalise(v, str(k) in _FREE_FORM)
            for k, v in node.items()
        }
    return node


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _lookup(name: str, env: Mapping[str, str]) -> str | None:
    if name in env:
        return env[name]
    file_name = env.get(f"{name}_FILE")
    if file_name:
        return _read_secret_file(file_name, name + "_FILE")
    return None


def _read_secret_file(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path} ({exc.strerror})") from None


def _interpolate(node: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, env, f"{where}.{k}" if where else k) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), env)
        if value is None:
            if match.group(2) is None:
                raise ConfigError(
                    f"{where}: ${{{match.group(1)}}} is not set "
                    f"(set {match.group(1)} or {match.group(1)}_FILE, or give a default)"
                )
            return match.group(2)
        return value

    result = _PLACEHOLDER.sub(replace, node)
    # A value that is only an empty placeholder means "not set" (optional secrets, endpoints).
    if result == "" and _PLACEHOLDER.fullmatch(node):
        return None
    return result


def _environment_overrides(env: Mapping[str, str]) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_KEYS:
            continue
        key = name[len(ENV_PREFIX) :]
        value: Any = raw
        if key.endswith("_FILE"):
            key = key[: -len("_FILE")]
            value = _read_secret_file(raw, name)
        parts = [p.lower().replace("_", "-") for p in key.split("__") if p]
        if parts:
            found[tuple(parts)] = _parse_scalar(value)
    return found


def _parse_scalar(value: str) -> Any:
    if value.startswith(("[", "{")):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def _set_path(data: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known key"
        elif "input" in error and not isinstance(error["input"], dict | list):
            shown = REDACTED if _looks_secret(key) else repr(error["input"])
            message = f"{message} (got {shown})"
        problems.append(f"{key}: {message}")
    return "; ".join(problems)


def _looks_secret(key: str) -> bool:
    return any(word in key for word in ("password", "secret", "key", "token"))


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with secrets and URL passwords masked."""
    shown: dict[str, Any] = _redact(settings.model_dump(mode="python", by_alias=True))
    return shown


def _redact(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v) for v in node]
    if isinstance(node, SecretStr):
        return REDACTED if node.get_secret_value() else ""
    if isinstance(node, str) and "://" in node:
        return redact_url(node)
    return node


def redact_url(url: str) -> str:
    """Mask the password (and secret query values) of a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc and not any(_looks_secret(k.lower()) for k in parts.query.split("&")):
        return url  # nothing to hide: keep the URL exactly as written
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = "&".join(
        f"{k}={REDACTED}" if _looks_secret(k.lower()) else f"{k}={v}" if sep else k
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
