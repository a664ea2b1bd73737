#!/usr/bin/env bash
# Downloads, measured against the usual Python clients on the same local
# servers, the same files and the same machine (docs/benchmarks.md,
# "Downloads"):
#
# 1. S3 (examples/s3_server.rs: s3s-fs on loopback; objects uploaded
#    through the S3 API, single part, so their ETags are MD5s):
#    1 x BIG_MIB + SMALL_COUNT x SMALL_MIB, with this runtime's `download`
#    command and with boto3's transfer manager (download_file per object,
#    TransferConfig(max_concurrency=WORKERS)). The runtime checks every
#    file's MD5 (or the S3_CHECKSUM the objects were uploaded with);
#    boto3 checks nothing.
#    With S3_CRC32=1 (the default) the same files are uploaded a second
#    time with a CRC32 checksum, as boto3 and the AWS CLI do by default
#    since 2025, and the runtime downloads those too (runtime-s3-crc32):
#    it then checks the CRC32, far cheaper than an MD5.
# 2. HuggingFace (examples/hub_server.rs, a local Hub-shaped server):
#    one repository of 1 x BIG_MIB LFS file (the same bytes) and
#    SMALL_COUNT x HF_SMALL_KIB regular files, with `download --source
#    hf://bench/model` and with huggingface_hub.snapshot_download(
#    max_workers=WORKERS). The runtime checks the LFS SHA-256 and the git
#    blob ids; huggingface_hub checks sizes only. No Xet headers are sent:
#    huggingface_hub uses plain HTTP.
# 3. Goal 3 of issue 18: a CGROUP_GIB download from the S3 server by the
#    runtime alone inside a CGROUP_LIMIT_MIB memory cgroup (v2 where its
#    memory controller is writable, else v1 with memory.limit_in_bytes,
#    which charges page cache too; skipped, saying so, when neither is).
# 4. With TUNE=1: the runtime's S3 throughput against part size x workers
#    (TUNE_PARTS x TUNE_WORKERS, MATRIXINFER_BENCH_PART_MIB: a
#    benchmark-only override, see src/download/fetch.rs).
#
# Each configuration runs RUNS times, the clients interleaved; the tables
# give the median and the range, and every figure compared is a ratio to
# the baseline measured in the same run. The servers' files are read into
# the page cache before each round (the servers then serve from memory, as
# a warm object store would), and `sync` runs between measurements, so
# that no client pays for another's writeback; that sync is timed ("sync
# after"): the Python clients leave their bytes to the kernel's
# writeback, the runtime has synced them before it exits ("MiB/s to disk"
# counts both).
#
#   benches/download_vs_boto3.sh [work-dir]
#
# Environment: BIG_MIB (1024), SMALL_COUNT (20), SMALL_MIB (20),
# HF_SMALL_KIB (1024), WORKERS (8), RUNS (3), PORT (9190; the Hub uses
# PORT+1 and PORT+2), CGROUP_GIB (4; 0 skips), CGROUP_LIMIT_MIB (128),
# CGROUP_RUNS (2),
# TUNE (0), TUNE_PARTS ("8 16 32"), TUNE_WORKERS ("4 8 16"), TUNE_RUNS (2),
# S3_CHECKSUM (none: objects have an MD5 ETag only; or CRC32, SHA256, …:
# uploaded with that checksum too, which the runtime checks instead of
# the MD5), PYTHON (a python with boto3 and huggingface_hub; by default a venv in
# ~/.cache/matrixinfer-runtime/bench-pyenv, created with pinned versions),
# KEEP=1 keeps the work directory.
#
# Needs: cargo, python3 (with venv and pip, PyPI reachable unless PYTHON
# is given), /usr/bin/time; disk: about 8 x BIG_MIB, and 2 x CGROUP_GIB
# more for the cgroup run.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/mi-download-bench}
big_mib=${BIG_MIB:-1024}
small_count=${SMALL_COUNT:-20}
small_mib=${SMALL_MIB:-20}
hf_small_kib=${HF_SMALL_KIB:-1024}
workers=${WORKERS:-8}
runs=${RUNS:-3}
port=${PORT:-9190}
cgroup_gib=${CGROUP_GIB:-4}
cgroup_limit_mib=${CGROUP_LIMIT_MIB:-128}
cgroup_runs=${CGROUP_RUNS:-2}
crc32=${S3_CRC32:-1}
tune=${TUNE:-0}
tune_parts=${TUNE_PARTS:-8 16 32}
tune_workers=${TUNE_WORKERS:-4 8 16}
tune_runs=${TUNE_RUNS:-2}

cargo build --release --bin matrixinfer-runtime --example s3_server --example hub_server >/dev/null
target=${CARGO_TARGET_DIR:-target}/release
runtime=$target/matrixinfer-runtime

# Python clients, pinned, in a venv of their own.
if [ -z "${PYTHON:-}" ]; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/matrixinfer-runtime/bench-pyenv"
    if ! "$venv/bin/python" -c 'import boto3, huggingface_hub' 2>/dev/null; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            'boto3==1.44.8' 'huggingface_hub==2.4.0'
    fi
    PYTHON=$venv/bin/python
fi

rm -rf "$work" && mkdir -p "$work/s3" "$work/data" "$work/hub" "$work/py" "$work/hf-home"
pids=()
cgroup_dir=
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$cgroup_dir" ] && rmdir "$cgroup_dir" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores" \
    "($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)," \
    "$(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
echo "clients: matrixinfer-runtime $(git rev-parse --short HEAD 2>/dev/null || echo '?');" \
    "$("$PYTHON" -c 'import boto3, huggingface_hub, sys; print(f"boto3 {boto3.__version__}, huggingface_hub {huggingface_hub.__version__}, python {sys.version.split()[0]}")')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the servers and their files --------------------------------------------
"$target/examples/s3_server" "$work/s3" "$port" 2>"$work/s3-server.log" &
s3_pid=$!
pids+=("$s3_pid")
export AWS_ACCESS_KEY_ID=AKIABENCH AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
s3_endpoint=http://127.0.0.1:$port
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

cat >"$work/py/upload.py" <<'PY'
# Writes random files and uploads them through the S3 API, single part
# (threshold above the size), so that the server keeps MD5 ETags; with
# no checksum (MD5 is then the only check a client can make) unless
# S3_CHECKSUM names one (CRC32, CRC32C, CRC64NVME, SHA1, SHA256).
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, data, bucket, prefix = sys.argv[1:5]
files = [(name, int(mib)) for name, mib in (a.split(":") for a in sys.argv[5:])]
checksum = os.environ.get("S3_CHECKSUM", "none").upper()
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(
    request_checksum_calculation="when_required" if checksum == "NONE" else "when_supported"))
extra = {} if checksum == "NONE" else {"ChecksumAlgorithm": checksum}
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
single = TransferConfig(multipart_threshold=1 << 40)
for name, mib in files:
    path = os.path.join(data, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    s3.upload_file(path, bucket, f"{prefix}/{name}", Config=single, ExtraArgs=extra)
PY
cat >"$work/py/boto3_get.py" <<'PY'
# boto3's transfer manager, as its documentation shows it: download_file
# per object, TransferConfig(max_concurrency=N). Verifies nothing.
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
cat >"$work/py/hf_get.py" <<'PY'
# huggingface_hub.snapshot_download into a local directory, from
# HF_ENDPOINT. Checks sizes (and nothing else) by default.
import sys
from huggingface_hub import snapshot_download
out, workers = sys.argv[1], int(sys.argv[2])
snapshot_download("bench/model", local_dir=out, max_workers=workers)
PY

small_args=()
for i in $(seq -f %02g 0 $((small_count - 1))); do small_args+=("small-$i.bin:$small_mib"); done
"$PYTHON" "$work/py/upload.py" "$s3_endpoint" "$work/data" bench model "big.bin:$big_mib" "${small_args[@]}"
if [ "$crc32" = 1 ]; then
    S3_CHECKSUM=CRC32 "$PYTHON" "$work/py/upload.py" "$s3_endpoint" "$work/data" bench model-crc32 \
        "big.bin:$big_mib" "${small_args[@]}"
fi
rm -f "$work"/data/small-*.bin # kept in the server; only the big one is compared afterwards
s3_mib=$((big_mib + small_count * small_mib))

# The Hub repository: the same big file (a hard link) as its LFS weights,
# and small regular files.
ln "$work/data/big.bin" "$work/hub/model.safetensors"
for i in $(seq -f %02g 0 $((small_count - 1))); do
    head -c $((hf_small_kib * 1024)) /dev/urandom >"$work/hub/config-$i.json"
done
hf_mib=$(echo "$big_mib + $small_count * $hf_small_kib / 1024" | bc -l)
"$target/examples/hub_server" "$work/hub" $((port + 1)) bench/model 2>"$work/hub-server.log" &
hub_pid=$!
pids+=("$hub_pid")
export HF_ENDPOINT=http://127.0.0.1:$((port + 1))
export HF_HOME=$work/hf-home HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1
for _ in $(seq 600); do
    grep -q "hub server on" "$work/hub-server.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "hub server on" "$work/hub-server.log" || { cat "$work/hub-server.log"; exit 1; }

# --- measuring ---------------------------------------------------------------
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# All CPUs' busy time (user, nice, system, irq, softirq, steal).
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
warm() { cat "$work"/s3/bench/model/* "$work"/hub/* >/dev/null; }
results=$work/results.tsv
: >"$results"

# name, server pid, MiB, command...: one measurement, appended to $results.
measure() {
    local name=$1 server=$2 mib=$3
    shift 3
    sync
    local before after busy_before busy_after load
    load=$(cut -d' ' -f1 /proc/loadavg)
    before=$(cpu_ticks "$server")
    busy_before=$(busy_ticks)
    if ! /usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1; then
        echo "$name failed:" >&2
        tail -20 "$work/$name.log" >&2
        exit 1
    fi
    after=$(cpu_ticks "$server")
    busy_after=$(busy_ticks)
    # What the client left to write back: its bytes are on disk only
    # after this (the runtime syncs before it lands a file; the Python
    # clients do not sync).
    local sync_start sync_secs
    sync_start=$(date +%s.%N)
    sync
    sync_secs=$(echo "$(date +%s.%N) - $sync_start" | bc -l)
    read -r secs user sys rss_kib <"$work/$name.time"
    local server_cpu others
    server_cpu=$(echo "($after - $before) / $tck" | bc -l)
    # CPU time of everything else on the machine meanwhile.
    others=$(echo "($busy_after - $busy_before) / $tck - $server_cpu - $user - $sys" | bc -l)
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$name" "$mib" "$secs" "$user" "$sys" "$rss_kib" \
        "$server_cpu" "$others" "$load" "$sync_secs" >>"$results"
    printf "  %-18s %6.2f s %6.1f MiB/s  cpu %5.2f s (user %5.2f)  peak RSS %6.1f MiB  server cpu %5.2f s  others %5.2f s  then sync %5.2f s  load %s\n" \
        "$name" "$secs" "$(echo "$mib / $secs" | bc -l)" "$(echo "$user + $sys" | bc -l)" "$user" \
        "$(echo "$rss_kib / 1024" | bc -l)" "$server_cpu" "$others" "$sync_secs" "$load"
}

s3_config="{\"access_key\":\"AKIABENCH\",\"secret_key\":\"benchsecret\",\"endpoint\":\"$s3_endpoint\"}"
runtime_s3=("$runtime" download --source s3://bench/model --config "$s3_config")

echo
echo "S3: 1 x $big_mib MiB + $small_count x $small_mib MiB = $s3_mib MiB;" \
    "HF: 1 x $big_mib MiB LFS + $small_count x $hf_small_kib KiB = $(printf %.0f "$hf_mib") MiB;" \
    "$workers workers; $runs runs"
for run in $(seq "$runs"); do
    warm
    echo "run $run:"
    # Alternate who goes first.
    order=(runtime-s3 boto3 runtime-hf huggingface_hub)
    [ $((run % 2)) = 0 ] && order=(boto3 runtime-s3 huggingface_hub runtime-hf)
    [ "$crc32" = 1 ] && order+=(runtime-s3-crc32)
    for who in "${order[@]}"; do
        rm -rf "$work/out-$who"
        case $who in
            runtime-s3) measure "$who" "$s3_pid" "$s3_mib" "${runtime_s3[@]}" --output-dir "$work/out-$who" --max-workers "$workers" ;;
            runtime-s3-crc32) measure "$who" "$s3_pid" "$s3_mib" "$runtime" download --source s3://bench/model-crc32 \
                --config "$s3_config" --output-dir "$work/out-$who" --max-workers "$workers" ;;
            boto3) measure "$who" "$s3_pid" "$s3_mib" "$PYTHON" "$work/py/boto3_get.py" "$s3_endpoint" "$work/out-$who" "$workers" ;;
            runtime-hf) measure "$who" "$hub_pid" "$hf_mib" "$runtime" download --source hf://bench/model \
                --output-dir "$work/out-$who" --max-workers "$workers" ;;
            huggingface_hub) measure "$who" "$hub_pid" "$hf_mib" "$PYTHON" "$work/py/hf_get.py" "$work/out-$who" "$workers" ;;
        esac
        # The last run's copies are compared with the source below.
        [ "$run" = "$runs" ] || rm -rf "$work/out-$who"
    done
done

# The last run's copies, against the source.
for who in runtime-s3 boto3 $([ "$crc32" = 1 ] && echo runtime-s3-crc32); do
    cmp "$work/out-$who/big.bin" "$work/data/big.bin"
done
for who in runtime-hf huggingface_hub; do
    cmp "$work/out-$who/model.safetensors" "$work/data/big.bin"
    for f in "$work"/hub/config-*.json; do cmp "$f" "$work/out-$who/$(basename "$f")"; done
done
echo "all copies of the last run compared equal to the source"
checks() { grep -o 'check="\?[a-z0-9_]*' "$work/$1.log" | tr -d '"' | sort | uniq -c | awk '{printf "%s %s files; ", $2, $1}'; }
echo "runtime checks, S3: $(checks runtime-s3)"
[ "$crc32" = 1 ] && echo "runtime checks, S3 objects uploaded with CRC32: $(checks runtime-s3-crc32)"
echo "runtime checks, HF: $(checks runtime-hf)"
echo "boto3: no check; huggingface_hub: sizes only (no SHA-256 unless asked)"

summary() { # title, runtime name, baseline name
    "$PYTHON" - "$results" "$@" <<'PY'
import statistics, sys
path, title, ours, theirs = sys.argv[1:5]
rows = {}
for line in open(path):
    name, mib, secs, user, sys_, rss, server, others, load, sync = line.split("\t")
    # Others' CPU is the machine's busy time less the client's and the
    # server's: good to about half a second, so below zero reads as none.
    rows.setdefault(name, []).append(dict(mbs=float(mib) / float(secs), cpu=float(user) + float(sys_),
                                          rss=int(rss) / 1024, server=float(server),
                                          others=max(0.0, float(others)), sync=float(sync),
                                          durable=float(mib) / (float(secs) + float(sync))))
def stat(name, key):
    values = [r[key] for r in rows[name]]
    return statistics.median(values), min(values), max(values)
print(f"\n{title} (median of {len(rows[ours])} runs, min-max)")
print(f"| client | MiB/s | CPU s (user+sys) | peak RSS MiB | server CPU s | others' CPU s | sync after, s | MiB/s to disk |")
print(f"|---|---|---|---|---|---|---|---|")
for name in (ours, theirs):
    cells = []
    for key, fmt in (("mbs", "{:.0f}"), ("cpu", "{:.2f}"), ("rss", "{:.1f}"), ("server", "{:.2f}"),
                     ("others", "{:.2f}"), ("sync", "{:.2f}"), ("durable", "{:.0f}")):
        med, lo, hi = stat(name, key)
        cells.append(f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})")
    print(f"| {name} | " + " | ".join(cells) + " |")
# Ratios run by run (same run, same server, same files), then their median.
pairs = list(zip(rows[ours], rows[theirs]))
def ratio(key):
    values = [a[key] / b[key] for a, b in pairs]
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"
print(f"| {ours} / {theirs} | {ratio('mbs')} | {ratio('cpu')} | {ratio('rss')} | {ratio('server')} | | | {ratio('durable')} |")
PY
}
summary "S3" runtime-s3 boto3
[ "$crc32" = 1 ] && summary "S3, objects uploaded with a CRC32 checksum (boto3's figures: the same runs)" runtime-s3-crc32 boto3
summary "HuggingFace" runtime-hf huggingface_hub
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$work"/out-*

# --- goal 3: a large download in a small memory cgroup -----------------------
# Finds a memory cgroup this shell may create children in, under its own:
# v2 if its memory controller is there, else v1.
make_cgroup() {
    local v2root v2own v1root v1own
    v2root=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
    v2own=$(sed -n 's/^0:://p' /proc/self/cgroup)
    if [ -n "$v2root" ] && grep -qw memory "$v2root$v2own/cgroup.controllers" 2>/dev/null; then
        local dir=$v2root$v2own/mi-bench-$$
        if mkdir "$dir" 2>/dev/null; then
            [ -e "$dir/memory.max" ] || echo +memory >"$v2root$v2own/cgroup.subtree_control" 2>/dev/null || true
            if [ -e "$dir/memory.max" ] && echo "${cgroup_limit_mib}M" >"$dir/memory.max" 2>/dev/null; then
                cgroup_dir=$dir cgroup_version=2
                return 0
            fi
            rmdir "$dir"
        fi
    fi
    v1root=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ {print $2; exit}' /proc/mounts)
    v1own=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
    if [ -n "$v1root" ]; then
        local dir=${v1root}${v1own%/}/mi-bench-$$
        if mkdir "$dir" 2>/dev/null; then
            if echo "${cgroup_limit_mib}M" >"$dir/memory.limit_in_bytes" 2>/dev/null; then
                cgroup_dir=$dir cgroup_version=1
                return 0
            fi
            rmdir "$dir"
        fi
    fi
    return 1
}

cgroup_run() {
    echo
    if ! make_cgroup; then
        echo "cgroup run skipped: no writable memory cgroup (neither a cgroup v2 memory controller nor v1)"
        return
    fi
    local cur peak events
    if [ "$cgroup_version" = 2 ]; then
        cur=memory.current peak=memory.peak events=memory.events
        echo "cgroup v2 $cgroup_dir: memory.max = ${cgroup_limit_mib} MiB"
    else
        cur=memory.usage_in_bytes peak=memory.max_usage_in_bytes events=memory.oom_control
        echo "cgroup v1 $cgroup_dir: memory.limit_in_bytes = ${cgroup_limit_mib} MiB" \
            "(v1 charges page cache to the cgroup as v2 does; no v2 memory controller is writable here)"
    fi
    local mib=$((cgroup_gib * 1024))
    "$PYTHON" "$work/py/upload.py" "$s3_endpoint" "$work/data" cgroup model "huge.bin:$mib"
    rm -f "$work/data/huge.bin"
    local run
    for run in $(seq "$cgroup_runs"); do
        [ -n "$cgroup_dir" ] || make_cgroup
        echo "cgroup run $run:"
        cgroup_once "$mib" "$cur" "$peak" "$events"
    done
}

# One download in a fresh cgroup ($cgroup_dir), reported, then the cgroup
# removed.
cgroup_once() { # MiB, usage file, peak file, events file
    local mib=$1 cur=$2 peak=$3 events=$4
    cat "$work/s3/cgroup/model/huge.bin" >/dev/null 2>&1 || true
    sync
    local out=$work/out-cgroup
    # The sidecar alone in the cgroup; the sampler records its usage
    # until the moment it exits.
    sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cgroup_dir" \
        /usr/bin/time -f "%e %U %S %M" -o "$work/cgroup.time" \
        "$runtime" download --source s3://cgroup/model --output-dir "$out" --max-workers "$workers" \
        --config "$s3_config" >"$work/cgroup.log" 2>&1 &
    local pid=$! last=0 high=0 usage
    # Each sample: usage, page cache, dirty, under writeback, anonymous.
    local stat_keys='$1 == "cache" {c = $2} $1 == "dirty" {d = $2} $1 == "writeback" {w = $2} $1 == "rss" {a = $2}'
    [ "$cgroup_version" = 2 ] \
        && stat_keys='$1 == "file" {c = $2} $1 == "file_dirty" {d = $2} $1 == "file_writeback" {w = $2} $1 == "anon" {a = $2}'
    : >"$work/cgroup.samples"
    while kill -0 "$pid" 2>/dev/null; do
        usage=$(cat "$cgroup_dir/$cur")
        last=$usage
        [ "$usage" -gt "$high" ] && high=$usage
        awk -v u="$usage" "$stat_keys END {print u, c + 0, d + 0, w + 0, a + 0}" "$cgroup_dir/memory.stat" \
            >>"$work/cgroup.samples"
        sleep 0.1
    done
    local status=0
    wait "$pid" || status=$?
    local after peak_bytes
    after=$(cat "$cgroup_dir/$cur")
    peak_bytes=$(cat "$cgroup_dir/$peak" 2>/dev/null || echo "$high")
    read -r secs user sys rss_kib <"$work/cgroup.time" || true
    if [ "$status" = 0 ] && cmp -s <(tail -c 1048576 "$out/huge.bin") <(tail -c 1048576 "$work/s3/cgroup/model/huge.bin"); then
        echo "completed: $mib MiB in $secs s ($(echo "$mib / $secs" | bc -l | xargs printf %.0f) MiB/s), $(checks cgroup)"
    else
        echo "NOT completed (exit $status):"
        tail -5 "$work/cgroup.log"
    fi
    local oom
    oom=$(awk '$1 == "oom_kill" {print $2}' "$cgroup_dir/$events")
    if [ "$cgroup_version" = 1 ]; then
        echo "memory.failcnt (charges that hit the limit and had to reclaim): $(cat "$cgroup_dir/memory.failcnt")"
    fi
    echo "OOM kills: ${oom:-0}; peak RSS ${rss_kib:-?} KiB"
    echo "cgroup memory: peak $((peak_bytes / 1048576)) MiB; last sample before exit $((last / 1048576)) MiB;" \
        "after exit $((after / 1048576)) MiB"
    # What the charge was made of, sampled every 0.1 s while it ran.
    "$PYTHON" - "$work/cgroup.samples" "$cgroup_limit_mib" <<'PY'
import statistics, sys
rows = [[int(v) / 1048576 for v in line.split()] for line in open(sys.argv[1]) if line.strip()]
limit = float(sys.argv[2])
if rows:
    at = [r for r in rows if r[0] >= 0.95 * limit]
    med = lambda i, rs: statistics.median(r[i] for r in rs)
    print(f"{len(rows)} samples; median usage {med(0, rows):.0f} MiB: page cache {med(1, rows):.0f}"
          f" (dirty {med(2, rows):.0f}, under writeback {med(3, rows):.0f}), anonymous {med(4, rows):.0f};"
          f" {len(at)} samples at >= 95% of the limit", end="")
    if at:
        print(f", where page cache {med(1, at):.0f} MiB (dirty {med(2, at):.0f}, under writeback {med(3, at):.0f})")
    else:
        print()
PY
    rm -rf "$out"
    # Page cache still charged to the cgroup goes with it: move it up.
    echo 0 >"$cgroup_dir/memory.force_empty" 2>/dev/null || true
    rmdir "$cgroup_dir" 2>/dev/null && cgroup_dir=
}
if [ "$cgroup_gib" -gt 0 ]; then cgroup_run; fi

# --- part 3: part size x workers ---------------------------------------------
if [ "$tune" = 1 ]; then
    echo
    echo "S3 throughput (MiB/s), runtime, part size x workers; median of $tune_runs, boto3 ($workers) interleaved as the baseline"
    results=$work/tune.tsv
    : >"$results"
    for run in $(seq "$tune_runs"); do
        warm
        rm -rf "$work/out-boto3"
        measure boto3 "$s3_pid" "$s3_mib" "$PYTHON" "$work/py/boto3_get.py" "$s3_endpoint" "$work/out-boto3" "$workers"
        for part in $tune_parts; do
            for w in $tune_workers; do
                rm -rf "$work/out-tune"
                measure "part$part-w$w" "$s3_pid" "$s3_mib" env MATRIXINFER_BENCH_PART_MIB="$part" \
                    "${runtime_s3[@]}" --output-dir "$work/out-tune" --max-workers "$w"
            done
        done
    done
    "$PYTHON" - "$results" "$tune_parts" "$tune_workers" <<'PY'
import statistics, sys
path, parts, workers = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = {}
for line in open(path):
    name, mib, secs = line.split("\t")[:3]
    rows.setdefault(name, []).append(float(mib) / float(secs))
boto3 = statistics.median(rows["boto3"])
print(f"| part \\ workers | " + " | ".join(workers) + " |")
print("|---|" + "---|" * len(workers))
for p in parts:
    cells = []
    for w in workers:
        v = rows[f"part{p}-w{w}"]
        cells.append(f"{statistics.median(v):.0f} ({statistics.median(v) / boto3:.2f}x)")
    print(f"| {p} MiB | " + " | ".join(cells) + " |")
print(f"boto3 median over all runs: {boto3:.0f} MiB/s")
PY
    rm -rf "$work/out-tune" "$work/out-boto3"
fi
