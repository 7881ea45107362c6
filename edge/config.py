"""Configuration schema, loading, and error messages written for field technicians.

Every key of docs/design.md's table is a pydantic field below; the field's
`description` is the human "allowed" text, so the schema, the messages and
config.yaml's comments cannot disagree. Validation is pydantic's (strict: no
"0.5" -> 0.5 coercion, booleans must be true/false); this module only turns
pydantic's errors into one line per problem that names the dotted key, the
bad value, what is allowed and the config file line, and reports them all at once.

An empty file (or an empty section) means "all defaults".
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import os
import re
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edge.errors import one_line, visible
from edge.files import stderr_is_journal
from edge.languages import AUTO, LanguageError, check_language
from edge.limits import BIND_NAME_EXTRA, MAX_BEAM, MAX_SOCKET_PATH, MAX_SPEECH_PAD_MS, MAX_SUBSCRIBERS, MAX_UTTERANCE_S
from edge.vocabulary import (
    DEFAULT_BONUS,
    MAX_BONUS,
    MAX_TERM_CHARS,
    MAX_TERMS,
    MAX_WEIGHT,
    MIN_WEIGHT,
    Prompt,
    Term,
    Vocabulary,
    VocabularyError,
    combine,
    parse_items,
    read_file,
)

ENV_VAR = "EDGE_ASR_CONFIG"
SYSTEM_PATH = Path("/etc/edge-asr/config.yaml")
LIVE_SECTIONS = ("vad", "stream", "log", "vocabulary")  # applied on SIGHUP; every other change needs a restart
LIVE_KEYS = ("model.language", "model.chinese_script")  # ...and these, while model.path stays the same
OTHER_SERVICES = {"captions": "edge-asr-captions", "mqtt": "edge-asr-mqtt"}  # sections the daemon does not read
MAX_CONFIG_BYTES = 256 * 1024  # the documented config is 6 KiB
MAX_CONFIG_DEPTH = 8  # YAML nesting; the schema's deepest key (mqtt.tls.ca_file) is 3
MAX_SHOWN = 80  # characters of a bad value quoted in a message
HIDDEN_KEYS = ("mqtt.password_file",)  # a value a message never quotes: it may be a password given by mistake
EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus= stops restart loops on a bad file


class ConfigError(Exception):
    """All problems found in one config file; str() is one problem per line."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))

    def report(self, path: Path) -> int:
        """Print every problem and a summary line on stderr; return the exit status (EX_CONFIG).

        check-config and a refused start-up print exactly the same lines.
        """
        count = len(self.messages)
        level = _journal_error_prefix()
        for line in [*self.messages, f"{path}: {count} problem{'s' if count != 1 else ''}, not usable"]:
            print(f"{level}{line}", file=sys.stderr)
        return EX_CONFIG


def _journal_error_prefix() -> str:
    """"<3>" when stderr is the journal: these lines come before logging is set up, and journald files
    plain stderr at info, hidden from `journalctl -p warning`."""
    return "<3>" if stderr_is_journal() else ""


def _problem(reason: str) -> PydanticCustomError:
    """A validator failure whose text becomes the middle of our message."""
    return PydanticCustomError("edge", "{reason}", {"reason": reason})


def _whole_problem(message: str, item: int | None = None) -> PydanticCustomError:
    """A validator failure whose text is already the whole message after the key (it names the
    item and what is allowed); `item`, a 1-based list position, picks that item's line."""
    return PydanticCustomError("edge_whole", "{message}", {"message": message, "item": item})


def _base_dir(info: ValidationInfo) -> Path:
    """Directory that relative paths are resolved against (the config file's)."""
    context = info.context or {}
    return Path(context.get("base_dir", Path.cwd()))


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative to the config file; a `~user` this box lacks or a symlink loop is the key's error (they were
    RuntimeError tracebacks)."""
    try:
        return (_base_dir(info) / value.expanduser()).resolve()
    except (RuntimeError, OSError) as exc:
        raise _problem(f"cannot be resolved to a path ({one_line(exc)})") from None


def _require_kind(path: Path, kind: str, *, missing_ok: bool = False, why: str = "") -> Path:
    """`path`, if it is the existing `kind` ("file" or "directory") a key names; else the key's error, `why`
    after it. One the user cannot reach says so: a PermissionError from `sudo -u edge-asr edge-asr
    check-config` was a traceback."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return path
        problem = f"-> {path} does not exist"
    except OSError as exc:
        problem = f"-> {path} cannot be reached ({exc.strerror or exc}; the service user needs access to it)"
    else:
        if stat.S_ISDIR(mode) if kind == "directory" else stat.S_ISREG(mode):
            return path
        problem = f"-> {path} is not a {kind}"
    raise _problem(problem + why)


def _require_absolute(value: Path | None) -> Path | None:
    if value is not None and not value.is_absolute():
        raise _problem("is a relative path")
    return value


def _require_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _problem("is not an IP address") from None
    return value


def _zero_or_range(value: int, low: int, high: int) -> int:
    if value != 0 and not low <= value <= high:
        raise _problem("is out of range")
    return value


def _check_port(value: int) -> int:
    """Unprivileged ports only: the service has no CAP_NET_BIND_SERVICE."""
    return _zero_or_range(value, 1024, 65535)


def _no_nul(value: Path) -> Path:
    """A NUL cannot be in a path: check-config passed "/tmp/a\\0b.sock" and `run` died on it with a traceback."""
    if "\0" in str(value):
        raise _problem("holds a NUL character, which no path can")
    return value


LaxPath = Annotated[Path, Field(strict=False), AfterValidator(_no_nul)]


def _whole(default: int, low: int, high: int, unit: str = "") -> Any:
    """An int field whose message text is derived from its bounds, so they cannot disagree."""
    return Field(default, ge=low, le=high, description=f"a whole number{_of(unit)} from {low} to {high}")


def _number(default: float, low: float, high: float, unit: str = "") -> Any:
    return Field(default, ge=low, le=high, description=f"a number{_of(unit)} from {low} to {high}")


def _auto(allowed: str) -> Any:
    """A key whose default, `auto`, is the model's own value (its manifest's `streaming` entry)."""
    return Field("auto", description=f'"auto" (the model\'s own value) or {allowed}')


def _of(unit: str) -> str:
    return f" of {unit}" if unit else ""


def _port(default: int, zero_means: str) -> Any:
    return Field(default, ge=0, le=65535, description=f"0 ({zero_means}) or a whole number from 1024 to 65535")


class Section(BaseModel):
    """Shared settings: unknown keys are errors, no type coercion, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AudioConfig(Section):
    device: str | Annotated[int, Field(ge=0)] = Field(
        "default", description='"default", a device-name substring, or a device index (0 or more)'
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | int) -> str | int:
        """An empty name is in every device's name: it would pick whichever came first."""
        if isinstance(value, str) and not value.strip():
            raise _problem("is empty (every device's name contains it)")
        return value
    sample_rate: Literal["native"] | Annotated[int, Field(ge=8000, le=192000)] = Field(
        "native", description='"native" or a whole number of Hz from 8000 to 192000'
    )
    channels: Literal["native"] | Annotated[int, Field(ge=1, le=32)] = Field(
        "native", description='"native" or a whole number from 1 to 32'
    )
    block_ms: int = _whole(64, 5, 200, "ms")  # two VAD windows per wake-up: 1.7 % CPU on silence vs 3 % at 20 ms
    ring_buffer_s: float = _number(30, 2, 600, "seconds")
    stall_timeout_ms: int = _whole(2000, 200, 60000, "ms")
    reopen_backoff_max_s: float = _number(30, 1, 600, "seconds")

    @field_validator("stall_timeout_ms")
    @classmethod
    def _stall(cls, value: int, info: ValidationInfo) -> int:
        """A device delivers one block per wake-up, a little late at times: a stall limit of one
        block (200 with block_ms: 200) declared every late block a lost device and reopened it."""
        block_ms = info.data.get("block_ms")
        if block_ms is not None and value < 2 * block_ms:
            raise _whole_problem(f"audio.stall_timeout_ms: {value} is shorter than two blocks of audio.block_ms ({block_ms} ms), so a late "
                                 f"block would count as a lost device; expected at least {2 * block_ms} ms")
        return value


class VadConfig(Section):
    threshold: float = _number(0.5, 0.05, 0.95)
    min_silence_ms: int = _whole(300, 50, 5000, "ms")
    speech_pad_ms: int = _whole(200, 0, MAX_SPEECH_PAD_MS, "ms")
    min_speech_ms: int = _whole(150, 0, 5000, "ms")
    max_utterance_s: Literal["auto"] | Annotated[float, Field(ge=2, le=MAX_UTTERANCE_S)] = _auto(
        f"a number of seconds from 2 to {MAX_UTTERANCE_S}")

    @field_validator("max_utterance_s")
    @classmethod
    def _holds_an_onset(cls, value: str | float, info: ValidationInfo) -> str | float:
        """A start reaches back at most half the limit (the endpointer's `_onset_start`), so speech confirmed
        after longer than that lost its first part: min_speech_ms 3000 with max_utterance_s 2 lost 2 s."""
        min_speech_ms = info.data.get("min_speech_ms")
        if value != AUTO and min_speech_ms is not None and min_speech_ms > value * 500:
            raise _whole_problem(f"vad.min_speech_ms: {min_speech_ms} is more than half of vad.max_utterance_s "
                                 f"({value:g} s), so the first part of the speech would be cut off; "
                                 f"expected at most {value * 500:g} ms, or a max_utterance_s of at "
                                 f"least {min_speech_ms / 500:g} s")
        return value


class StreamConfig(Section):
    partial_interval_ms: Literal["auto"] | Annotated[int, Field(ge=100, le=5000)] = _auto(
        "a whole number of ms from 100 to 5000")
    final_beam: Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_BEAM)] = _auto(f"a whole number from 1 to {MAX_BEAM}")


class ModelConfig(Section):
    path: LaxPath = Field(
        Path("models/whisper-tiny.en-int8"),
        description="an existing model directory containing manifest.json (relative to the config file)",
        validate_default=True,
    )
    threads: int = _whole(0, 0, 64)
    language: str = Field(AUTO, description="auto, or a language code of the model (zh, en, ...)")
    chinese_script: Literal["simplified", "traditional", "taiwan", "hongkong"] = Field(
        "simplified", description="one of simplified, traditional, taiwan, hongkong")

    @field_validator("path")
    @classmethod
    def _model_dir(cls, value: Path, info: ValidationInfo) -> Path:
        path = _require_kind(_resolve(value, info), "directory")
        try:
            if not (path / "manifest.json").is_file():
                raise _problem(f"-> {path} has no manifest.json")
        except OSError as exc:  # a directory the service user may not enter
            raise _problem(f"-> {path} cannot be read ({exc.strerror or exc}; the service user must be able to read the model)") from None
        return path

    @field_validator("language")
    @classmethod
    def _language(cls, value: str, info: ValidationInfo) -> str:
        """Checked against the model's manifest; an unusable model.path is reported on its own."""
        if "path" not in info.data:
            return value
        try:
            return check_language(value, info.data["path"])
        except LanguageError as exc:
            raise _problem(exc.reason) from None
        except (OSError, ValueError):
            return value  # an unreadable manifest: the model load reports it


class InferenceConfig(Section):
    backend: Literal["auto", "cpu", "cuda", "tensorrt", "rknn"] = Field(
        "auto", description="one of auto, cpu, cuda, tensorrt, rknn"
    )
    strict: bool = Field(False, description="true or false")
    timeout_ms: int = _whole(10000, 100, 120000, "ms")
    retry_accelerator_s: int = Field(
        0, ge=0, le=86400, description="0 (never) or a whole number of seconds from 10 to 86400"
    )
    tensorrt_cache_dir: LaxPath = Field(Path("/var/cache/edge-asr/tensorrt"), description="an absolute path")
    tensorrt_fp16: bool = Field(True, description="true or false")
    rknn_model_dir: LaxPath = Field(
        Path("models/whisper-tiny.en-rknn"),
        description="a directory of .rknn files (relative to the config file); must exist when backend is rknn",
        validate_default=True,
    )
    rknn_core_mask: Literal["auto", "0", "1", "2", "0_1", "0_1_2"] = Field(
        "auto", description='one of "auto", "0", "1", "2", "0_1", "0_1_2" (in quotes)'
    )

    _retry = field_validator("retry_accelerator_s")(lambda v: _zero_or_range(v, 10, 86400))
    _cache = field_validator("tensorrt_cache_dir")(_require_absolute)

    @field_validator("rknn_model_dir")
    @classmethod
    def _rknn_dir(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if info.data.get("backend") == "rknn":
            _require_kind(path, "directory", why=" (needed because inference.backend is rknn)")
        return path


class PublishConfig(Section):
    socket: LaxPath = Field(Path("/run/edge-asr/asr.sock"), description="an absolute path")
    socket_mode: str = Field("0660", description='an octal string in quotes from "0600" to "0777", e.g. "0660"')
    socket_group: str | None = Field(None, description="an existing group name, or null for the process's group")
    queue_size: int = _whole(256, 8, 65536, "events")
    max_pending_finals: int = _whole(1024, 16, 65536)
    max_subscribers: int = _whole(64, 1, MAX_SUBSCRIBERS, "connections")
    tcp_port: int = _port(0, "off")
    tcp_host: str = Field("127.0.0.1", description="an IP address, e.g. 127.0.0.1")

    _valid_tcp_port = field_validator("tcp_port")(_check_port)
    _host = field_validator("tcp_host")(_require_ip)

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: Path) -> Path:
        """Absolute, and short enough for a Unix socket's address with the temporary name bound first
        (`BIND_NAME_EXTRA` bytes longer); a longer one passed check-config and stopped `run` ("AF_UNIX path
        too long"), up to 107 bytes until the temporary name was counted."""
        _require_absolute(value)
        size = len(os.fsencode(value))
        if size > MAX_SOCKET_PATH:
            raise _problem(f"is {size} bytes long; expected at most {MAX_SOCKET_PATH} (a Unix socket path holds 107, "
                           f"and the daemon first binds a name {BIND_NAME_EXTRA} bytes longer beside it)")
        return value

    @field_validator("socket_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise _problem("is not an octal number") from None
        if not 0o600 <= mode <= 0o777:
            raise _problem("is out of range")
        return value

    @field_validator("socket_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                grp.getgrnam(value)
            except KeyError:
                raise _problem("is not a group on this machine") from None
        return value


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="one of debug, info, warning, error"
    )


class MetricsConfig(Section):
    enabled: bool = Field(False, description="true or false")
    port: int = _port(9464, "textfile only")
    host: str = Field("127.0.0.1", description="an IP address, e.g. 127.0.0.1")
    textfile: LaxPath | None = Field(
        None, description="null, or an absolute path ending in .prom (node-exporter textfile)"
    )

    _valid_port = field_validator("port")(_check_port)
    _host = field_validator("host")(_require_ip)

    @field_validator("textfile")
    @classmethod
    def _prom(cls, value: Path | None) -> Path | None:
        if _require_absolute(value) is not None and value.suffix != ".prom":
            raise _problem("does not end in .prom (node-exporter ignores other files)")
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> "MetricsConfig":
        """Switched on with no listener and no file, the metrics went nowhere, silently."""
        if self.enabled and self.port == 0 and self.textfile is None:
            raise _whole_problem("metrics.enabled is true but metrics.port is 0 and metrics.textfile is null, so "
                                 "nothing would export the metrics: set a port (1024-65535), a textfile, or enabled: false")
        return self


CAPTION_LINES = (1, 20)  # captions.lines, and the page's ?lines= override
CAPTION_FONT_PX = (16, 200)  # captions.font_size, and the page's ?size= override


def _wildcard(host: str) -> bool:
    """An address that binds every interface, so it collides with any other host on the same port."""
    return ipaddress.ip_address(host).is_unspecified


def split_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8080`) -> (host, port); ValueError's text says what is wrong.

    Unprivileged ports only, like the other listeners: the captions unit has no capabilities.
    """
    host, colon, port = value.rpartition(":")
    if not colon or not (port.isascii() and port.isdigit()):
        raise ValueError("is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("has an IPv6 address without [brackets]")
    if not _is_ip(host):
        raise ValueError("does not start with an IP address")
    if not 1024 <= int(port) <= 65535:
        raise ValueError("has a port out of range")
    return host, int(port)


def _check_listen(value: str) -> str:
    try:
        split_listen(value)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    return value


class CaptionsConfig(Section):
    """The caption page (`edge-asr captions`): where it listens and how it looks by default."""

    listen: str = Field(
        "127.0.0.1:8080",
        description="HOST:PORT with an IP address and a port from 1024 to 65535, e.g. 127.0.0.1:8080 or [::1]:8080",
    )
    lines: int = _whole(4, *CAPTION_LINES, "lines")
    font_size: int = _whole(56, *CAPTION_FONT_PX, "CSS pixels")
    theme: Literal["dark", "light"] = Field("dark", description="one of dark, light")
    title: str = Field(
        "Live captions", max_length=80, description='text of up to 80 characters shown above the captions, or "" for none'
    )

    _listen = field_validator("listen")(_check_listen)


class DebugConfig(Section):
    record_audio_dir: LaxPath | None = Field(
        None, description="null, or an absolute directory (audio is written to disk only when set)"
    )
    record_max_mb: int = _whole(1000, 1, 1_000_000, "MB")  # recording stops there: 115 MB an hour of speech

    @field_validator("record_audio_dir")
    @classmethod
    def _dir(cls, value: Path | None) -> Path | None:
        """Absolute, and a directory if it exists (it is made if not): /etc/passwd stopped `run` at start."""
        return None if value is None else _require_kind(_require_absolute(value), "directory", missing_ok=True)


_BOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _existing_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """A file the bridge reads at start (relative to the config file); checked now so a typo is a config error."""
    if value is None:
        return None
    return _require_kind(_resolve(value, info), "file")


class MqttTlsConfig(Section):
    enabled: bool = Field(False, description="true or false")
    ca_file: LaxPath | None = Field(
        None, description="null (the system's CA certificates), or a PEM CA file (relative to the config file)"
    )
    cert_file: LaxPath | None = Field(
        None, description="null, or the box's PEM client certificate (relative to the config file)"
    )
    key_file: LaxPath | None = Field(
        None, description="null, or the PEM private key of cert_file (relative to the config file)"
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """A file given while TLS is off would silently send the password in clear text: refuse it."""
        if value is not None and info.data.get("enabled") is False:
            raise _problem("is set but mqtt.tls.enabled is false (set enabled: true, or null this key)")
        if value is not None and info.field_name == "key_file" and "cert_file" in info.data and info.data["cert_file"] is None:
            raise _problem("is set but mqtt.tls.cert_file is null (a key needs its certificate)")
        return _existing_file(value, info)


class MqttConfig(Section):
    """The MQTT bridge (`edge-asr mqtt`); box_id and topic_prefix are filled in when left null."""

    enabled: bool = Field(False, description="true or false")
    host: str = Field("localhost", description="the broker's host name or IP address, e.g. mqtt.example.com")
    port: Literal["auto"] | Annotated[int, Field(ge=1, le=65535)] = Field(
        "auto", description='"auto" (1883, or 8883 with mqtt.tls.enabled) or a whole number from 1 to 65535'
    )
    box_id: str | None = Field(
        None, validate_default=True,
        description="null (this machine's host name), or 1-64 letters, digits, '.', '_', '-' (starting with a letter or digit)",
    )
    topic_prefix: str | None = Field(
        None, validate_default=True,
        description='null ("edge-asr/<box_id>"), or topic levels like "acme/rooms/box-17" (no +, #, leading $ or empty level)',
    )
    username: str | None = Field(None, description="null (anonymous), or the broker user name")
    password_file: LaxPath | None = Field(
        None, description="null, or a file whose first line is the password (relative to the config file; "
                          "never the password itself)",
    )
    tls: MqttTlsConfig = Field(default={}, validate_default=True, description="a mapping of mqtt.tls.* keys")
    partials: bool = Field(False, description="true or false")
    status_interval_s: int = _whole(30, 1, 3600, "seconds")
    spool_dir: LaxPath = Field(Path("/var/lib/edge-asr/mqtt"), description="an absolute path")
    spool_max_mb: float = _number(100, 0.1, 100000, "MB")

    _spool = field_validator("spool_dir")(_require_absolute)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if "://" in value:
            raise _problem("is a URL; write the host name only (the port goes in mqtt.port)")
        if _is_ip(value):
            return value
        if ":" in value:
            raise _problem("contains a port; write the host name only and the port in mqtt.port")
        if not _HOST.fullmatch(value):
            raise _problem("is not a host name")
        return value

    @field_validator("box_id")
    @classmethod
    def _box_id(cls, value: str | None) -> str:
        """The default is the host name: one box per machine, and fleet tools already know it."""
        box_id = socket.gethostname() if value is None else value
        if _BOX_ID.fullmatch(box_id):
            return box_id
        raise _problem(f"-> the host name {box_id!r} is not usable as a topic level; set mqtt.box_id"
                       if value is None else "is not usable as one MQTT topic level")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            box_id = info.data.get("box_id")
            return f"edge-asr/{box_id}" if box_id else None
        if "+" in value or "#" in value:
            raise _problem("contains a wildcard (+ or #), which is not allowed when publishing")
        if value.startswith("$"):
            raise _problem("starts with $, which brokers reserve for themselves ($SYS)")
        if any(not level for level in value.split("/")) or any(ch.isspace() or ch == "\0" for ch in value):
            raise _problem("has an empty level (a leading, trailing or double /) or white space")
        return value

    @field_validator("username")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise _problem("is empty (use null for anonymous)")
        return value

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Neither the value nor its path is shown in a message: it may be the password itself."""
        if value is not None and info.data.get("username", "") is None:
            raise _problem("is set but mqtt.username is null (the broker needs both)")
        if value is None:
            return None
        path = _resolve(value, info)
        try:
            return _require_kind(path, "file")
        except PydanticCustomError as exc:
            raise _problem(str(exc.context["reason"]).replace(f"-> {path} ", "")) from None

    @field_validator("tls", mode="before")
    @classmethod
    def _empty_tls(cls, value: Any) -> Any:
        """`tls:` with every key commented out parses as null: treat it as defaults."""
        return {} if value is None else value

    @property
    def broker_port(self) -> int:
        if self.port == "auto":
            return 8883 if self.tls.enabled else 1883
        return self.port

    def warnings(self) -> list[str]:
        """What is valid but exposes the password: sent in clear to a broker off this box (a closed LAN's
        broker may accept that), or a password file others may read. The file is not named."""
        if not self.enabled or self.password_file is None:
            return []
        said = []
        if not self.tls.enabled and not _loopback(self.host):
            said.append(f"mqtt.password_file: the password goes to {self.host} without TLS (mqtt.tls.enabled is "
                        "false): anyone on that network can read it")
        try:
            readable = self.password_file.stat().st_mode & 0o004
        except OSError:
            readable = 0
        if readable:
            said.append("mqtt.password_file: any user of this box may read it (chmod 0640, group edge-asr)")
        return said


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VocabularyConfig(Section):
    """Names and terms the recognizer favours (docs/operations.md: writing a good list)."""

    terms: list[Any] = Field(
        [], description=f"a list of up to {MAX_TERMS} words or phrases of at most {MAX_TERM_CHARS} characters, "
                        f"each text or {{term: ..., weight: {MIN_WEIGHT} to {MAX_WEIGHT}}}",
    )
    file: LaxPath | None = Field(
        None, description="null, or a UTF-8 file with one term per line, optional TAB and weight, # comments "
                          "(relative to the config file)",
    )
    bonus: float = _number(DEFAULT_BONUS, 0, MAX_BONUS)  # log-probability per matched token at weight 1
    prompt: Prompt = Field("auto", description="auto, true or false")

    @field_validator("terms", mode="before")
    @classmethod
    def _terms(cls, value: Any) -> list[Any]:
        """`terms:` with every item commented out parses as null: no terms."""
        value = [] if value is None else value
        try:
            parse_items(value, "vocabulary.terms")
        except VocabularyError as exc:
            raise _whole_problem(str(exc), exc.item) from None
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Read now, so that check-config and a reload report a bad line before it is used."""
        if value is None:
            return None
        path = _resolve(value, info)
        try:
            _configured_terms(info.data.get("terms", []), path)
        except VocabularyError as exc:
            raise _problem(f"-> {exc}") from None
        return path

    def vocabulary(self) -> Vocabulary:
        """The configured list (the file read again: a reload picks up its edits); VocabularyError if it went bad."""
        terms = _configured_terms(self.terms, self.file)
        return Vocabulary(terms, self.bonus, "config" if terms else "none", self.prompt)

    def empty_file_warning(self) -> str | None:
        """A warning when vocabulary.file holds no term (empty, or only comments): valid, but more often a
        truncated copy than a list cleared on purpose. VocabularyError if the file went bad."""
        if self.file is None or read_file(self.file):
            return None
        return f"vocabulary.file {self.file} holds no terms (empty, or only comments): it adds nothing to the list"


def _configured_terms(items: list[Any], path: Path | None) -> tuple[Term, ...]:
    """vocabulary.terms and the terms of vocabulary.file together, within the list's cap."""
    return combine(parse_items(items, ""), read_file(path) if path else (), "vocabulary.terms + file")


def _section(name: str) -> Any:
    """Default {} validated like written data, so defaults see the config file's directory too."""
    return Field(default={}, validate_default=True, description=f"a mapping of {name}.* keys")


class Config(Section):
    """The whole file; `source_path` is where it was loaded from (None if built in code)."""

    audio: AudioConfig = _section("audio")
    vad: VadConfig = _section("vad")
    stream: StreamConfig = _section("stream")
    model: ModelConfig = _section("model")
    inference: InferenceConfig = _section("inference")
    publish: PublishConfig = _section("publish")
    log: LogConfig = _section("log")
    metrics: MetricsConfig = _section("metrics")
    captions: CaptionsConfig = _section("captions")
    debug: DebugConfig = _section("debug")
    mqtt: MqttConfig = _section("mqtt")
    vocabulary: VocabularyConfig = _section("vocabulary")

    _source_path: Path | None = PrivateAttr(None)
    _no_settings: bool = PrivateAttr(False)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """`vad:` with every key commented out parses as null: treat it as defaults."""
        if isinstance(data, dict):
            return {key: {} if value is None and key in cls.model_fields else value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _one_port_each(self) -> "Config":
        """Two listeners on one port: the daemon's would take it first and the other service fail at
        every restart (metrics.port 8080 left the caption page down)."""
        listeners = self._listeners()
        for i, (key, host, port) in enumerate(listeners):
            for other, other_host, other_port in listeners[i + 1 :]:
                if port == other_port and (host == other_host or _wildcard(host) or _wildcard(other_host)):
                    raise _whole_problem(f"{key} and {other} both listen on port {port} ({host} and {other_host}): "
                                         "one of them could not start; give each its own port")
        return self

    def _listeners(self) -> list[tuple[str, str, int]]:
        found = [("captions.listen", *split_listen(self.captions.listen))]
        if self.publish.tcp_port:
            found.append(("publish.tcp_port", self.publish.tcp_host, self.publish.tcp_port))
        if self.metrics.enabled and self.metrics.port:
            found.append(("metrics.port", self.metrics.host, self.metrics.port))
        return found

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def empty_warning(self) -> str | None:
        """A warning when the file sets nothing (empty, only comments, or only empty sections): valid, every key
        its default, but more often a truncated copy than meant, and silent otherwise."""
        if not self._no_settings:
            return None
        return "the file sets no key (empty, only comments, or only empty sections): every setting is its default"


def schema_keys() -> list[str]:
    """Every dotted key, in schema order."""
    return [
        f"{section}.{key}"
        for section, field in Config.model_fields.items()
        for key in field.annotation.model_fields
    ]


def default_config_path(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """--config > $EDGE_ASR_CONFIG > ./config.yaml > /etc/edge-asr/config.yaml."""
    if cli_value:
        return Path(cli_value)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    local = Path("config.yaml")
    return local if local.is_file() else SYSTEM_PATH


def resolve(value: Any, model_value: Any) -> Any:
    """A key's value, with `auto` meaning the model's own (edge.manifest.Tuning)."""
    return model_value if value == "auto" else value


def load_for_command(cli_value: str | os.PathLike[str] | None, *, defaults_if_absent: bool = False) -> Config:
    """The config every command uses: the file `default_config_path` finds, validated; ConfigError otherwise.

    `defaults_if_absent` (diagnostic commands): with no --config and no file at
    the usual places, the documented defaults, relative to the current directory.
    """
    path = default_config_path(cli_value)
    if defaults_if_absent and not cli_value and not path.is_file():
        return parse_config({}, base_dir=Path.cwd())
    return load_config(path)


class _SocketOnly(BaseModel):
    """publish.socket alone, validated as in the whole file."""

    model_config = ConfigDict(extra="ignore")
    publish: PublishConfig = _section("publish")


def configured_socket(cli_value: str | os.PathLike[str] | None) -> Path:
    """publish.socket of the config `default_config_path` finds (the default where there is no --config and no
    file), read even where the file's other keys are invalid: a daemon still runs the config it started with,
    and a technician's edit since (a model.path not yet copied) must not hide it from `listen` and `status`.
    ConfigError where the file cannot be read or publish.socket itself is bad."""
    path = default_config_path(cli_value)
    if not cli_value and not path.is_file():
        return PublishConfig.model_fields["socket"].default
    data, lines = _parse_yaml(_read(path), path)
    if data is not None and not isinstance(data, dict):
        parse_config(data, path.resolve().parent, path)  # raises: the top level is not a mapping
    publish = (data or {}).get("publish")
    if isinstance(publish, dict) or publish is None:  # the other keys are not this reader's to judge
        publish = {"socket": publish["socket"]} if publish and "socket" in publish else {}
    try:
        return _SocketOnly.model_validate({"publish": publish}, context={"base_dir": path.resolve().parent}).publish.socket
    except ValidationError as exc:
        raise ConfigError(_messages(exc, str(path), lines)) from None


def restart_needed(old: Config, new: Config) -> list[str]:
    """Dotted keys of the daemon's that changed but only take effect after a restart."""
    live = LIVE_KEYS if new.model.path == old.model.path else ()
    return [key for key in _changed(old, new)
            if key.split(".")[0] not in (*LIVE_SECTIONS, *OTHER_SERVICES) and key not in live]


def changed_elsewhere(old: Config, new: Config) -> dict[str, list[str]]:
    """Changed keys that another service reads, by its unit: a daemon reload cannot apply them, and a
    daemon restart would not either (the daemon said "needs restart" for captions.title)."""
    found: dict[str, list[str]] = {}
    for key in _changed(old, new):
        unit = OTHER_SERVICES.get(key.split(".")[0])
        if unit:
            found.setdefault(unit, []).append(key)
    return found


def _changed(old: Config, new: Config) -> list[str]:
    before, after = dict(_flatten(old)), dict(_flatten(new))
    return [key for key in after if after[key] != before.get(key)]


def _flatten(config: Config) -> Iterator[tuple[str, Any]]:
    for section, values in config.model_dump().items():
        for key, value in values.items():
            yield f"{section}.{key}", value


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate one file; raises ConfigError listing every problem."""
    path = Path(path)
    text = _read(path)
    data, lines = _parse_yaml(text, path)
    return parse_config(data, base_dir=path.resolve().parent, source=path, lines=lines)


def parse_config(
    data: Any, base_dir: Path, source: Path | None = None, lines: dict[str, int] | None = None
) -> Config:
    """Validate already-parsed data (tests and tools that build configs in code use this)."""
    where = str(source) if source else "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: the top level must be a mapping of sections ({', '.join(Config.model_fields)}), "
                           f"not {_kind(data)}"])
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_messages(exc, where, lines or {})) from None
    config._source_path = source.resolve() if source else None
    config._no_settings = source is not None and all(value in (None, {}) for value in data.values())
    return config


def _read(path: Path) -> str:
    """The file's text: a regular file of at most MAX_CONFIG_BYTES, never a device or a FIFO.

    Opened non-blocking so that a FIFO cannot hang a reload; checked with fstat on the open
    descriptor so that what is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (use --config PATH or set ${ENV_VAR})"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied (the service user must be able to read it)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be opened: {exc.strerror or exc}"]) from None
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            raise ConfigError([f"{path}: is a directory, not a config file"])
        if not stat.S_ISREG(kind):
            raise ConfigError([f"{path}: not a regular file (a device, FIFO or socket cannot be a config file)"])
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a config file is a few KiB"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None


class _Refused(yaml.YAMLError):
    """YAML the config never needs and that costs unbounded work: aliases, deep nesting."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# YAML 1.1 also reads 0200 as octal 128, 1_0 as 10, 1:04 as 64 and 0x40 as 64: a technician's
# `speech_pad_ms: 0200` passed check-config as 128 ms. Only plain decimals are numbers here; the
# rest is text, which a number key refuses with the way to write it (`_reason`).
_PLAIN_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_PLAIN_FLOAT = re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_YAML11_NUMBER = re.compile(r"^[-+]?(?:0[0-7_]+|0[xX][0-9a-fA-F_]+|0[bB][01_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"
                            r"|[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?|[0-9]*\.[0-9]*_[0-9_]*)$")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mapping keys are always text (YAML 1.1 would read `on:` as True),
    whose numbers are plain decimals only and dates text (`_PLAIN_INT`: `captions.title:
    2026-01-01` was a datetime.date), without aliases (an alias bomb of 300 bytes expands to
    gigabytes; a recursive one never ends) and nested at most MAX_CONFIG_DEPTH deep (the schema
    needs 3).
    """

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT, _FLOAT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not allowed in the config: write the value out", self.peek_event().start_mark)
        if self._depth >= MAX_CONFIG_DEPTH:
            raise _Refused(f"nested deeper than {MAX_CONFIG_DEPTH} levels (the config needs 3)", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key_node.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(_INT, _PLAIN_INT, list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, _PLAIN_FLOAT, list("-+0123456789."))


def _parse_yaml(text: str, path: Path) -> tuple[Any, dict[str, int]]:
    try:
        loader = _Loader(text)  # the reader refuses control characters here, before parsing
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([f"{path} line {line}: contains the control character {exc.character!r} "
                           "(only printable text is allowed, comments included)"]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines, problems = _key_lines(node, path)
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_message(exc, path)]) from None
    except (ValueError, OverflowError):  # an integer of over 4300 digits, a date like 2026-13-45
        raise ConfigError([_unreadable_value(node, path)]) from None
    finally:
        loader.dispose()


def _unreadable_value(node: yaml.Node, path: Path) -> str:
    """The first value YAML resolves to a type it then cannot build, and its line
    (each tried by a fresh loader: the failed one still holds the node as in construction)."""
    for item in _scalars(node):
        try:
            _Loader("").construct_object(item)
        except (ValueError, OverflowError) as exc:
            return (f"{path} line {item.start_mark.line + 1}: {_show(item.value)} cannot be read "
                    f"({one_line(exc, 60)}); put text in quotes, or write a number a setting can take")
    return f"{path}: a value cannot be read"


def _scalars(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key)
            yield from _scalars(value)


def _key_lines(node: yaml.Node, path: Path, prefix: str = "") -> tuple[dict[str, int], list[str]]:
    """Line of every dotted key (a list's items as key.1, key.2, ...), and one message per key written twice."""
    lines: dict[str, int] = {}
    problems: list[str] = []
    if isinstance(node, yaml.SequenceNode):
        for number, item in enumerate(node.value, 1):
            lines[f"{prefix}{number}"] = item.start_mark.line + 1
            sub_lines, sub_problems = _key_lines(item, path, f"{prefix}{number}.")
            lines.update(sub_lines)
            problems.extend(sub_problems)
        return lines, problems
    if not isinstance(node, yaml.MappingNode):
        return lines, problems
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        line = key_node.start_mark.line + 1
        if key in lines:
            problems.append(f"{path} line {line}: {key} is set twice (also on line {lines[key]}); keep one")
        lines[key] = line
        sub_lines, sub_problems = _key_lines(value_node, path, key + ".")
        lines.update(sub_lines)
        problems.extend(sub_problems)
    return lines, problems


def _yaml_message(exc: yaml.YAMLError, path: Path) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    if "\\t" in detail or "\t" in detail:
        detail += "; YAML indents with spaces only: replace the TAB with spaces"
    if mark is None:
        return f"{path}: YAML syntax error: {detail}"
    return f"{path} line {mark.line + 1}: YAML syntax error at column {mark.column + 1}: {detail}"


def _messages(exc: ValidationError, where: str, lines: dict[str, int]) -> list[str]:
    """One message per offending key (a union field yields several pydantic errors), in file order."""
    found: dict[str, str] = {}
    for error in exc.errors():
        key, text = _describe(error)
        found.setdefault(key, text)
    ordered = sorted(found, key=lambda key: _line(key, lines) or 1 << 30)
    return [f"{where} line {_line(key, lines)}: {found[key]}" if _line(key, lines) else f"{where}: {found[key]}"
            for key in ordered]


def _line(key: str, lines: dict[str, int]) -> int | None:
    """The line of a dotted key, or of the nearest enclosing key written in the file."""
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return lines.get(key)


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """The key the error is about (with `.N` for a list item whose line is known) and its message."""
    if error["type"] == "edge_whole":
        key = ".".join(_field_path(error["loc"])[0])
        item = error["ctx"]["item"]
        return (f"{key}.{item}" if item else key), error["ctx"]["message"]
    if error["type"] == "extra_forbidden":
        key = ".".join(str(part) for part in error["loc"])
        return key, f"{visible(key)} is not a known key{_suggest(error['loc'])}"
    parts, description = _field_path(error["loc"])
    key = ".".join(parts)
    if error["type"] == "missing":
        return key, f"{key} is missing; expected {description}"
    if error["input"] is None and error["type"] != "edge":
        return key, f"{key} is empty (no value after the colon); expected {description}"
    in_union = len(parts) < len(error["loc"])
    shown = "(not shown)" if key in HIDDEN_KEYS else _show(error["input"])
    return key, f"{key}: {shown} {_reason(error, in_union)}; expected {description}"


def _reason(error: dict[str, Any], in_union: bool) -> str:
    kind = error["type"]
    if kind == "edge":
        return error["ctx"]["reason"]
    if kind == "bool_type" and isinstance(error["input"], str) and error["input"].strip().lower() in ("true", "false"):
        return "is text in quotes; write true or false without quotes"
    if kind == "string_type" and isinstance(error["input"], bool):  # model.language: no (Norwegian)
        return "is true/false (YAML reads a bare yes, no, on or off that way: put the value in quotes)"
    if kind == "string_type" and isinstance(error["input"], (int, float)):
        return f"is {_kind(error['input'])} (put it in quotes to make it text)"
    if (kind in ("int_type", "float_type") or in_union) and isinstance(error["input"], str):
        if _YAML11_NUMBER.match(error["input"]):
            return f"is not a plain decimal number ({_plainly(error['input'])})"
    if in_union:
        return "is not allowed"
    if kind.endswith("_type") or kind == "bool_parsing":
        return f"is {_kind(error['input'])}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return "is out of range"
    if kind == "literal_error":
        return "is not one of the choices"
    if kind == "string_too_long":
        return "is too long"
    return "is not allowed"


def _plainly(written: str) -> str:
    """How to write a YAML 1.1 number ("0200", "1_000", "0x40") so that the config reads it as meant."""
    digits = re.sub(r"^([-+]?)0+(?=[0-9])", r"\1", written.replace("_", ""))
    if _PLAIN_INT.match(digits) or _PLAIN_FLOAT.match(digits):
        return f"YAML 1.1 reads a leading zero as octal and _ as a digit group: write {digits}"
    return "YAML 1.1 reads 0x, 0b and : as other bases: write plain decimal digits"


def _field_path(loc: tuple[Any, ...]) -> tuple[list[str], str]:
    """Cut pydantic's location (which may name union members) down to the schema key."""
    model: Any = Config
    parts: list[str] = []
    description = "a mapping of sections"
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            break
        parts.append(str(part))
        description = fields[part].description or ""
        model = fields[part].annotation
    return parts, description


def _suggest(loc: tuple[Any, ...]) -> str:
    """Did-you-mean over the same section first, then over other sections."""
    name = str(loc[-1])
    if len(loc) == 1:
        misplaced = _misplaced(name)
        if misplaced:
            return misplaced
        candidates = list(Config.model_fields)
    else:
        section = ".".join(str(part) for part in loc[:-1])
        local = list(_model_at(loc[:-1]).model_fields)
        match = difflib.get_close_matches(name, local, n=1)
        if match:
            return f"; did you mean {section}.{match[0]}?"
        candidates = schema_keys()
    by_name = {key.rsplit(".", 1)[-1]: key for key in candidates}
    match = difflib.get_close_matches(name, list(by_name), n=1)
    known = ", ".join(candidates if len(loc) == 1 else local)
    return f"; did you mean {by_name[match[0]]}?" if match else f"; known keys here: {known}"


def _misplaced(name: str) -> str:
    """A top-level key that is a section's key ("threshold", or "vad.threshold" as messages write it):
    the line lost its indent under the section, a common edit."""
    section, dot, leaf = name.partition(".")
    if dot and section in Config.model_fields:
        return f" (YAML does not read a dot as nesting: write `{leaf.split('.')[0]}:` indented under `{section}:`)"
    keys = [key for key in schema_keys() if key.rsplit(".", 1)[-1] == name]
    if not keys:
        return ""
    if len(keys) > 1:
        return f"; did you mean {' or '.join(keys)}? (indent it under its section)"
    section, leaf = keys[0].split(".", 1)
    return f"; did you mean {keys[0]}? (in the file: `{leaf}:` indented under `{section}:`)"


def _model_at(loc: tuple[Any, ...]) -> Any:
    """The section (or nested mapping, like mqtt.tls) that a dotted location names."""
    model: Any = Config
    for part in loc:
        model = model.model_fields[str(part)].annotation
    return model


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    names = {list: "a list", dict: "a mapping", str: "text", int: "a whole number", float: "a decimal number"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """The value roughly as the technician wrote it in YAML, cut to an excerpt: a message
    (and the error event a reload publishes) must stay short whatever was written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        text = f'"{visible(str(value))}"'
    elif isinstance(value, (list, dict)):
        text = visible(yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 16).strip())
    else:
        text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
