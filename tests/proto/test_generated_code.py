"""The checked-in generated protobuf code matches its .proto sources and imports cleanly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date() -> None:
    # sys.executable is the venv's interpreter, so the check uses the pinned generators.
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_protos.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        "generated code is stale; run scripts/gen_protos.py\n" + result.stdout + result.stderr
    )


def test_generated_modules_import_under_the_fedft_package() -> None:
    from fedft.proto.v1 import payload_pb2, payload_pb2_grpc

    assert payload_pb2.Payload.DESCRIPTOR.full_name == "fedft.proto.v1.Payload"
    assert payload_pb2.DESCRIPTOR.name == "fedft/proto/v1/payload.proto"
    assert payload_pb2_grpc.GRPC_GENERATED_VERSION
    fields = [f.name for f in payload_pb2.Payload.DESCRIPTOR.fields]
    assert fields == ["tensors", "config", "metrics"]


def test_check_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    # Load the script as a module: scripts/ is not a package.
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh, current = tmp_path / "fresh", tmp_path / "current"
    for root in (fresh, current):
        (root / gen.PROTO_PACKAGE).mkdir(parents=True)
        (root / gen.PROTO_PACKAGE / "a_pb2.py").write_text("x = 1\n")
    assert gen.diff(fresh, current) == ""

    (fresh / gen.PROTO_PACKAGE / "a_pb2.py").write_text("x = 2\n")
    (fresh / gen.PROTO_PACKAGE / "new_pb2.pyi").write_text("y: int\n")
    (current / gen.PROTO_PACKAGE / "old_pb2_grpc.py").write_text("z = 3\n")
    (current / gen.PROTO_PACKAGE / "__init__.py").write_text("# not generated\n")
    delta = gen.diff(fresh, current)
    assert "-x = 1\n+x = 2" in delta
    assert "+y: int" in delta
    assert "-z = 3" in delta
    assert "not generated" not in delta

    assert gen.install(fresh, current) == ["a_pb2.py", "new_pb2.pyi", "old_pb2_grpc.py"]
    assert gen.diff(fresh, current) == ""
    assert (current / gen.PROTO_PACKAGE / "__init__.py").exists()
