#!/usr/bin/env bash
# Downloads the same files (1 x 2 GiB + 20 x 20 MiB by default) from one
# local S3 server with this runtime's `download` command and with boto3's
# transfer manager (download_file, TransferConfig(max_concurrency=8)), and
# prints wall time, throughput and peak RSS of each.
#
#   benches/download_vs_boto3.sh [work-dir]
#
# Needs: python3 with boto3 (pip install boto3), /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/mi-download-bench}
big_mib=${BIG_MIB:-2048}
small_count=${SMALL_COUNT:-20}
small_mib=${SMALL_MIB:-20}
workers=${WORKERS:-8}
port=${PORT:-9190}

cargo build --release --bin matrixinfer-runtime --example s3_server >/dev/null
target=${CARGO_TARGET_DIR:-target}/release
rm -rf "$work" && mkdir -p "$work/s3" "$work/data"
"$target/examples/s3_server" "$work/s3" "$port" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 1

export AWS_ACCESS_KEY_ID=AKIABENCH AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
endpoint=http://127.0.0.1:$port

# Upload through the S3 API, so that the server stores ETags as S3 would.
python3 - "$endpoint" "$work/data" "$big_mib" "$small_count" "$small_mib" <<'PY'
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, data, big, count, small = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket="bench")
def make(path, mib):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
make(f"{data}/big.bin", big)
# Single-part uploads (threshold above the size) keep checkable ETags.
single = TransferConfig(multipart_threshold=1 << 40)
s3.upload_file(f"{data}/big.bin", "bench", "model/big.bin", Config=single)
for i in range(count):
    make(f"{data}/small-{i:02}.bin", small)
    s3.upload_file(f"{data}/small-{i:02}.bin", "bench", f"model/small-{i:02}.bin", Config=single)
PY
total_mib=$((big_mib + small_count * small_mib))
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

measure() { # name, command...
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1
    read -r secs rss_kib <"$work/$name.time"
    printf "%-28s %8.2f s %9.1f MiB/s %9.1f MiB peak RSS\n" "$name" "$secs" \
        "$(echo "$total_mib / $secs" | bc -l)" "$(echo "$rss_kib / 1024" | bc -l)"
}

echo "files: 1 x ${big_mib} MiB + ${small_count} x ${small_mib} MiB = ${total_mib} MiB; ${workers} workers; $(nproc) cores"
config="{\"access_key\":\"AKIABENCH\",\"secret_key\":\"benchsecret\",\"endpoint\":\"$endpoint\"}"
measure "matrixinfer-runtime" "$target/matrixinfer-runtime" download --source s3://bench/model \
    --output-dir "$work/out-runtime" --max-workers "$workers" --config "$config"
measure "boto3 download_file" python3 - "$endpoint" "$work/out-boto3" "$workers" <<'PY'
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint)
config = TransferConfig(max_concurrency=workers)
os.makedirs(out, exist_ok=True)
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="model/"):
    for obj in page.get("Contents", []):
        s3.download_file("bench", obj["Key"], os.path.join(out, obj["Key"][len("model/"):]), Config=config)
PY
cmp "$work/out-runtime/big.bin" "$work/data/big.bin" && cmp "$work/out-boto3/big.bin" "$work/data/big.bin" \
    && echo "both copies verified against the source"
