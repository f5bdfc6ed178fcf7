#!/bin/sh
# Regenerates ciliumpy/hubble/gen/ from the vendored Hubble protos in
# ciliumpy/hubble/protos/ (Cilium's api/v1/{flow,observer,relay}; see the README there).
#
# protoc comes from grpcio-tools, a generate-time tool only (not an install requirement):
#   .venv/bin/pip install grpcio-tools==1.85.1
# That version's protoc writes protobuf 7.35.1 gencode and grpc 1.85.1 stubs, which is
# why setup.cfg asks for protobuf>=7.35.1,<8 and grpcio>=1.85.1: the generated modules
# check the runtime versions when imported. Changing the grpcio-tools version means
# changing those bounds too.
#
# protoc names imports after the proto paths ("from flow import flow_pb2"), which would
# need the gen directory on sys.path as a top-level root (and would claim the top-level
# names flow, observer and relay). Instead the imports are rewritten here to
# "from ciliumpy.hubble.gen.flow import flow_pb2", so the generated code is an ordinary
# subpackage (the classes' __module__ follows). The descriptors keep their upstream
# file names (flow/flow.proto, ...), exactly as Hubble registers them.
set -eu

cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
SRC=ciliumpy/hubble/protos
OUT=ciliumpy/hubble/gen
PACKAGES="flow observer relay"

if ! "$PY" -c "import grpc_tools.protoc" 2>/dev/null; then
    echo "hubble-protos: grpcio-tools is missing: $PY -m pip install grpcio-tools==1.85.1" >&2
    exit 1
fi

rm -rf "$OUT"
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I "$SRC" \
    --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
    $(for p in $PACKAGES; do echo "$SRC/$p/$p.proto"; done)

# packages, and the imports made absolute
printf '"""Generated from ciliumpy/hubble/protos by scripts/hubble-protos.sh: do not edit."""\n' \
    > "$OUT/__init__.py"
for p in $PACKAGES; do
    : > "$OUT/$p/__init__.py"
done
pattern=$(echo $PACKAGES | tr ' ' '|')
for f in "$OUT"/*/*.py "$OUT"/*/*.pyi; do
    sed -E -i \
        -e "s/^from ($pattern) import /from ciliumpy.hubble.gen.\\1 import /" \
        -e "s/^from ($pattern)\\.([a-z_0-9]+) import /from ciliumpy.hubble.gen.\\1.\\2 import /" \
        -e "s/(BuildTopDescriptorsAndMessages\\(DESCRIPTOR, ')($pattern)\\./\\1ciliumpy.hubble.gen.\\2./" \
        "$f"
done
# the grpc plugin writes a module for protos without a service too (a version check only)
for p in flow relay; do
    rm -f "$OUT/$p/${p}_pb2_grpc.py"
done
echo "hubble-protos: generated $(find "$OUT" -name '*.py*' | wc -l) files in $OUT"
