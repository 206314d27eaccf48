#!/usr/bin/env bash
# idfabric load benchmark (issue 3): nginx, a bare Pingora passthrough and idfabric on
# loopback, each proxy pinned to one core, wrk on the other, interleaved rounds.
#
#   benches/load.sh                                   # default: 3 rounds of 10 s, 100k tokens
#   ROUNDS=1 DURATION=3s TOKENS=5000 benches/load.sh  # quick check (~1 minute after the build)
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [10s]  CONNS [32]  THREADS [1] (wrk threads)
#   TOKENS [100000]   distinct valid tokens for the cache-miss scenario
#   FLOOD_CONNS [32]  connections of the invalid-token flood
#   PROXY_CPU [0]  LOAD_CPU [1] (wrk and the backend)
#   OUT [benches/out] where raw results go;  SKIP_BUILD [0];  SKIP_INSTALL [0]
#   BASELINE [unset]  path of another idfabric binary (an earlier commit's release
#       build): each round also runs its hot and distinct scenarios, on the same configs
#       (rows `baseline`), so a regression is measured side by side, not across runs
#   PROFILE=hot,bare,nginx,noid,r1000,p100,distinct,flood[,base_hot,base_distinct with
#       BASELINE]  instead of the rounds, one
#       run per scenario under `perf record`; reports in $OUT/<timestamp>/perf-*.txt
#       (PERF_FREQ [499], PERF_CALLGRAPH [dwarf,16384])
#
# Prints a table (medians over rounds) of rps, p50, p99, CPU µs per request on the proxy
# core, and the same-run ratios idfabric/bare-pingora and idfabric/nginx; raw wrk output,
# per-run numbers (runs.tsv) and the table go to $OUT/<timestamp>/.
# Everything started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/benches"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
TOKENS=${TOKENS:-100000}
FLOOD_CONNS=${FLOOD_CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-$BENCH/out}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_INSTALL=${SKIP_INSTALL:-0}

DUR_S=${DURATION%s}
[[ "$DUR_S" =~ ^[0-9]+$ ]] || { echo "DURATION must be whole seconds, like 10s" >&2; exit 2; }

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ tools -------------
need_install=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_install+=(nginx)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
command -v taskset >/dev/null 2>&1 || need_install+=(util-linux)
if ((${#need_install[@]})); then
    [[ "$SKIP_INSTALL" == 1 ]] && { echo "missing: ${need_install[*]}" >&2; exit 1; }
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    pkgs=()
    for p in "${need_install[@]}"; do
        if [[ $p == nginx ]]; then
            if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
        else
            pkgs+=("$p")
        fi
    done
    log "installing ${pkgs[*]}"
    $SUDO apt-get update -qq
    # apt-cache may not have known nginx-light before the update
    if [[ " ${pkgs[*]} " == *" nginx "* ]] && apt-cache show nginx-light >/dev/null 2>&1; then
        pkgs=("${pkgs[@]/#nginx/nginx-light}")
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

NCPU=$(nproc)
if ((NCPU < 2)); then log "warning: $NCPU CPU(s); proxy and load generator will share a core"; LOAD_CPU=$PROXY_CPU; fi

# ------------------------------------------------------------------ build -------------
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release binary and examples/bare_pingora"
    (cd "$ROOT" && PATH="$ROOT/.tools/venv/bin:$PATH" cargo build --release --bin idfabric --example bare_pingora)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
IDF="$TARGET_DIR/release/idfabric"
BARE="$TARGET_DIR/release/examples/bare_pingora"
[[ -x "$IDF" && -x "$BARE" ]] || { echo "missing $IDF or $BARE (build failed?)" >&2; exit 1; }

# ------------------------------------------------------------------ state -------------
STAMP=$(date +%Y%m%d-%H%M%S)
RUN="$OUT/$STAMP"
mkdir -p "$RUN/wrk" "$OUT/cache"
WORK=$(mktemp -d /tmp/idfabric-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()

stop_pid() { # stop_pid PID [signal]: signal, wait up to 3 s, then SIGKILL
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -s KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
untrack() { local keep=() p; for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
stop_tracked() { stop_pid "$1" "${STOPSIG[$1]:-TERM}"; untrack "$1"; }
declare -A STOPSIG
cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do stop_pid "$pid" "${STOPSIG[$pid]:-TERM}"; done
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a loopback port nothing listens on (and not handed out before)
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        [[ " ${USED_PORTS:-} " == *" $p "* ]] && continue
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then USED_PORTS="${USED_PORTS:-} $p"; echo "$p"; return; fi
    done
}

wait_port() { # wait_port PORT PID
    local i
    for i in $(seq 200); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "process $2 died before listening on $1" >&2; return 1; }
        sleep 0.05
    done
    echo "nothing listening on $1" >&2; return 1
}

cpu_ticks() { # utime + stime of one process (all its threads), in clock ticks
    local s; s=$(<"/proc/$1/stat"); s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $(( ${12} + ${13} ))
}
CLK_TCK=$(getconf CLK_TCK)
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ------------------------------------------------------------------ nginx -------------
start_nginx() { # start_nginx NAME TEMPLATE PORT CPU [BACKEND_PORT] -> sets NGX_MASTER NGX_WORKER
    local name=$1 tpl=$2 port=$3 cpu=$4 backend=${5:-0} dir="$WORK/$1"
    mkdir -p "$dir"
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@BACKEND@|$backend|g" "$tpl" >"$dir/nginx.conf"
    taskset -c "$cpu" "$NGINX" -p "$dir" -e "$dir/startup-error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout.log" 2>&1 &
    NGX_MASTER=$!
    PIDS+=("$NGX_MASTER"); STOPSIG[$NGX_MASTER]=TERM
    wait_port "$port" "$NGX_MASTER"
    NGX_WORKER=""
    local i
    for i in $(seq 50); do
        NGX_WORKER=$(pgrep -P "$NGX_MASTER" | head -n1 || true)
        [[ -n "$NGX_WORKER" ]] && break
        sleep 0.05
    done
    [[ -n "$NGX_WORKER" ]] || { echo "nginx $name: no worker process" >&2; exit 1; }
}

# ------------------------------------------------------------------ idfabric configs --
KEYS="$OUT/cache/keys"
if [[ ! -f "$KEYS/dev-idp-workforce.pem" ]]; then
    rm -rf "$KEYS"
    "$IDF" keys generate --dir "$KEYS" >/dev/null
fi

# The dev providers' issuers are fixed (not the proxy's port) and their keys are
# fetched from jwks_url on the proxy listener, so minted tokens stay valid across
# instances and runs (and are cached in $OUT/cache).
provider_yaml() { # provider_yaml ID POPULATION SHAPE KEYFILE PROXY_PORT
    local extra=""
    [[ $3 == auth0 ]] && extra=$'claims:\n  groups: https://idfabric.dev/groups\n  roles: https://idfabric.dev/roles\n  email: https://idfabric.dev/email\n'
    cat <<EOF
id: $1
kind: dev
population: $2
shape: $3
issuer: http://127.0.0.1/bench/$1
jwks_url: http://127.0.0.1:$5/.idfabric/dev/$1/jwks
signing_key: $KEYS/$4
token_ttl: 12h
${extra}users:
  - { name: alice, display_name: Alice Bench, email: alice@bench.example, email_verified: true, groups: [employees, hr], roles: [Reports.Read], scopes: [orders:read], mfa: true, connection: auth0 }
EOF
}

# write_idf_config DIR VARIANT PORT ADMIN_PORT BACKEND_PORT
#   VARIANT: base | noid | r1000 | p100 | audit | mint
#   The audit log is off except in `audit` (nginx runs with access_log off too).
write_idf_config() {
    local dir=$1 variant=$2 port=$3 admin=$4 backend=$5 i
    mkdir -p "$dir/providers"
    local ids=(bench-wf bench-cu bench-okta bench-cognito)
    provider_yaml bench-wf workforce entra dev-idp-workforce.pem "$port" >"$dir/providers/bench-wf.yaml"
    provider_yaml bench-cu customer auth0 dev-idp-customer.pem "$port" >"$dir/providers/bench-cu.yaml"
    provider_yaml bench-okta workforce okta dev-idp-workforce.pem "$port" >"$dir/providers/bench-okta.yaml"
    provider_yaml bench-cognito customer cognito dev-idp-customer.pem "$port" >"$dir/providers/bench-cognito.yaml"
    if [[ $variant == p100 ]]; then
        local shapes=(entra okta auth0 cognito)
        for i in $(seq 5 100); do
            provider_yaml "bench-x$i" workforce "${shapes[$((i % 4))]}" dev-idp-workforce.pem "$port" >"$dir/providers/bench-x$i.yaml"
            ids+=("bench-x$i")
        done
    fi
    local idtoken=""
    [[ $variant == noid ]] && idtoken="    identity_token: false"$'\n'
    local audit="$dir/audit.log"
    {
        echo "listen: { http: 127.0.0.1:$port }"
        echo "admin: 127.0.0.1:$admin"
        echo "providers: [$(IFS=,; echo "${ids[*]}" | sed 's/,/, /g')]"
        echo "broker:"
        echo "  issuer: http://127.0.0.1:$port/broker"
        echo "  signing_key: $KEYS/broker-signing.pem"
        echo "server: { threads: 1 }"
        # The audit log is on (stdout) by default: off here, except in the audit variant.
        # A BASELINE binary from before the audit log (LEGACY=1) does not know the key.
        if [[ $variant == audit ]]; then echo "audit: { output: $audit }"
        elif [[ ${LEGACY:-0} != 1 ]]; then echo "audit: { output: off }"; fi
        echo "routes:"
        if [[ $variant == r1000 ]]; then
            # 999 decoys ahead of the measured route: exact hosts, wildcards and path
            # prefixes on any host, so the lookup walks the wildcard and prefix lists.
            for i in $(seq 1 999); do
                case $((i % 3)) in
                    0) m="{ host: r$i.bench.example }" ;;
                    1) m="{ host: \"*.w$i.bench.example\" }" ;;
                    *) m="{ path_prefix: /p$i/ }" ;;
                esac
                echo "  - { name: decoy$i, match: $m, auth: bearer, upstream: [127.0.0.1:$backend] }"
            done
        fi
        echo "  - name: main"
        echo "    match: { path_prefix: / }"
        echo "    auth: bearer"
        echo "    upstream: [127.0.0.1:$backend]"
        echo "    require: { groups_any: [employees] }"
        printf '%s' "$idtoken"
    } >"$dir/routes.yaml"
}

IDF_PID=""; IDF_PORT=""; IDF_ADMIN=""
start_idf() { # start_idf NAME VARIANT [BINARY] -> IDF_PID IDF_PORT IDF_ADMIN
    local name=$1 variant=$2 bin=${3:-$IDF} dir="$WORK/idf-$1-$RANDOM" i code
    IDF_PORT=$(free_port); IDF_ADMIN=$(free_port)
    # A binary from before the audit log has no `audit.output` key to refuse or accept.
    LEGACY=$(grep -aqF 'audit.output' "$bin" && echo 0 || echo 1) write_idf_config "$dir" "$variant" "$IDF_PORT" "$IDF_ADMIN" "$BACKEND_PORT"
    (cd "$dir" && IDFABRIC_LOG=warn NO_COLOR=1 exec taskset -c "$PROXY_CPU" "$bin" serve --config "$dir/routes.yaml") \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    IDF_PID=$!
    PIDS+=("$IDF_PID"); STOPSIG[$IDF_PID]=INT   # Pingora: SIGINT = fast shutdown
    wait_port "$IDF_PORT" "$IDF_PID" || { cat "$dir/stderr.log" >&2; exit 1; }
    for i in $(seq 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$IDF_ADMIN/readyz" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    echo "idfabric $name ($variant) not ready; log:" >&2; grep -v "^ *[0-9]*: \|^ *at " "$dir/stderr.log" | tail -20 >&2; exit 1
}

metric() { # metric ADMIN_PORT NAME -> value (0 when absent)
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {v=$2} END {print v+0}'
}

# ------------------------------------------------------------------ tokens ------------
MINT="$WORK/mint"
write_idf_config "$MINT" mint 1 2 3
mint() { "$IDF" token mint --provider bench-wf --user alice --config "$MINT/routes.yaml" --ttl 12h "$@"; }
mint >"$WORK/hot.txt"
KEYSUM=$(cat "$KEYS/dev-idp-workforce.pem" | cksum | cut -d' ' -f1)
VALID="$OUT/cache/valid-$TOKENS-$KEYSUM.txt"
if [[ -f "$VALID" && -n $(find "$VALID" -mmin -360 2>/dev/null) && $(wc -l <"$VALID") -eq $TOKENS ]]; then
    log "reusing $TOKENS distinct tokens from $VALID"
else
    rm -f "$OUT"/cache/valid-*.txt
    log "minting $TOKENS distinct RS256 tokens (cached for 6 h in $OUT/cache)"
    t0=$(date +%s)
    mint --count "$TOKENS" >"$VALID.tmp" && mv "$VALID.tmp" "$VALID"
    log "minted in $(( $(date +%s) - t0 )) s"
fi
# Invalid (sanity check only; the flood forges a distinct token per request in
# wrk/flood.lua): a real token with one signature character changed.
INVALID="$WORK/invalid.txt"
head -n 1 "$VALID" | awk '{ i = length($0) - 12; c = substr($0, i, 1); r = (c == "A") ? "B" : "A";
    print substr($0, 1, i - 1) r substr($0, i + 1) }' >"$INVALID"

# ------------------------------------------------------------------ start -------------
BACKEND_PORT=$(free_port)
start_nginx backend "$BENCH/nginx/backend.conf" "$BACKEND_PORT" "$LOAD_CPU"
NGINX_PORT=$(free_port)
start_nginx proxy "$BENCH/nginx/proxy.conf" "$NGINX_PORT" "$PROXY_CPU" "$BACKEND_PORT"
NGINX_WORKER=$NGX_WORKER
BARE_PORT=$(free_port)
taskset -c "$PROXY_CPU" "$BARE" --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$BACKEND_PORT" \
    >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID"); STOPSIG[$BARE_PID]=INT
wait_port "$BARE_PORT" "$BARE_PID"

declare -A IPID IPORT IADMIN
for v in base noid r1000 p100 audit; do
    start_idf "$v" "$v"
    IPID[$v]=$IDF_PID; IPORT[$v]=$IDF_PORT; IADMIN[$v]=$IDF_ADMIN
done
if [[ -n ${BASELINE:-} ]]; then
    [[ -x $BASELINE ]] || { echo "BASELINE=$BASELINE is not an executable" >&2; exit 1; }
    start_idf baseline base "$BASELINE"
    BL_PID=$IDF_PID; BL_PORT=$IDF_PORT; BL_ADMIN=$IDF_ADMIN
    log "baseline $BASELINE :$BL_PORT (pid $BL_PID)"
fi
log "backend :$BACKEND_PORT  nginx :$NGINX_PORT (worker $NGINX_WORKER)  bare-pingora :$BARE_PORT (pid $BARE_PID)"
for v in base noid r1000 p100 audit; do log "idfabric $v :${IPORT[$v]} (pid ${IPID[$v]})"; done

# Sanity: every target answers 200 with a valid token, 401 with an invalid one.
check() { # check URL EXPECTED [TOKEN]
    local code
    if [[ -n ${3:-} ]]; then code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $3" "$1")
    else code=$(curl -s -o /dev/null -w '%{http_code}' "$1"); fi
    [[ $code == "$2" ]] || { echo "sanity check failed: $1 answered $code, expected $2" >&2; exit 1; }
}
HOT=$(head -n1 "$WORK/hot.txt")
head -n 1 "$VALID" >"$WORK/flood-base.txt"
check "http://127.0.0.1:$NGINX_PORT/" 200
check "http://127.0.0.1:$BARE_PORT/" 200
for v in base noid r1000 p100 audit; do check "http://127.0.0.1:${IPORT[$v]}/" 200 "$HOT"; done
check "http://127.0.0.1:${IPORT[base]}/" 200 "$(head -n1 "$VALID")"
check "http://127.0.0.1:${IPORT[base]}/" 401 "$(head -n1 "$INVALID")"
check "http://127.0.0.1:${IPORT[base]}/" 401

# ------------------------------------------------------------------ runs --------------
TSV="$RUN/runs.tsv"
printf 'round\ttarget\tscenario\trequests\tduration_us\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx\tsockerr\tvmhwm_kb\tvmrss_kb\tcache_hits\tcache_misses\n' >"$TSV"

wrk_run() { # wrk_run OUTFILE CONNS DURATION_S URL SCRIPT [ARGS...]
    local out=$1 c=$2 d=$3 url=$4 script=$5; shift 5
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$c" -d"${d}s" --latency -s "$script" "$url" -- "$@" >"$out" 2>&1
}
bench_line() { # bench_line WRKOUT -> "requests duration p50 p99 non2xx sockerr"
    awk '/^BENCH/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        print v["requests"], v["duration_us"], v["p50_us"], v["p99_us"], v["non2xx"], v["sockerr"] }' "$1"
}
record() { # record ROUND TARGET SCENARIO WRKOUT CPU_TICKS TOTAL_REQUESTS PID ADMIN HITS0 MISSES0
    local r=$1 target=$2 sc=$3 out=$4 ticks=$5 total=$6 pid=$7 admin=$8 h0=$9 m0=${10}
    local req dur p50 p99 non sock
    read -r req dur p50 p99 non sock < <(bench_line "$out")
    [[ -n ${req:-} ]] || { echo "no wrk result in $out:" >&2; cat "$out" >&2; exit 1; }
    [[ $total == "-" ]] && total=$req
    local rps cpu hwm rss hits=- misses=-
    rps=$(awk -v n="$req" -v d="$dur" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
    cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
    hwm=$(status_kb "$pid" VmHWM); rss=$(status_kb "$pid" VmRSS)
    if [[ $admin != - ]]; then
        hits=$(( $(metric "$admin" idfabric_verify_cache_hits_total) - h0 ))
        misses=$(( $(metric "$admin" idfabric_verify_cache_misses_total) - m0 ))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$r" "$target" "$sc" "$req" "$dur" "$rps" "$p50" "$p99" "$cpu" "$non" "$sock" "$hwm" "$rss" "$hits" "$misses" >>"$TSV"
    log "round $r  $(printf '%-13s %-9s' "$target" "$sc") rps=$rps p50=${p50}us p99=${p99}us cpu=${cpu}us/req non2xx=$non"
}

# run_one ROUND TARGET SCENARIO PID URL ADMIN SCRIPT [ARGS...]
run_one() {
    local r=$1 target=$2 sc=$3 pid=$4 url=$5 admin=$6 script=$7; shift 7
    local out="$RUN/wrk/r$r-$sc.txt" t0 t1 h0=0 m0=0
    if [[ $admin != - ]]; then
        h0=$(metric "$admin" idfabric_verify_cache_hits_total); m0=$(metric "$admin" idfabric_verify_cache_misses_total)
    fi
    t0=$(cpu_ticks "$pid")
    wrk_run "$out" "$CONNS" "$DUR_S" "$url" "$script" "$@"
    t1=$(cpu_ticks "$pid")
    record "$r" "$target" "$sc" "$out" $((t1 - t0)) - "$pid" "$admin" "$h0" "$m0"
    sleep 1
}

HOTLUA="$BENCH/wrk/hot.lua"; TOKLUA="$BENCH/wrk/tokens.lua"; FLOODLUA="$BENCH/wrk/flood.lua"
# PROFILE=hot,bare,… : instead of the rounds, one wrk run per named scenario under
# `perf record` (cpu-clock, call graphs), reports in $RUN/perf-<scenario>.txt.
if [[ -n "${PROFILE:-}" ]]; then
    command -v perf >/dev/null 2>&1 || { echo "PROFILE needs perf (apt-get install linux-perf)" >&2; exit 1; }
    IFS=, read -r -a profs <<<"$PROFILE"
    for sc in "${profs[@]}"; do
        script=$HOTLUA; arg="$WORK/hot.txt"
        case $sc in
            nginx) pid=$NGINX_WORKER; url="http://127.0.0.1:$NGINX_PORT/" ;;
            bare) pid=$BARE_PID; url="http://127.0.0.1:$BARE_PORT/" ;;
            hot) pid=${IPID[base]}; url="http://127.0.0.1:${IPORT[base]}/" ;;
            noid|r1000|p100|audit) pid=${IPID[$sc]}; url="http://127.0.0.1:${IPORT[$sc]}/" ;;
            distinct) start_idf distinct base; pid=$IDF_PID; url="http://127.0.0.1:$IDF_PORT/"; script=$TOKLUA; arg=$VALID ;;
            base_hot) pid=$BL_PID; url="http://127.0.0.1:$BL_PORT/" ;;
            base_distinct) start_idf base-distinct base "$BASELINE"; pid=$IDF_PID; url="http://127.0.0.1:$IDF_PORT/"; script=$TOKLUA; arg=$VALID ;;
            flood) start_idf flood base; pid=$IDF_PID; url="http://127.0.0.1:$IDF_PORT/"; script=$FLOODLUA; arg="$WORK/flood-base.txt" ;;
            *) echo "unknown PROFILE scenario $sc" >&2; exit 2 ;;
        esac
        log "profiling $sc (pid $pid) for $DURATION"
        perf record -q -e cpu-clock -F "${PERF_FREQ:-499}" --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" -p "$pid" -o "$RUN/perf-$sc.data" -- sleep "$DUR_S" 2>/dev/null &
        perf_pid=$!
        PIDS+=("$perf_pid")
        if [[ -n $arg ]]; then wrk_run "$RUN/wrk/profile-$sc.txt" "$CONNS" "$DUR_S" "$url" "$script" "$arg"
        else wrk_run "$RUN/wrk/profile-$sc.txt" "$CONNS" "$DUR_S" "$url" "$script"; fi
        wait "$perf_pid" || true
        untrack "$perf_pid"
        {
            echo "## self time by shared object"
            perf report -i "$RUN/perf-$sc.data" --no-children --stdio --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
            echo "## self time by symbol (>= 0.5%)"
            perf report -i "$RUN/perf-$sc.data" --no-children --stdio --sort dso,symbol -g none --percent-limit 0.5 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | cut -c1-220
            echo "## inclusive time (children) of this program's own functions (>= 1%)"
            perf report -i "$RUN/perf-$sc.data" --children --stdio --sort symbol -g none --percent-limit 1 2>/dev/null \
                | grep -E 'idfabric::|pingora_proxy::|moka::|aws_lc|jsonwebtoken|prometheus|tracing' | cut -c1-220 | head -60
        } >"$RUN/perf-$sc.txt" || true
        log "perf report: $RUN/perf-$sc.txt ($(bench_line "$RUN/wrk/profile-$sc.txt" | awk '{printf "%d requests", $1}'))"
        [[ $sc == distinct || $sc == base_distinct || $sc == flood ]] && stop_tracked "$IDF_PID"
    done
    exit 0
fi

for r in $(seq 1 "$ROUNDS"); do
    log "---- round $r of $ROUNDS"
    # The baselines get the same Authorization header (not checked), as in the issue's
    # reference runs, so request sizes match.
    run_one "$r" nginx nginx "$NGINX_WORKER" "http://127.0.0.1:$NGINX_PORT/" - "$HOTLUA" "$WORK/hot.txt"
    run_one "$r" bare-pingora bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT/" - "$HOTLUA" "$WORK/hot.txt"
    run_one "$r" idfabric hot "${IPID[base]}" "http://127.0.0.1:${IPORT[base]}/" "${IADMIN[base]}" "$HOTLUA" "$WORK/hot.txt"
    if [[ -n ${BASELINE:-} ]]; then
        run_one "$r" baseline base_hot "$BL_PID" "http://127.0.0.1:$BL_PORT/" "$BL_ADMIN" "$HOTLUA" "$WORK/hot.txt"
    fi
    run_one "$r" idfabric noid "${IPID[noid]}" "http://127.0.0.1:${IPORT[noid]}/" "${IADMIN[noid]}" "$HOTLUA" "$WORK/hot.txt"
    run_one "$r" idfabric r1000 "${IPID[r1000]}" "http://127.0.0.1:${IPORT[r1000]}/" "${IADMIN[r1000]}" "$HOTLUA" "$WORK/hot.txt"
    run_one "$r" idfabric p100 "${IPID[p100]}" "http://127.0.0.1:${IPORT[p100]}/" "${IADMIN[p100]}" "$HOTLUA" "$WORK/hot.txt"
    run_one "$r" idfabric audit "${IPID[audit]}" "http://127.0.0.1:${IPORT[audit]}/" "${IADMIN[audit]}" "$HOTLUA" "$WORK/hot.txt"

    # Distinct tokens: a fresh gateway (empty cache) every round.
    start_idf "distinct-r$r" base
    run_one "$r" idfabric distinct "$IDF_PID" "http://127.0.0.1:$IDF_PORT/" "$IDF_ADMIN" "$TOKLUA" "$VALID"
    stop_tracked "$IDF_PID"
    if [[ -n ${BASELINE:-} ]]; then
        start_idf "baseline-distinct-r$r" base "$BASELINE"
        run_one "$r" baseline base_distinct "$IDF_PID" "http://127.0.0.1:$IDF_PORT/" "$IDF_ADMIN" "$TOKLUA" "$VALID"
        stop_tracked "$IDF_PID"
    fi

    # Invalid-token flood beside valid hot traffic, on a fresh gateway (peak RSS is its own).
    start_idf "flood-r$r" base
    fout="$RUN/wrk/r$r-flood_invalid.txt"; vout="$RUN/wrk/r$r-flood_valid.txt"
    h0=$(metric "$IDF_ADMIN" idfabric_verify_cache_hits_total); m0=$(metric "$IDF_ADMIN" idfabric_verify_cache_misses_total)
    rss0=$(status_kb "$IDF_PID" VmRSS)
    t0=$(cpu_ticks "$IDF_PID")
    wrk_run "$fout" "$FLOOD_CONNS" $((DUR_S + 1)) "http://127.0.0.1:$IDF_PORT/" "$FLOODLUA" "$WORK/flood-base.txt" &
    FLOOD_WRK=$!
    PIDS+=("$FLOOD_WRK")
    sleep 0.5
    wrk_run "$vout" "$CONNS" "$DUR_S" "http://127.0.0.1:$IDF_PORT/" "$HOTLUA" "$WORK/hot.txt"
    wait "$FLOOD_WRK" || true
    untrack "$FLOOD_WRK"
    t1=$(cpu_ticks "$IDF_PID")
    total=$(( $(bench_line "$vout" | cut -d' ' -f1) + $(bench_line "$fout" | cut -d' ' -f1) ))
    record "$r" idfabric flood_valid "$vout" $((t1 - t0)) "$total" "$IDF_PID" "$IDF_ADMIN" "$h0" "$m0"
    record "$r" idfabric flood_invalid "$fout" $((t1 - t0)) "$total" "$IDF_PID" - 0 0
    echo "$r $rss0" >>"$RUN/flood-rss-before.txt"
    curl -s "http://127.0.0.1:$IDF_ADMIN/metrics" | grep -E '^idfabric_(token_validations_total|verify_cache)' \
        | sed "s/^/round $r: /" >>"$RUN/flood-metrics.txt" || true
    stop_tracked "$IDF_PID"
    sleep 1
done

# ------------------------------------------------------------------ report ------------
{
    echo "# idfabric load benchmark $STAMP"
    echo "# $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "# ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS TOKENS=$TOKENS FLOOD_CONNS=$FLOOD_CONNS proxy CPU $PROXY_CPU, wrk+backend CPU $LOAD_CPU"
    echo "# wrk -t$THREADS -c$CONNS -d$DURATION --latency; medians over rounds; ratios are medians of same-round ratios"
    echo
    awk -F'\t' -f "$BENCH/summarize.awk" "$TSV"
} | tee "$RUN/table.md"
cp "$RUN/table.md" "$OUT/latest.md"
log "raw results: $RUN"
