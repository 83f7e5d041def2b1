"""The storage initializer's CLI as the init container runs it (`python -m edgeservers.storage`, a real
process): one line on success and on failure, limits from flags and the environment, credentials never shown,
and archives too large for the init container's memory refused with its peak RSS measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.services import FileServer, S3Server, many_files_tgz, model_files, tree
from tests.support.storage import (
    BUCKET,
    MODEL_BYTES,
    MODEL_SHA,
    SECRET,
    listing,
    put_models,
    run_cli,
    run_cli_measured,
    tar_bomb,
    zip_bomb,
)

pytestmark = pytest.mark.usefixtures("quick_storage")


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> tuple[str, object]:
    """The model bucket; the CLI is given the endpoint and credentials in its environment."""
    put_models(s3_server)
    return s3_server.endpoint, s3_server.client


def test_million_file_tgz_stops_at_the_limit_in_little_memory(tmp_path: Path) -> None:
    """The default limit (10,000 entries) stops it; entries are read one at a time, so the process
    stays far below the init container's 256Mi (the whole member list alone would not)."""
    archive = tmp_path / "million.tgz"
    many_files_tgz(archive, 1_000_000)
    result, max_rss = run_cli_measured(str(archive), str(tmp_path / "models"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "storage-initializer: error: archive million.tgz holds more than 10000 entries: "
        "limit 10000 files (set with --max-files or STORAGE_MAX_FILES)"
    ]
    assert listing(tmp_path / "models") == []
    assert max_rss < 256 << 20, f"peak RSS {max_rss >> 20} MiB"


@pytest.mark.parametrize("name, build", [("bomb.zip", zip_bomb), ("bomb.tgz", tar_bomb)])
def test_cli_refuses_a_gib_bomb_with_the_default_limits(web: FileServer, tmp_path: Path, name, build) -> None:
    web.files[name] = build(1100 << 20)  # 1.07 GiB of zeros in about a megabyte
    result, max_rss = run_cli_measured(web.url(name), str(tmp_path / "models"))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "limit 1 GiB (set with --max-unpacked or STORAGE_MAX_UNPACKED)" in result.stderr
    assert listing(tmp_path / "models") == []
    assert max_rss < 256 << 20, f"peak RSS {max_rss >> 20} MiB"


def test_cli_limits_from_flags_override_the_environment(web: FileServer, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    result = run_cli(
        web.url("m.tflite"), str(tmp_path / "models"), "--max-download", "100K", env={"STORAGE_MAX_DOWNLOAD": "1G"}
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"storage-initializer: error: {web.url('m.tflite')} (Content-Length {len(MODEL_BYTES)}) is more than "
        "100 KiB in all: limit 100 KiB (set with --max-download or STORAGE_MAX_DOWNLOAD)"
    ]
    bad = run_cli(web.url("m.tflite"), str(tmp_path / "models"), "--max-files", "0")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["storage-initializer: error: --max-files: '0' is not a positive whole number"]


def test_cli_success_prints_one_line(web, tmp_path: Path) -> None:
    web.files["mobilenet.tflite"] = MODEL_BYTES
    url = f"{web.base}/files/mobilenet.tflite"
    result = run_cli(url, str(tmp_path / "models"), "--sha256", MODEL_SHA)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"storage-initializer: wrote 1 file ({len(MODEL_BYTES)} bytes) from {url} to {tmp_path / 'models'}"
    ]
    assert tree(tmp_path / "models") == {"mobilenet.tflite": MODEL_BYTES}


def test_cli_failure_is_one_line_on_stderr(web, tmp_path: Path) -> None:
    result = run_cli(f"{web.base}/status/404/m.tflite", str(tmp_path / "models"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"storage-initializer: error: HTTP 404 Not Found from {web.base}/status/404/m.tflite"
    ]


def test_cli_retries_are_noted_on_stdout_and_the_error_stays_one_line(web, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    result = run_cli(f"{web.base}/drop/99/m.tflite", str(tmp_path / "models"))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "gave up after 3 attempts" in result.stderr
    assert [line.split(";")[-1].split(" in ")[0] for line in result.stdout.splitlines()] == [" retry 1/2", " retry 2/2"]
    assert listing(tmp_path / "models") == []


def test_cli_usage_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("s3://bucket/model")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "storage-initializer: error: the following arguments are required: dest_dir"
    )


def test_cli_s3_errors_never_show_credentials(s3, tmp_path: Path) -> None:
    endpoint, _ = s3
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
    }
    ok = run_cli(f"s3://{BUCKET}/mnv1", str(tmp_path / "models"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("storage-initializer: wrote 2 files")
    assert tree(tmp_path / "models") == model_files()
    bad = run_cli("s3://no-such-bucket/m", str(tmp_path / "other"), env=env)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert SECRET not in bad.stderr + bad.stdout and "AKIDEXAMPLE" not in bad.stderr + bad.stdout
