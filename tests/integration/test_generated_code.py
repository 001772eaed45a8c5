"""The generated protobuf code matches protos/ (tools/gen_proto.py --check), and the check can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tools import gen_proto

ROOT = Path(__file__).resolve().parents[2]


def test_gen_proto_check_passes() -> None:
    done = subprocess.run(
        [sys.executable, "tools/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_the_drift_check_notices_a_changed_or_missing_file(tmp_path: Path) -> None:
    gen_proto.generate(tmp_path / "fresh")
    committed = tmp_path / "committed"
    shutil.copytree(ROOT / gen_proto.PACKAGE, committed, ignore=shutil.ignore_patterns("__pycache__"))
    assert gen_proto.differences(tmp_path / "fresh" / gen_proto.PACKAGE, committed) == []

    stub = committed / "v1" / "orders_pb2_grpc.py"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    (committed / "v1" / "orders_pb2.pyi").unlink()
    found = gen_proto.differences(tmp_path / "fresh" / gen_proto.PACKAGE, committed)
    assert sorted(found) == ["v1/orders_pb2.pyi (only on one side)", "v1/orders_pb2_grpc.py"]
