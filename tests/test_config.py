"""Config schema, loading and the messages a field technician sees."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.commands import check_config
from edge import config as config_module
from edge.config import (
    EX_CONFIG,
    SYSTEM_PATH,
    Config,
    ConfigError,
    changed_elsewhere,
    default_config_path,
    load_config,
    parse_config,
    restart_needed,
    schema_keys,
)

REPO = Path(__file__).resolve().parents[1]
REPO_CONFIG = REPO / "config.yaml"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A directory holding a minimal model so model.path can be valid."""
    model = tmp_path / "models" / "whisper-tiny.en-int8"
    model.mkdir(parents=True)
    (model / "manifest.json").write_text("{}")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(text)
    return path


def problems(directory: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(directory, text))
    assert str(info.value) == "\n".join(info.value.messages)
    return info.value.messages


def test_repo_config_loads_with_all_defaults(config_dir: Path) -> None:
    loaded = load_config(write(config_dir, REPO_CONFIG.read_text()))
    built = parse_config({}, base_dir=config_dir)
    assert loaded.model_dump() == built.model_dump()
    assert loaded.model.path == (config_dir / "models" / "whisper-tiny.en-int8").resolve()
    assert loaded.source_path == (config_dir / "config.yaml").resolve()
    assert loaded.vad.threshold == 0.5 and loaded.publish.socket_mode == "0660"


def test_repo_config_lists_every_key_with_a_comment() -> None:
    data = yaml.safe_load(REPO_CONFIG.read_text())
    written = [f"{section}.{key}" for section, values in data.items() for key in values]
    assert written == schema_keys()
    leaves = [line for line in REPO_CONFIG.read_text().splitlines() if re.match(r"^  \w+:", line)]
    assert len(leaves) == len(schema_keys())
    uncommented = [line for line in leaves if not re.search(r"\s#\s\S", line)]
    assert uncommented == []


def test_schema_matches_design_table() -> None:
    design = (REPO / "docs" / "design.md").read_text()
    documented = re.findall(r"^\| `(\w+\.\w+)` \|", design, flags=re.M)
    assert documented == schema_keys()


def test_empty_file_means_defaults(config_dir: Path) -> None:
    assert load_config(write(config_dir, "# nothing here\n")).stream.final_beam == "auto"


@pytest.mark.parametrize("text", ["", "# nothing here\n", "vad:\nstream: {}\n"])
def test_a_file_that_sets_nothing_is_valid_with_a_warning(config_dir: Path, text: str, capsys) -> None:
    """A truncated copy looks like this: every key silently its default, but for the warning."""
    assert load_config(write(config_dir, text)).empty_warning() == (
        "the file sets no key (empty, only comments, or only empty sections): every setting is its default")
    assert load_config(write(config_dir, "vad:\n  threshold: 0.5\n")).empty_warning() is None
    assert parse_config({}, base_dir=config_dir).empty_warning() is None  # defaults built in code: no file


def test_yaml_11_numbers_stay_text_where_text_is_meant(config_dir: Path) -> None:
    """YAML 1.1 read 0042 as 34, 10:30 as 630 and 2026-01-01 as a date; only plain decimals are numbers."""
    config = load_config(write(config_dir, "publish:\n  socket_mode: 0660\nmqtt:\n  box_id: 0042\n"
                                           "captions:\n  title: 10:30\ninference:\n  rknn_core_mask: 0_1\n"))
    assert (config.publish.socket_mode, config.mqtt.box_id, config.captions.title) == ("0660", "0042", "10:30")
    assert config.inference.rknn_core_mask == "0_1"
    assert load_config(write(config_dir, "captions:\n  title: 2026-01-01\n")).captions.title == "2026-01-01"
    config = load_config(write(config_dir, "vad:\n  threshold: .25\n  speech_pad_ms: -0\naudio:\n  ring_buffer_s: 1e2\n"))
    assert (config.vad.threshold, config.vad.speech_pad_ms, config.audio.ring_buffer_s) == (0.25, 0, 100.0)


def test_empty_section_means_defaults(config_dir: Path) -> None:
    assert load_config(write(config_dir, "vad:\n  # threshold: 0.9\n")).vad.threshold == 0.5


def test_every_problem_is_reported_at_once_in_file_order(config_dir: Path) -> None:
    messages = problems(config_dir, "vad:\n  threshold: 1.5\nstream:\n  final_beam: 0\nlog:\n  level: loud\n")
    assert [m.split(": ", 2)[1] for m in messages] == ["vad.threshold", "stream.final_beam", "log.level"]
    assert messages[0].endswith("config.yaml line 2: vad.threshold: 1.5 is out of range; "
                                "expected a number from 0.05 to 0.95")
    assert "line 6" in messages[2] and '"loud"' in messages[2] and "debug, info, warning, error" in messages[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('audio:\n  block_ms: "20"\n', 'audio.block_ms: "20" is text; expected a whole number of ms from 5 to 200'),
        ("audio:\n  block_ms: 20.0\n", "audio.block_ms: 20.0 is a decimal number; expected a whole number"),
        ("inference:\n  strict: 1\n", "inference.strict: 1 is a whole number; expected true or false"),
        ('inference:\n  strict: "true"\n', 'inference.strict: "true" is text in quotes; write true or false without'),
        ('vocabulary:\n  prompt: "true"\n', 'vocabulary.prompt: "true" is text in quotes; write true or false without'),
        ("vocabulary:\n  bonus:\n", "vocabulary.bonus is empty (no value after the colon); expected a number from 0"),
        ("audio:\n  sample_rate: 4000\n", 'audio.sample_rate: 4000 is not allowed; expected "native" or'),
        ("audio:\n  channels: mono\n", 'audio.channels: "mono" is not allowed; expected "native" or'),
        ("inference:\n  retry_accelerator_s: 5\n", "inference.retry_accelerator_s: 5 is out of range"),
        ("publish:\n  socket_mode: 660\n", "publish.socket_mode: 660 is a whole number (put it in quotes to make it text); expected an octal"),
        ("vad:\n  speech_pad_ms: 0200\n", 'vad.speech_pad_ms: "0200" is not a plain decimal number (YAML 1.1 reads a '
                                          "leading zero as octal and _ as a digit group: write 200); expected a whole"),
        ("vad:\n  threshold: 0_.5\n", 'vad.threshold: "0_.5" is not a plain decimal number (YAML 1.1 reads a leading '
                                      "zero as octal and _ as a digit group: write 0.5)"),
        ("audio:\n  ring_buffer_s: 1_000\n", "write 1000); expected a number of seconds from 2 to 600"),
        ("vad:\n  min_silence_ms: 5:00\n", '"5:00" is not a plain decimal number (YAML 1.1 reads 0x, 0b and : as other'),
        ("vad:\n  max_utterance_s: 0x10\n", 'vad.max_utterance_s: "0x10" is not a plain decimal number'),
        ("mqtt:\n  username: 12345\n", "mqtt.username: 12345 is a whole number (put it in quotes to make it text)"),
        ("audio:\n  stall_timeout_ms: 300\n  block_ms: 200\n", "audio.stall_timeout_ms: 300 is shorter than two "
                                                            "blocks of audio.block_ms (200 ms), so a late block would "
                                                            "count as a lost device; expected at least 400 ms"),
        ("vad:\n  max_utterance_s: 2\n  min_speech_ms: 3000\n", "vad.min_speech_ms: 3000 is more than half of "
                                                            "vad.max_utterance_s (2 s), so the first part of the "
                                                            "speech would be cut off; expected at most 1000 ms, or a "
                                                            "max_utterance_s of at least 6 s"),
        ("audio:\n  device: ' '\n", 'audio.device: " " is empty (every device\'s name contains it)'),
        ("vad:\n  - threshold: 0.3\n", "vad: [{threshold: 0.3}] is a list; expected a mapping of vad.* keys"),
        ("threshold: 0.3\n", "threshold is not a known key; did you mean vad.threshold? (in the file: `threshold:` "
                             "indented under `vad:`)"),
        ("vad.threshold: 0.3\n", "vad.threshold is not a known key (YAML does not read a dot as nesting: write "
                                 "`threshold:` indented under `vad:`)"),
        ("enabled: true\n", "did you mean metrics.enabled or mqtt.enabled? (indent it under its section)"),
        ("metrics:\n  enabled: true\n  port: 0\n", "metrics.enabled is true but metrics.port is 0 and "
                                                 "metrics.textfile is null, so nothing would export the metrics"),
        ('publish:\n  socket_mode: "0690"\n', 'publish.socket_mode: "0690" is not an octal number'),
        ('publish:\n  socket_mode: "0400"\n', 'publish.socket_mode: "0400" is out of range'),
        ("publish:\n  socket: run/asr.sock\n", 'publish.socket: "run/asr.sock" is a relative path; expected an absolute'),
        ("publish:\n  socket_group: no-such-group-x\n", '"no-such-group-x" is not a group on this machine'),
        ("publish:\n  tcp_port: 80\n", "publish.tcp_port: 80 is out of range; expected 0 (off) or"),
        ("metrics:\n  host: localhost\n", 'metrics.host: "localhost" is not an IP address'),
        ("metrics:\n  textfile: /var/lib/x.txt\n", "metrics.textfile: \"/var/lib/x.txt\" does not end in .prom"),
        ("debug:\n  record_audio_dir: rec\n", 'debug.record_audio_dir: "rec" is a relative path'),
        ("inference:\n  rknn_core_mask: 0\n", 'inference.rknn_core_mask: 0 is not one of the choices; expected one of "auto"'),
        ("vad: 5\n", "vad: 5 is a whole number; expected a mapping of vad.* keys"),
    ],
)
def test_bad_value_names_key_value_and_allowed(config_dir: Path, text: str, expected: str) -> None:
    (message,) = problems(config_dir, text)
    assert expected in message
    assert " line 2: " in message or " line 1: " in message


@pytest.mark.parametrize(("text", "clash"), [
    ("metrics:\n  enabled: true\n  port: 8080\n", "captions.listen and metrics.port both listen on port 8080 "
     "(127.0.0.1 and 127.0.0.1)"),
    ("publish:\n  tcp_port: 9464\n  tcp_host: 0.0.0.0\nmetrics:\n  enabled: true\n",
     "publish.tcp_port and metrics.port both listen on port 9464 (0.0.0.0 and 127.0.0.1)"),
])
def test_two_listeners_on_one_port_are_refused(config_dir: Path, text: str, clash: str) -> None:
    """metrics.port 8080 beside the caption page's default: the daemon took the port first and
    edge-asr-captions failed at every restart."""
    (message,) = problems(config_dir, text)
    assert message == f"{config_dir / 'config.yaml'}: {clash}: one of them could not start; give each its own port"


def test_one_port_on_two_addresses_is_fine(config_dir: Path) -> None:
    load_config(write(config_dir, "metrics:\n  enabled: true\n  port: 8080\n  host: 127.0.0.2\n"))


def test_a_missing_certificate_is_one_problem_not_also_a_missing_pair(config_dir: Path) -> None:
    found = problems(config_dir, "mqtt:\n  tls:\n    enabled: true\n    cert_file: nope.pem\n    key_file: key.pem\n")
    assert [message.split(": ")[1] for message in found] == ["mqtt.tls.cert_file", "mqtt.tls.key_file"]
    assert all("does not exist" in message and "is null" not in message for message in found), found


def test_a_password_given_as_its_file_is_never_quoted(config_dir: Path) -> None:
    (message,) = problems(config_dir, "mqtt:\n  username: box\n  password_file: hunter2\n")
    assert "hunter2" not in message
    assert "mqtt.password_file: (not shown) does not exist; expected null, or a file whose first line" in message


@pytest.mark.parametrize(("host", "tls", "mode", "said"), [
    ("broker.example.com", False, 0o640, ["the password goes to broker.example.com without TLS"]),
    ("192.0.2.10", False, 0o644, ["the password goes to 192.0.2.10 without TLS", "any user of this box may read it"]),
    ("127.0.0.1", False, 0o640, []),
    ("localhost", False, 0o600, []),
    ("broker.example.com", True, 0o640, []),  # off the box, but under TLS
])
def test_a_password_that_can_be_read_by_others_is_warned_of(config_dir: Path, int8_model_dir: Path, capsys, host: str,
                                                            tls: bool, mode: int, said: list[str]) -> None:
    """Valid (a closed LAN's broker may take a clear password) but said, at check-config and at the
    bridge's start: check-config printed OK for a password sent in clear (security review)."""
    secret = config_dir / "box-secret.txt"
    secret.write_text("hunter2\n")
    secret.chmod(mode)
    path = write(config_dir, f"model:\n  path: {int8_model_dir}\nmqtt:\n  enabled: true\n  host: {host}\n"
                             "  username: box\n  password_file: box-secret.txt\n"
                             + ("  tls:\n    enabled: true\n" if tls else ""))
    warnings = load_config(path).mqtt.warnings()
    assert len(warnings) == len(said) and all(part in warning for part, warning in zip(said, warnings)), warnings
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: mqtt.password_file: ") == len(said) and "hunter2" not in err and "box-secret" not in err


def test_socket_readers_refuse_a_publish_section_they_cannot_read(config_dir: Path) -> None:
    """`listen` and `status` read publish.socket alone; a list there was the default socket, silently."""
    with pytest.raises(ConfigError, match=r"publish: \[1\] is a list; expected a mapping"):
        config_module.configured_socket(write(config_dir, "publish: [1]\n"))
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        config_module.configured_socket(write(config_dir, "- 1\n"))
    path = write(config_dir, "publish:\nvad: {threshold: 9}\n")
    assert config_module.configured_socket(path) == Path("/run/edge-asr/asr.sock")


def test_a_bad_vocabulary_item_is_named_once_on_its_own_line(config_dir: Path) -> None:
    (message,) = problems(config_dir, "vocabulary:\n  terms:\n    - ok\n    - {term: Siobhan, weight: '2,5'}\n")
    assert message.endswith('config.yaml line 4: vocabulary.terms item 2 ("Siobhan"): weight "2,5" is not a number; '
                            "expected 0.1 to 5.0"), message
    (message,) = problems(config_dir, "vocabulary:\n  terms: Siobhan\n")
    assert message.endswith("line 2: vocabulary.terms: expected a list of terms, got text"), message


def test_terms_with_every_item_commented_out_mean_no_terms(config_dir: Path) -> None:
    config = load_config(write(config_dir, "vocabulary:\n  terms:\n  #  - Siobhan\n"))
    assert config.vocabulary.terms == [] and not config.vocabulary.vocabulary()


def test_model_path_must_hold_a_manifest(config_dir: Path) -> None:
    (config_dir / "empty-model").mkdir()
    (message,) = problems(config_dir, "model:\n  path: empty-model\n")
    assert f"{(config_dir / 'empty-model').resolve()} has no manifest.json" in message
    (message,) = problems(config_dir, "model:\n  path: missing\n")
    assert "model.path" in message and "does not exist" in message


def test_rknn_dir_required_only_for_rknn_backend(config_dir: Path) -> None:
    assert load_config(write(config_dir, "inference:\n  backend: cpu\n")).inference.backend == "cpu"
    (message,) = problems(config_dir, "inference:\n  backend: rknn\n")
    assert "inference.rknn_model_dir" in message and "because inference.backend is rknn" in message


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("vad:\n  min_silense_ms: 300\n", "vad.min_silense_ms is not a known key; did you mean vad.min_silence_ms?"),
        ("vad:\n  partial_interval_ms: 300\n", "did you mean stream.partial_interval_ms?"),
        ("stram:\n  final_beam: 3\n", "stram is not a known key; did you mean stream?"),
        ("log:\n  zzz: 1\n", "log.zzz is not a known key; known keys here: level"),
        ("on: 3\n", "on is not a known key; known keys here: audio, vad, stream,"),
    ],
)
def test_unknown_keys_get_a_suggestion(config_dir: Path, text: str, suggestion: str) -> None:
    (message,) = problems(config_dir, text)
    assert suggestion in message


def test_yaml_syntax_error_gives_line_and_column(config_dir: Path) -> None:
    (message,) = problems(config_dir, "vad:\n  threshold: [0.5\nlog: {}\n")
    assert "line 3: YAML syntax error at column 4" in message


def test_duplicate_key_is_an_error(config_dir: Path) -> None:
    (message,) = problems(config_dir, "vad:\n  threshold: 0.3\n  threshold: 0.4\n")
    assert "line 3: vad.threshold is set twice (also on line 2)" in message


def test_top_level_must_be_a_mapping(config_dir: Path) -> None:
    (message,) = problems(config_dir, "- vad\n- log\n")
    assert "top level must be a mapping of sections (audio, vad," in message and "not a list" in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_permission_denied_is_a_clean_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")

    def deny(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config_module.os, "open", deny)  # root reads any file: pretend it cannot
    with pytest.raises(ConfigError, match="permission denied"):
        load_config(path)


def test_config_is_read_only(config_dir: Path) -> None:
    config = parse_config({}, base_dir=config_dir)
    with pytest.raises(ValueError):
        config.vad.threshold = 0.9  # type: ignore[misc]


def test_restart_needed_lists_only_non_live_keys(config_dir: Path) -> None:
    old = parse_config({}, base_dir=config_dir)
    new = parse_config(
        {"vad": {"threshold": 0.7}, "stream": {"final_beam": 2}, "log": {"level": "debug"},
         "model": {"threads": 2}, "publish": {"queue_size": 64}},
        base_dir=config_dir,
    )
    assert restart_needed(old, new) == ["model.threads", "publish.queue_size"]
    assert restart_needed(old, old) == []


def test_keys_another_service_reads_are_not_the_daemons_restart(config_dir: Path) -> None:
    """The daemon said "needs restart for captions.title, mqtt.partials": a technician restarted it, lost
    audio and subscribers, and the caption page still showed the old title."""
    old = parse_config({}, base_dir=config_dir)
    new = parse_config({"captions": {"title": "Room 4"}, "mqtt": {"partials": True}, "model": {"threads": 2}},
                       base_dir=config_dir)
    assert restart_needed(old, new) == ["model.threads"]
    assert changed_elsewhere(old, new) == {"edge-asr-captions": ["captions.title"], "edge-asr-mqtt": ["mqtt.partials"]}


def test_default_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_ASR_CONFIG", raising=False)
    assert default_config_path(None) == SYSTEM_PATH
    (tmp_path / "config.yaml").write_text("")
    assert default_config_path(None) == Path("config.yaml")
    monkeypatch.setenv("EDGE_ASR_CONFIG", "/srv/env.yaml")
    assert default_config_path(None) == Path("/srv/env.yaml")
    assert default_config_path("cli.yaml") == Path("cli.yaml")


def test_check_config_ok(config_dir: Path, int8_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(config_dir, REPO_CONFIG.read_text().replace("path: models/whisper-tiny.en-int8", f"path: {int8_model_dir}"))
    assert check_config.run(argparse.Namespace(path=str(path), config_path=None)) == 0
    assert capsys.readouterr().out.startswith(f"{path.resolve()}: OK")


def test_check_config_takes_config_like_every_command(config_dir: Path, int8_model_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file's message says `--config PATH`, which check-config refused ("unrecognized arguments")."""
    path = write(config_dir, REPO_CONFIG.read_text().replace("path: models/whisper-tiny.en-int8", f"path: {int8_model_dir}"))
    assert main(["check-config", "--config", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path.resolve()}: OK")
    assert main(["check-config", str(path), "--config", str(config_dir / "other.yaml")]) == 2
    assert "two config files given" in capsys.readouterr().err


def test_check_config_refuses_a_model_without_file_hashes(config_dir: Path, int8_model_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The real model's manifest less its "files": everything else in it is valid, so this is the refusal."""
    model = config_dir / "models" / "whisper-tiny.en-int8"
    for item in int8_model_dir.iterdir():
        if item.name != "manifest.json":
            (model / item.name).symlink_to(item)
    manifest = json.loads((int8_model_dir / "manifest.json").read_text())
    del manifest["files"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    path = write(config_dir, REPO_CONFIG.read_text())
    assert check_config.run(argparse.Namespace(path=str(path), config_path=None)) == EX_CONFIG
    assert f"model.path: {model / 'manifest.json'}: lists no files" in capsys.readouterr().err


def test_check_config_lists_problems_without_traceback(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(config_dir, "vad:\n  threshold: 2\nlog:\n  level: loud\n")
    assert check_config.run(argparse.Namespace(path=str(path), config_path=None)) == EX_CONFIG
    err = capsys.readouterr().err
    assert "vad.threshold" in err and "log.level" in err and "2 problems" in err
    assert "Traceback" not in err


def test_config_built_in_code_has_no_source(config_dir: Path) -> None:
    assert Config.model_validate({}, context={"base_dir": config_dir}).source_path is None


def test_problems_at_start_reach_the_journal_as_errors(config_dir: Path, tmp_path: Path) -> None:
    """Printed before logging is set up: journald filed them at info, out of `journalctl -p warning`."""
    config = write(config_dir, "vad:\n  threshold: 2\n")
    for journal in (True, False):
        with open(tmp_path / "stderr.txt", "w") as stderr:
            stat = os.fstat(stderr.fileno())
            env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}" if journal else ""}
            subprocess.run([sys.executable, "-m", "edge", "check-config", str(config)], cwd=REPO, env=env,
                           stderr=stderr, timeout=60, check=False)
        lines = (tmp_path / "stderr.txt").read_text().splitlines()
        assert len(lines) == 2 and all(line.startswith("<3>") == journal for line in lines), lines
