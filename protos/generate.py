"""Regenerate the committed protobuf/gRPC stubs, or check them for drift (`--check`).

The stubs are reproducible only with the grpcio-tools version pinned in pyproject.toml
([tool.shardgrid.protos]); a different compiler version is refused rather than producing a diff.
Run from anywhere: `python -m protos.generate [--check]`.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "protos/shardgrid.proto"
STUBS = ("shardgrid_pb2.py", "shardgrid_pb2.pyi", "shardgrid_pb2_grpc.py")


def pinned_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["shardgrid"]["protos"]["grpcio-tools"]


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    # -I at the repository root makes the generated grpc module import `from protos import ...`
    args = ["protoc", f"-I{ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs differ")
    args = parser.parse_args(argv)
    installed = importlib.metadata.version("grpcio-tools")
    if installed != pinned_version():
        print(f"grpcio-tools {installed} is installed, the stubs are pinned to {pinned_version()}",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "protos"
        if args.check:
            drifted = [name for name in STUBS
                       if not (ROOT / "protos" / name).exists()
                       or (fresh / name).read_bytes() != (ROOT / "protos" / name).read_bytes()]
            if drifted:
                print(f"stale generated stubs: {', '.join(drifted)}; run python -m protos.generate",
                      file=sys.stderr)
                return 1
            print("generated stubs are up to date")
            return 0
        for name in STUBS:
            shutil.copyfile(fresh / name, ROOT / "protos" / name)
        print(f"wrote {', '.join(STUBS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
