#!/usr/bin/env bash
# idfabric load benchmark: nginx, a bare Pingora passthrough and idfabric on
# loopback, each proxy pinned to one core, wrk on the other, interleaved rounds.
#
#   benches/load.sh                                   # default: 3 rounds of 10 s, 100k tokens
#   ROUNDS=1 DURATION=3s TOKENS=5000 benches/load.sh  # quick check (~2 minutes after the build)
#   SCENARIOS=hot,session_mem,mix benches/load.sh     # a subset (nginx and bare Pingora always run)
#   PROFILE=session_mem,distinct_users benches/load.sh  # perf record instead of the rounds
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [10s]  CONNS [32]  THREADS [1] (wrk threads)
#   TOKENS [100000]   distinct valid tokens for the cache-miss scenarios (distinct, es256_distinct)
#   USERS [TOKENS]    distinct users for distinct_users and mix
#   FLOOD_CONNS [32]  connections of the invalid-token flood
#   PROXY_CPU [0]  LOAD_CPU [1] (wrk and the backend)
#   SERVER_EXTRA [unset]  more `server:` keys for every idfabric config (and BASELINE's),
#       e.g. SERVER_EXTRA="work_stealing: false" to A/B a runtime setting across two runs
#   OUT [benches/out] where raw results go;  SKIP_BUILD [0];  SKIP_INSTALL [0]
#   BASELINE [unset]  path of another idfabric binary (an earlier commit's release
#       build): each round also runs its hot and distinct scenarios, on the same configs
#       (rows `baseline`; distinct_users too), so a regression is measured side by side, not across runs
#   SCENARIOS [all]  comma-separated subset of the idfabric scenarios below; nginx and
#       bare Pingora run in every round regardless (they are the anchors of the ratios)
#         hot noid r1000 p100 audit distinct flood       bearer tokens (RS256 provider)
#         distinct_steady  distinct tokens with the verification cache already full
#                          (server.verify_cache_entries: STEADY_ENTRIES [TOKENS/10]) and
#                          a warm-up run before the measured one: every request a miss
#                          that evicts, on memory the gateway already touched (the
#                          production steady state, without a fresh process's page faults)
#         distinct_users   USERS [=TOKENS] different users, one token each (each request
#                          mints a new X-Identity-Token), fresh gateway per round
#         es256_hot es256_distinct   the same with an ES256-signing provider
#         mix              80% hot token, 15% distinct users, 5% forged (expected 401s,
#                          counted apart), fresh gateway per round
#         session_mem session_redis   a signed-in session cookie on an `auth: session`
#                          route, memory store / a real redis-server started here
#         replicas         two gateways on one Redis, one wrk per replica at CONNS/2 each,
#                          CPU and requests summed
#   FLOOR [1]  run the criterion `floor` group (RS256 / ES256 verify, ES256 sign) in the
#       same run, pinned to the proxy core, and print it with the targets computed from it
#       (FLOOR_TIME [3] seconds of measurement per benchmark); FLOOR=0 skips it
#   PROFILE=hot,bare,nginx,noid,r1000,p100,audit,distinct,distinct_steady,flood,distinct_users,es256_hot,
#       es256_distinct,mix,session_mem,session_redis,replicas[,base_hot,base_distinct,base_distinct_users with
#       BASELINE]  instead of the rounds, one
#       run per scenario under `perf record`; reports in $OUT/<timestamp>/perf-*.txt
#       (PERF_FREQ [499], PERF_CALLGRAPH [dwarf,16384])
#   COUNT=bare,hot,audit,…  instead of the rounds, deterministic counts per request for
#       each named scenario (bare, hot, noid, r1000, p100, audit, es256_hot, session_mem,
#       distinct, distinct_users, es256_distinct): user-space instructions (the target run
#       again under valgrind's callgrind, counters zeroed after a warm-up, COUNT_REQS
#       [2000] requests on one keep-alive connection, benches/count_client.py), and system calls, context switches and page
#       faults (`perf stat` on the native process during a wrk run). Unlike CPU time on a
#       shared VM these repeat to within a fraction of a percent, so they can judge a 5 %
#       target; table in $OUT/<timestamp>/count.md. Kernel time per system call is not in
#       the instruction count: compare the syscall column too. COUNT_CACHE=1 adds
#       callgrind's cache simulation: first-level data and last-level cache misses per
#       request (what allocation and cold memory cost, which instructions do not show).
#
# Prints a table (medians over rounds) of rps, p50, p99, CPU µs per request on the proxy
# core, and the same-round ratios of CPU per request to bare Pingora and to nginx, with the
# floor (signature costs) and the targets above and below it; raw wrk output, per-run
# numbers (runs.tsv), floor.tsv and the table go to $OUT/<timestamp>/.
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
FLOOR=${FLOOR:-1}
FLOOR_TIME=${FLOOR_TIME:-3}
USERS=${USERS:-$TOKENS}
ALL_SCENARIOS="hot noid r1000 p100 audit distinct distinct_steady flood distinct_users es256_hot es256_distinct mix session_mem session_redis replicas"
SCENARIOS=${SCENARIOS:-all}
[[ $SCENARIOS == all ]] && SCENARIOS=${ALL_SCENARIOS// /,}
[[ -n ${PROFILE:-} ]] && SCENARIOS=$PROFILE
[[ -n ${COUNT:-} ]] && SCENARIOS=$COUNT
for sc in ${SCENARIOS//,/ }; do
    [[ " $ALL_SCENARIOS nginx bare base_hot base_distinct base_distinct_users " == *" $sc "* ]] || { echo "unknown scenario $sc (known: $ALL_SCENARIOS)" >&2; exit 2; }
done
want() { local x; for x in "$@"; do [[ ",$SCENARIOS," == *",$x,"* ]] && return 0; done; return 1; }

DUR_S=${DURATION%s}
[[ "$DUR_S" =~ ^[0-9]+$ ]] || { echo "DURATION must be whole seconds, like 10s" >&2; exit 2; }

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ tools -------------
need_install=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_install+=(nginx)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
command -v taskset >/dev/null 2>&1 || need_install+=(util-linux)
if want session_redis replicas; then command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server); fi
if want es256_hot es256_distinct; then command -v openssl >/dev/null 2>&1 || need_install+=(openssl); fi
if [[ -n ${COUNT:-} ]]; then
    command -v valgrind >/dev/null 2>&1 || need_install+=(valgrind)
    command -v perf >/dev/null 2>&1 || need_install+=(linux-perf)
    command -v python3 >/dev/null 2>&1 || need_install+=(python3)
fi
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
    if [[ $FLOOR == 1 ]]; then
        log "building the criterion micro-benchmarks (for the floor)"
        (cd "$ROOT" && PATH="$ROOT/.tools/venv/bin:$PATH" cargo bench --bench micro --no-run)
    fi
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

# Below the kernel's ephemeral range: a port picked inside it can be taken, between the
# check and the bind, as the local port of one of the benchmark's own outgoing connections.
EPHEMERAL_LO=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LO > 12000)) || EPHEMERAL_LO=32768
free_port() { # a loopback port nothing listens on (and not handed out before)
    local p
    while :; do
        p=$((10000 + RANDOM % (EPHEMERAL_LO - 10000)))
        [[ " ${USED_PORTS:-} " == *" $p "* ]] && continue
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then USED_PORTS="${USED_PORTS:-} $p"; echo "$p"; return; fi
    done
}

wait_port() { # wait_port PORT PID  (WAIT_TRIES [200] × 50 ms)
    local i
    for i in $(seq "${WAIT_TRIES:-200}"); do
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

# ------------------------------------------------------------------ floor -------------
# The signature costs a cache miss cannot go below, measured on the proxy core in this
# run: criterion's `floor` group (benches/micro.rs), median estimate of each.
FLOOR_TSV="$RUN/floor.tsv"
: >"$FLOOR_TSV"
if [[ $FLOOR == 1 && -z ${PROFILE:-} && -z ${COUNT:-} ]]; then
    log "floor: cargo bench --bench micro -- '^floor/' (${FLOOR_TIME}s each, CPU $PROXY_CPU)"
    (cd "$ROOT" && PATH="$ROOT/.tools/venv/bin:$PATH" taskset -c "$PROXY_CPU" \
        cargo bench --bench micro -- '^floor/' --warm-up-time 1 --measurement-time "$FLOOR_TIME") \
        >"$RUN/floor.txt" 2>"$RUN/floor.stderr" || { cat "$RUN/floor.stderr" >&2; echo "floor benchmarks failed" >&2; exit 1; }
    # "floor/rs256_verify  time:   [lo unit  mid unit  hi unit]" (the name may be on its own line)
    awk '/^floor\// { name = $1; sub(/^floor\//, "", name) }
         /time:/ && name != "" { s = $0; sub(/.*\[/, "", s); sub(/\].*/, "", s); split(s, f, " ")
             v = f[3]; u = f[4]; m = (u == "ns") ? 0.001 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : 1
             printf "%s\t%.2f\n", name, v * m; name = "" }' "$RUN/floor.txt" >"$FLOOR_TSV"
    [[ $(wc -l <"$FLOOR_TSV") -eq 3 ]] || { echo "could not read the floor from $RUN/floor.txt:" >&2; cat "$RUN/floor.txt" >&2; exit 1; }
    log "floor (µs): $(tr '\t\n' '= ' <"$FLOOR_TSV")"
fi

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
provider_yaml() { # provider_yaml ID POPULATION SHAPE KEYFILE PROXY_PORT [ISSUER_PORT]
    # With ISSUER_PORT (browser sign-in): the issuer is the OP the gateway on that port
    # serves itself, so its authorize and token endpoints are reachable.
    local extra="" where
    [[ $3 == auth0 ]] && extra=$'claims:\n  groups: https://idfabric.dev/groups\n  roles: https://idfabric.dev/roles\n  email: https://idfabric.dev/email\n'
    if [[ -n ${6:-} ]]; then where="issuer: http://127.0.0.1:$6/.idfabric/dev/$1"
    else where=$'issuer: http://127.0.0.1/bench/'"$1"$'\njwks_url: http://127.0.0.1:'"$5/.idfabric/dev/$1/jwks"; fi
    cat <<EOF
id: $1
kind: dev
population: $2
shape: $3
$where
signing_key: $KEYS/$4
token_ttl: 12h
${extra}users:
  - { name: alice, display_name: Alice Bench, email: alice@bench.example, email_verified: true, groups: [employees, hr], roles: [Reports.Read], scopes: [orders:read], mfa: true, connection: auth0 }
EOF
}

# An ES256 (P-256) provider key for the es256 scenarios (PKCS#8, as `keys generate` writes).
if [[ ! -f "$KEYS/dev-idp-es256.pem" ]] && want es256_hot es256_distinct; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEYS/dev-idp-es256.pem" 2>/dev/null
fi

# write_idf_config DIR VARIANT PORT ADMIN_PORT BACKEND_PORT [SESSION_STORE] [ISSUER_PORT]
#   VARIANT: base | noid | r1000 | p100 | audit | es256 | mint | session | steady
#   steady: base with a verification cache of STEADY_ENTRIES entries
#   es256 (and mint) add bench-es, an Entra-shaped provider signing with ES256.
#   session: one provider (bench-sess, its OP served by the gateway on ISSUER_PORT,
#   default PORT), one `auth: session` route, `session.store: SESSION_STORE`.
#   The audit log is off except in `audit` (nginx runs with access_log off too).
write_idf_config() {
    local dir=$1 variant=$2 port=$3 admin=$4 backend=$5 store=${6:-memory} issuer_port=${7:-$3} i
    mkdir -p "$dir/providers"
    local ids=(bench-wf bench-cu bench-okta bench-cognito)
    provider_yaml bench-wf workforce entra dev-idp-workforce.pem "$port" >"$dir/providers/bench-wf.yaml"
    provider_yaml bench-cu customer auth0 dev-idp-customer.pem "$port" >"$dir/providers/bench-cu.yaml"
    provider_yaml bench-okta workforce okta dev-idp-workforce.pem "$port" >"$dir/providers/bench-okta.yaml"
    provider_yaml bench-cognito customer cognito dev-idp-customer.pem "$port" >"$dir/providers/bench-cognito.yaml"
    if [[ $variant == es256 || $variant == mint ]] && [[ -f "$KEYS/dev-idp-es256.pem" ]]; then
        provider_yaml bench-es workforce entra dev-idp-es256.pem "$port" >"$dir/providers/bench-es.yaml"
        ids+=(bench-es)
    fi
    if [[ $variant == session ]]; then
        provider_yaml bench-sess workforce entra dev-idp-workforce.pem "$port" "$issuer_port" >"$dir/providers/bench-sess.yaml"
        ids=(bench-sess)
    fi
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
        local extra=${SERVER_EXTRA:-}
        [[ $variant == steady ]] && extra="verify_cache_entries: ${STEADY_ENTRIES:-$((TOKENS / 10))}${extra:+, $extra}"
        echo "server: { threads: 1${extra:+, $extra} }"
        [[ $variant == session ]] && echo "session: { store: \"$store\", key_file: $KEYS/session.key }"
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
        if [[ $variant == session ]]; then echo "    auth: session"; else echo "    auth: bearer"; fi
        echo "    upstream: [127.0.0.1:$backend]"
        echo "    require: { groups_any: [employees] }"
        printf '%s' "$idtoken"
    } >"$dir/routes.yaml"
}

IDF_PID=""; IDF_PORT=""; IDF_ADMIN=""
start_idf() { # start_idf NAME VARIANT [BINARY] [SESSION_STORE] [ISSUER_PORT] -> IDF_PID IDF_PORT IDF_ADMIN
    local name=$1 variant=$2 bin=${3:-$IDF} dir="$WORK/idf-$1-$RANDOM" i code
    IDF_PORT=$(free_port); IDF_ADMIN=$(free_port)
    # A binary from before the audit log has no `audit.output` key to refuse or accept.
    LEGACY=$(grep -aqF 'audit.output' "$bin" && echo 0 || echo 1) write_idf_config "$dir" "$variant" "$IDF_PORT" "$IDF_ADMIN" "$BACKEND_PORT" "${4:-memory}" "${5:-}"
    (cd "$dir" && IDFABRIC_LOG=warn NO_COLOR=1 exec taskset -c "$PROXY_CPU" ${WRAP:-} "$bin" serve --config "$dir/routes.yaml") \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    IDF_PID=$!
    PIDS+=("$IDF_PID"); STOPSIG[$IDF_PID]=INT   # Pingora: SIGINT = fast shutdown
    wait_port "$IDF_PORT" "$IDF_PID" || { cat "$dir/stderr.log" >&2; exit 1; }
    for i in $(seq "${READY_TRIES:-300}"); do
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
mint() { "$IDF" token mint --user alice --config "$MINT/routes.yaml" --ttl 12h "$@"; }
mint --provider bench-wf >"$WORK/hot.txt"
# cached_tokens NAME COUNT KEYFILE MINT-ARGS...: a token file in $OUT/cache, reused for
# 6 h (the tokens live 12 h), re-minted when missing, stale or of another key.
cached_tokens() {
    local name=$1 n=$2 keysum f t0; keysum=$(cksum <"$KEYS/$3" | cut -d' ' -f1); shift 3
    f="$OUT/cache/$name-$n-$keysum.txt"
    if [[ -f "$f" && -n $(find "$f" -mmin -360 2>/dev/null) && $(wc -l <"$f") -eq $n ]]; then
        log "reusing $n $name tokens from $f"
    else
        rm -f "$OUT/cache/$name"-*.txt
        log "minting $n $name tokens (cached for 6 h in $OUT/cache)"
        t0=$(date +%s)
        mint --count "$n" "$@" >"$f.tmp" && mv "$f.tmp" "$f"
        log "minted in $(( $(date +%s) - t0 )) s"
    fi
    CACHED=$f
}
cached_tokens valid "$TOKENS" dev-idp-workforce.pem --provider bench-wf
VALID=$CACHED
if want distinct_users mix; then
    "$IDF" token mint --help 2>&1 | grep -- --distinct-users >/dev/null || { echo "$IDF has no \`token mint --distinct-users\`" >&2; exit 1; }
    cached_tokens users "$USERS" dev-idp-workforce.pem --provider bench-wf --distinct-users
    USERS_FILE=$CACHED
fi
if want es256_hot es256_distinct; then
    mint --provider bench-es >"$WORK/hot-es256.txt"
    cached_tokens es256 "$TOKENS" dev-idp-es256.pem --provider bench-es
    VALID_ES=$CACHED
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
LONG=(base)   # long-lived bearer gateways: base always (the sanity checks use it)
for v in noid r1000 p100 audit; do want "$v" && LONG+=("$v"); done
want es256_hot && LONG+=(es256)
for v in "${LONG[@]}"; do
    start_idf "$v" "$v"
    IPID[$v]=$IDF_PID; IPORT[$v]=$IDF_PORT; IADMIN[$v]=$IDF_ADMIN
done
if [[ -n ${BASELINE:-} ]]; then
    [[ -x $BASELINE ]] || { echo "BASELINE=$BASELINE is not an executable" >&2; exit 1; }
    start_idf baseline base "$BASELINE"
    BL_PID=$IDF_PID; BL_PORT=$IDF_PORT; BL_ADMIN=$IDF_ADMIN
    log "baseline $BASELINE :$BL_PORT (pid $BL_PID)"
fi

# Sessions: a real redis-server on loopback (no persistence), on the load core.
REDIS_PID=""
if want session_redis replicas; then
    REDIS_PORT=$(free_port)
    taskset -c "$LOAD_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize no --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID"); STOPSIG[$REDIS_PID]=TERM
    wait_port "$REDIS_PORT" "$REDIS_PID" || { cat "$WORK/redis.log" >&2; exit 1; }
    log "redis-server :$REDIS_PORT (pid $REDIS_PID)"
fi

# signin NAME PORT: the dev provider's browser sign-in, driven with curl and a cookie
# jar, as a browser goes through it; writes "idfabric_session=<value>" to
# $WORK/cookie-NAME.txt (the Cookie header wrk sends).
signin() {
    local name=$1 base="http://127.0.0.1:$2" jar="$WORK/jar-$1" login authz page cb back value
    local c=(curl -s -o /dev/null -w '%{http_code} %{redirect_url}\n' -c "$jar" -b "$jar" -H 'Accept: text/html')
    fail() { echo "sign-in on $name ($base): $*" >&2; exit 1; }
    rm -f "$jar"
    # 1. the session route sends a browser without a session to the login page
    read -r code login < <("${c[@]}" "$base/")
    [[ $code == 302 && $login == */.idfabric/login* ]] || fail "GET / answered $code $login, expected 302 to the login page"
    # 2. one provider: the login page goes straight to its authorize endpoint (PKCE,
    #    state, nonce; sets the binding cookie)
    read -r code authz < <("${c[@]}" "$login")
    [[ $code == 302 && $authz == */.idfabric/dev/*/authorize\?* ]] || fail "login answered $code $authz, expected 302 to the dev provider"
    # 3. the dev provider's page offers the demo user
    page=$(curl -s -c "$jar" -b "$jar" "$authz")
    grep -q 'name="user" value="alice"' <<<"$page" || fail "the dev provider's page has no button for alice"
    # 4. picking alice posts the page's form: its hidden fields are the authorize
    #    parameters, which the endpoint also reads from the query
    read -r code cb < <("${c[@]}" --data-urlencode user=alice "$authz")
    [[ $code == 302 && $cb == */.idfabric/callback\?*code=* ]] || fail "choosing alice answered $code $cb, expected 302 to the callback"
    # 5. the callback (with the binding cookie) sets the session and returns to /
    read -r code back < <("${c[@]}" "$cb")
    [[ $code == 302 ]] || fail "the callback answered $code, expected 302"
    value=$(awk -F'\t' -v n="$SESSION_COOKIE" '$6 == n { v = $7 } END { print v }' "$jar")
    [[ -n $value ]] || fail "no $SESSION_COOKIE cookie after the callback"
    echo "$SESSION_COOKIE=$value" >"$WORK/cookie-$name.txt"
    log "signed in on $name: session cookie of ${#value} characters"
}
SESSION_COOKIE=idfabric_session
if want session_mem; then
    start_idf session_mem session "$IDF" memory
    IPID[session_mem]=$IDF_PID; IPORT[session_mem]=$IDF_PORT; IADMIN[session_mem]=$IDF_ADMIN
    signin session_mem "$IDF_PORT"
fi
if want session_redis; then
    start_idf session_redis session "$IDF" "redis://127.0.0.1:$REDIS_PORT"
    IPID[session_redis]=$IDF_PID; IPORT[session_redis]=$IDF_PORT; IADMIN[session_redis]=$IDF_ADMIN
    signin session_redis "$IDF_PORT"
fi
if want replicas; then
    # Two gateways, one Redis, one session key; the sign-in happens on the first, whose
    # port is the provider's issuer in both configs.
    start_idf replica_a session "$IDF" "redis://127.0.0.1:$REDIS_PORT"
    IPID[replica_a]=$IDF_PID; IPORT[replica_a]=$IDF_PORT; IADMIN[replica_a]=$IDF_ADMIN
    start_idf replica_b session "$IDF" "redis://127.0.0.1:$REDIS_PORT" "${IPORT[replica_a]}"
    IPID[replica_b]=$IDF_PID; IPORT[replica_b]=$IDF_PORT; IADMIN[replica_b]=$IDF_ADMIN
    signin replicas "${IPORT[replica_a]}"
fi
if [[ -n $REDIS_PID ]] && command -v redis-cli >/dev/null 2>&1; then
    n=$(redis-cli -p "$REDIS_PORT" dbsize)
    ((n >= 1)) || { echo "the Redis store holds no keys after the sign-ins" >&2; exit 1; }
    log "redis: $n keys after the sign-ins"
fi
log "backend :$BACKEND_PORT  nginx :$NGINX_PORT (worker $NGINX_WORKER)  bare-pingora :$BARE_PORT (pid $BARE_PID)"
for v in "${!IPID[@]}"; do log "idfabric $v :${IPORT[$v]} (pid ${IPID[$v]})"; done

# Sanity: every target answers 200 with a valid credential, 401 with an invalid one.
check() { # check URL EXPECTED [TOKEN | "Cookie: ..."]
    local code
    if [[ ${3:-} == Cookie:* ]]; then code=$(curl -s -o /dev/null -w '%{http_code}' -H "$3" "$1")
    elif [[ -n ${3:-} ]]; then code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $3" "$1")
    else code=$(curl -s -o /dev/null -w '%{http_code}' "$1"); fi
    [[ $code == "$2" ]] || { echo "sanity check failed: $1 answered $code, expected $2" >&2; exit 1; }
}
jwt_claim() { # jwt_claim NAME [PART] < TOKEN: a string member of the payload (PART 2) or header (1), unverified
    local p; p=$(cut -d. -f"${2:-2}" | tr '_-' '/+')
    while (( ${#p} % 4 )); do p+="="; done
    base64 -d <<<"$p" 2>/dev/null | grep -o "\"$1\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4 || true
}
HOT=$(head -n1 "$WORK/hot.txt")
head -n 1 "$VALID" >"$WORK/flood-base.txt"
check "http://127.0.0.1:$NGINX_PORT/" 200
check "http://127.0.0.1:$BARE_PORT/" 200
for v in "${LONG[@]}"; do [[ $v == es256 ]] || check "http://127.0.0.1:${IPORT[$v]}/" 200 "$HOT"; done
check "http://127.0.0.1:${IPORT[base]}/" 200 "$(head -n1 "$VALID")"
check "http://127.0.0.1:${IPORT[base]}/" 401 "$(head -n1 "$INVALID")"
check "http://127.0.0.1:${IPORT[base]}/" 401
if [[ -n ${USERS_FILE:-} ]]; then
    check "http://127.0.0.1:${IPORT[base]}/" 200 "$(sed -n 2p "$USERS_FILE")"
    s1=$(head -n1 "$USERS_FILE" | jwt_claim sub); s2=$(sed -n 2p "$USERS_FILE" | jwt_claim sub)
    [[ -n $s1 && $s1 != "$s2" ]] || { echo "distinct users: the first two tokens have the same sub ($s1)" >&2; exit 1; }
fi
if want es256_hot; then
    check "http://127.0.0.1:${IPORT[es256]}/" 200 "$(head -n1 "$WORK/hot-es256.txt")"
    check "http://127.0.0.1:${IPORT[es256]}/" 200 "$(head -n1 "$VALID_ES")"
    [[ $(head -n1 "$WORK/hot-es256.txt" | jwt_claim alg 1) == ES256 && $(head -n1 "$VALID_ES" | jwt_claim alg 1) == ES256 ]] \
        || { echo "bench-es does not sign ES256" >&2; exit 1; }
    [[ $(head -n1 "$WORK/hot.txt" | jwt_claim alg 1) == RS256 ]] || { echo "bench-wf does not sign RS256" >&2; exit 1; }
fi
for v in session_mem session_redis replicas; do
    want "$v" || continue
    c="Cookie: $(<"$WORK/cookie-$v.txt")"
    if [[ $v == replicas ]]; then ports=("${IPORT[replica_a]}" "${IPORT[replica_b]}"); else ports=("${IPORT[$v]}"); fi
    for port in "${ports[@]}"; do
        check "http://127.0.0.1:$port/" 200 "$c"
        check "http://127.0.0.1:$port/" 401            # an API client without a session
        check "http://127.0.0.1:$port/" 401 "$HOT"     # a bearer token is not a session here
    done
done

# ------------------------------------------------------------------ runs --------------
TSV="$RUN/runs.tsv"
printf 'round\ttarget\tscenario\trequests\tduration_us\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx\tsockerr\tvmhwm_kb\tvmrss_kb\tcache_hits\tcache_misses\texpected_401\tredis_cpu_us_per_req\n' >"$TSV"

wrk_run() { # wrk_run OUTFILE CONNS DURATION_S URL SCRIPT [ARGS...]
    local out=$1 c=$2 d=$3 url=$4 script=$5; shift 5
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$c" -d"${d}s" --latency -s "$script" "$url" -- "$@" >"$out" 2>&1
}
bench_line() { # bench_line WRKOUT -> "requests duration p50 p99 non2xx sockerr expected401" (last BENCH line)
    awk '/^BENCH/ { delete v; for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        l = v["requests"] " " v["duration_us"] " " v["p50_us"] " " v["p99_us"] " " v["non2xx"] " " v["sockerr"] " " (v["expected401"] + 0) }
        END { if (l != "") print l }' "$1"
}
# EXTRA_PID: a process whose CPU is reported beside the proxy's (redis-server)
EXTRA_PID=""
extra_ticks() { if [[ -n $EXTRA_PID ]]; then cpu_ticks "$EXTRA_PID"; else echo 0; fi; }
record() { # record ROUND TARGET SCENARIO WRKOUT CPU_TICKS TOTAL_REQUESTS PID ADMIN HITS0 MISSES0 [EXTRA_TICKS]
    local r=$1 target=$2 sc=$3 out=$4 ticks=$5 total=$6 pid=$7 admin=$8 h0=$9 m0=${10} xt=${11:--}
    local req dur p50 p99 non sock e401
    read -r req dur p50 p99 non sock e401 < <(bench_line "$out")
    [[ -n ${req:-} ]] || { echo "no wrk result in $out:" >&2; cat "$out" >&2; exit 1; }
    [[ $total == "-" ]] && total=$req
    local rps cpu hwm rss hits=- misses=- xcpu=-
    rps=$(awk -v n="$req" -v d="$dur" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
    cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
    [[ $xt != - ]] && xcpu=$(awk -v t="$xt" -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
    hwm=$(status_kb "$pid" VmHWM); rss=$(status_kb "$pid" VmRSS)
    if [[ $admin != - ]]; then
        hits=$(( $(metric "$admin" idfabric_verify_cache_hits_total) - h0 ))
        misses=$(( $(metric "$admin" idfabric_verify_cache_misses_total) - m0 ))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$r" "$target" "$sc" "$req" "$dur" "$rps" "$p50" "$p99" "$cpu" "$non" "$sock" "$hwm" "$rss" "$hits" "$misses" "$e401" "$xcpu" >>"$TSV"
    log "round $r  $(printf '%-13s %-14s' "$target" "$sc") rps=$rps p50=${p50}us p99=${p99}us cpu=${cpu}us/req non2xx=$non$( ((e401)) && echo " expected401=$e401")"
}

# run_one ROUND TARGET SCENARIO PID URL ADMIN SCRIPT [ARGS...]
run_one() {
    local r=$1 target=$2 sc=$3 pid=$4 url=$5 admin=$6 script=$7; shift 7
    local out="$RUN/wrk/r$r-$sc.txt" t0 t1 x0 x1 h0=0 m0=0
    if [[ $admin != - ]]; then
        h0=$(metric "$admin" idfabric_verify_cache_hits_total); m0=$(metric "$admin" idfabric_verify_cache_misses_total)
    fi
    t0=$(cpu_ticks "$pid"); x0=$(extra_ticks)
    wrk_run "$out" "$CONNS" "$DUR_S" "$url" "$script" "$@"
    t1=$(cpu_ticks "$pid"); x1=$(extra_ticks)
    record "$r" "$target" "$sc" "$out" $((t1 - t0)) - "$pid" "$admin" "$h0" "$m0" "$([[ -n $EXTRA_PID ]] && echo $((x1 - x0)) || echo -)"
    sleep 1
}

# load_replicas OUT_A OUT_B DURATION_S: one wrk per replica, CONNS/2 connections each, at once
load_replicas() {
    local half=$(( (CONNS + 1) / 2 )) wa cookie="$WORK/cookie-replicas.txt"
    wrk_run "$1" "$half" "$3" "http://127.0.0.1:${IPORT[replica_a]}/" "$HOTLUA" "$cookie" Cookie &
    wa=$!; PIDS+=("$wa")
    wrk_run "$2" $((CONNS - half > 0 ? CONNS - half : 1)) "$3" "http://127.0.0.1:${IPORT[replica_b]}/" "$HOTLUA" "$cookie" Cookie
    wait "$wa" || true; untrack "$wa"
}
# merge_bench WRKOUT_A WRKOUT_B: one BENCH line for both replicas (requests summed,
# the longer duration, the worse p50 / p99)
merge_bench() {
    { bench_line "$1"; bench_line "$2"; } | awk '{ n += $1; if ($2 > d) d = $2; if ($3 > p50) p50 = $3; if ($4 > p99) p99 = $4; e += $5; s += $6; k++ }
        END { if (k == 2) printf "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n", n, d, p50, p99, e, s }'
}
# run_replicas ROUND: CPU of both replicas summed, requests summed, rps summed,
# latency the worse of the two
run_replicas() {
    local r=$1 a="$RUN/wrk/r$1-replicas-a.txt" b="$RUN/wrk/r$1-replicas-b.txt" out="$RUN/wrk/r$1-replicas.txt" t0 t1 x0 x1
    t0=$(( $(cpu_ticks "${IPID[replica_a]}") + $(cpu_ticks "${IPID[replica_b]}") )); x0=$(cpu_ticks "$REDIS_PID")
    load_replicas "$a" "$b" "$DUR_S"
    t1=$(( $(cpu_ticks "${IPID[replica_a]}") + $(cpu_ticks "${IPID[replica_b]}") )); x1=$(cpu_ticks "$REDIS_PID")
    merge_bench "$a" "$b" >"$out"
    # rps = the sum of both replicas' request rates (requests over the longer duration)
    record "$r" idfabric replicas "$out" $((t1 - t0)) - "${IPID[replica_a]}" - 0 0 $((x1 - x0))
    sleep 1
}

HOTLUA="$BENCH/wrk/hot.lua"; TOKLUA="$BENCH/wrk/tokens.lua"; FLOODLUA="$BENCH/wrk/flood.lua"; MIXLUA="$BENCH/wrk/mix.lua"

# scenario SC: what one wrk run of SC needs -> S_PID S_URL S_ADMIN S_SCRIPT S_ARGS S_FRESH
# (S_FRESH: a gateway started for this run only, to stop afterwards; S_EXTRA: redis)
scenario() {
    local sc=$1 v
    S_SCRIPT=$HOTLUA; S_ARGS=("$WORK/hot.txt"); S_FRESH=""; S_EXTRA=""
    fresh() { start_idf "$1" "$2" "${3:-$IDF}"; S_FRESH=$IDF_PID; S_PID=$IDF_PID; S_URL="http://127.0.0.1:$IDF_PORT/"; S_ADMIN=$IDF_ADMIN; }
    case $sc in
        nginx) S_PID=$NGINX_WORKER; S_URL="http://127.0.0.1:$NGINX_PORT/"; S_ADMIN=- ;;
        bare) S_PID=$BARE_PID; S_URL="http://127.0.0.1:$BARE_PORT/"; S_ADMIN=- ;;
        hot|noid|r1000|p100|audit|es256_hot|session_mem|session_redis)
            case $sc in hot) v=base ;; es256_hot) v=es256 ;; *) v=$sc ;; esac
            S_PID=${IPID[$v]}; S_URL="http://127.0.0.1:${IPORT[$v]}/"; S_ADMIN=${IADMIN[$v]}
            if [[ $sc == es256_hot ]]; then S_ARGS=("$WORK/hot-es256.txt"); fi
            if [[ $sc == session_* ]]; then S_ARGS=("$WORK/cookie-$sc.txt" Cookie); fi
            if [[ $sc == session_redis ]]; then S_EXTRA=$REDIS_PID; fi ;;
        base_hot) S_PID=$BL_PID; S_URL="http://127.0.0.1:$BL_PORT/"; S_ADMIN=$BL_ADMIN ;;
        distinct) fresh "distinct" base; S_SCRIPT=$TOKLUA; S_ARGS=("$VALID") ;;
        distinct_steady)
            # Fill the cache and let the allocator reach its working set first: a
            # warm-up run over the second half of the tokens, then the measured run
            # from the first line (STEADY_ENTRIES < TOKENS / 2: every request misses).
            fresh "distinct-steady" steady; S_SCRIPT=$TOKLUA; S_ARGS=("$VALID")
            wrk_run "$RUN/wrk/warmup-distinct-steady.txt" "$CONNS" "$DUR_S" "$S_URL" "$TOKLUA" "$VALID" $((TOKENS / 2)) ;;
        base_distinct) fresh "base-distinct" base "$BASELINE"; S_SCRIPT=$TOKLUA; S_ARGS=("$VALID") ;;
        base_distinct_users) fresh "base-distinct-users" base "$BASELINE"; S_SCRIPT=$TOKLUA; S_ARGS=("$USERS_FILE") ;;
        distinct_users) fresh "distinct-users" base; S_SCRIPT=$TOKLUA; S_ARGS=("$USERS_FILE") ;;
        es256_distinct) fresh "es256-distinct" es256; S_SCRIPT=$TOKLUA; S_ARGS=("$VALID_ES") ;;
        mix) fresh "mix" base; S_SCRIPT=$MIXLUA; S_ARGS=("$WORK/hot.txt" "$USERS_FILE" "$WORK/flood-base.txt") ;;
        flood) fresh "flood" base; S_SCRIPT=$FLOODLUA; S_ARGS=("$WORK/flood-base.txt") ;;
        *) echo "no single-run scenario $sc" >&2; exit 2 ;;
    esac
}

# PROFILE=hot,bare,… : instead of the rounds, one wrk run per named scenario under
# `perf record` (cpu-clock, call graphs), reports in $RUN/perf-<scenario>.txt.
if [[ -n "${PROFILE:-}" ]]; then
    command -v perf >/dev/null 2>&1 || { echo "PROFILE needs perf (apt-get install linux-perf)" >&2; exit 1; }
    IFS=, read -r -a profs <<<"$PROFILE"
    for sc in "${profs[@]}"; do
        if [[ $sc == replicas ]]; then pid="${IPID[replica_a]},${IPID[replica_b]}"; S_FRESH=""
        else scenario "$sc"; pid=$S_PID; fi
        log "profiling $sc (pid $pid) for $DURATION"
        perf record -q -e cpu-clock -F "${PERF_FREQ:-499}" --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" -p "$pid" -o "$RUN/perf-$sc.data" -- sleep "$DUR_S" 2>/dev/null &
        perf_pid=$!
        PIDS+=("$perf_pid")
        if [[ $sc == replicas ]]; then
            load_replicas "$RUN/wrk/profile-replicas-a.txt" "$RUN/wrk/profile-replicas-b.txt" "$DUR_S"
            merge_bench "$RUN/wrk/profile-replicas-a.txt" "$RUN/wrk/profile-replicas-b.txt" >"$RUN/wrk/profile-$sc.txt"
        else
            wrk_run "$RUN/wrk/profile-$sc.txt" "$CONNS" "$DUR_S" "$S_URL" "$S_SCRIPT" "${S_ARGS[@]}"
        fi
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
                | grep -E 'idfabric::|pingora_proxy::|moka::|aws_lc|jsonwebtoken|prometheus|tracing|redis' | cut -c1-220 | head -60
        } >"$RUN/perf-$sc.txt" || true
        log "perf report: $RUN/perf-$sc.txt ($(bench_line "$RUN/wrk/profile-$sc.txt" | awk '{printf "%d requests, non2xx %d", $1, $5}'))"
        [[ -n $S_FRESH ]] && stop_tracked "$S_FRESH"
    done
    exit 0
fi

# COUNT=bare,hot,… : per-request counts instead of the rounds (see the header).
if [[ -n "${COUNT:-}" ]]; then
    command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1 \
        || { echo "COUNT needs valgrind (apt-get install valgrind)" >&2; exit 1; }
    command -v perf >/dev/null 2>&1 || { echo "COUNT needs perf (apt-get install linux-perf)" >&2; exit 1; }
    COUNT_REQS=${COUNT_REQS:-2000}
    CTABLE="$RUN/count.md"
    {
        echo "# COUNT=$COUNT COUNT_REQS=$COUNT_REQS, commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "| scenario | instructions/req (user space) | × bare | × hot | syscalls/req | context switches/req | page faults/req | D1 misses/req | LL misses/req |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    } >"$CTABLE"
    # counted OUT N FILE MODE [HEADER]: exactly N requests on one keep-alive connection
    counted() {
        local out=$1; shift
        taskset -c "$LOAD_CPU" python3 "$BENCH/count_client.py" "$C_URL" "$@" >"$out" 2>&1 \
            || { echo "COUNT: the client failed:" >&2; cat "$out" >&2; exit 1; }
    }
    # start_counted SC: SC's target under callgrind -> C_PID C_URL C_ARGS (FILE MODE [HEADER])
    start_counted() {
        local sc=$1 cg="--tool=callgrind --dump-instr=no --collect-systime=no --callgrind-out-file=$RUN/callgrind-$1.out"
        [[ ${COUNT_CACHE:-0} == 1 ]] && cg+=" --cache-sim=yes"
        C_ARGS=("$WORK/hot.txt" one)
        if [[ $sc == bare ]]; then
            local port; port=$(free_port)
            taskset -c "$PROXY_CPU" valgrind $cg "$BARE" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$BACKEND_PORT" \
                >"$WORK/bare-count.log" 2>&1 &
            C_PID=$!; PIDS+=("$C_PID"); STOPSIG[$C_PID]=INT
            WAIT_TRIES=2400 wait_port "$port" "$C_PID"
            C_URL="http://127.0.0.1:$port/"; return
        fi
        local v=$sc store=memory
        case $sc in
            hot|distinct|distinct_users) v=base ;;
            es256_hot|es256_distinct) v=es256 ;;
            session_mem) v=session ;;
        esac
        WRAP="valgrind $cg" READY_TRIES=3000 WAIT_TRIES=2400 start_idf "count-$sc" "$v" "$IDF" "$store"
        C_PID=$IDF_PID; C_URL="http://127.0.0.1:$IDF_PORT/"
        case $sc in
            es256_hot) C_ARGS=("$WORK/hot-es256.txt" one) ;;
            distinct) C_ARGS=("$VALID" cycle) ;;
            distinct_users) C_ARGS=("$USERS_FILE" cycle) ;;
            es256_distinct) C_ARGS=("$VALID_ES" cycle) ;;
            session_mem) signin "count-$sc" "$IDF_PORT"; C_ARGS=("$WORK/cookie-count-$sc.txt" one Cookie) ;;
        esac
    }
    IFS=, read -r -a counted <<<"$COUNT"
    BARE_IR=""; HOT_IR=""
    for sc in "${counted[@]}"; do
        [[ $sc == nginx || $sc == flood || $sc == distinct_steady || $sc == mix || $sc == session_redis || $sc == replicas || $sc == base_* ]] \
            && { log "COUNT: $sc is not counted (run it in the rounds)"; continue; }
        # 1. system calls, context switches, page faults of the native process
        if [[ $sc == bare ]]; then pid=$BARE_PID; url="http://127.0.0.1:$BARE_PORT/"; script=$HOTLUA; args=("$WORK/hot.txt")
        else scenario "$sc"; pid=$S_PID; url=$S_URL; script=$S_SCRIPT; args=("${S_ARGS[@]}"); fi
        perf stat -x, -e raw_syscalls:sys_enter,context-switches,page-faults -p "$pid" -o "$RUN/perfstat-$sc.csv" -- sleep "$DUR_S" &
        ps_pid=$!; PIDS+=("$ps_pid")
        wrk_run "$RUN/wrk/count-native-$sc.txt" "$CONNS" "$DUR_S" "$url" "$script" "${args[@]}"
        wait "$ps_pid" || true; untrack "$ps_pid"
        [[ $sc != bare && -n $S_FRESH ]] && stop_tracked "$S_FRESH"
        nreq=$(bench_line "$RUN/wrk/count-native-$sc.txt" | cut -d' ' -f1)
        per() { awk -F, -v e="$1" -v n="$nreq" '$3 == e && n > 0 { printf "%.2f", $1 / n }' "$RUN/perfstat-$sc.csv"; }
        sys=$(per raw_syscalls:sys_enter); cs=$(per context-switches); pf=$(per page-faults)
        # 2. user-space instructions under callgrind: warm up, zero, count COUNT_REQS requests
        log "COUNT $sc: starting under callgrind"
        start_counted "$sc"
        # The warm-up's tokens are the first of the file; the counted run starts with new ones.
        counted "$RUN/wrk/count-warm-$sc.txt" $((COUNT_REQS / 4)) "${C_ARGS[@]}"
        callgrind_control -z "$C_PID" >/dev/null
        args=("${C_ARGS[@]}"); [[ ${args[1]} == cycle ]] && args[1]="cycle@$((COUNT_REQS / 4))"
        counted "$RUN/wrk/count-$sc.txt" "$COUNT_REQS" "${args[@]}"
        callgrind_control -d "$C_PID" >/dev/null
        n=$(bench_line "$RUN/wrk/count-$sc.txt" | awk '{ print $1 }')
        non2xx=$(bench_line "$RUN/wrk/count-$sc.txt" | awk '{ print $5 }')
        stop_tracked "$C_PID"
        dump=$(ls -t "$RUN"/callgrind-"$sc".out* 2>/dev/null | grep -v '\.out$' | head -n1 || true)
        [[ -z $dump ]] && dump="$RUN/callgrind-$sc.out"
        ir=$(awk '/^(summary|totals):/ { v = $2 } END { print v + 0 }' "$dump")
        ((n > 0 && ir > 0)) || { echo "COUNT $sc: no requests ($n) or no instructions ($ir) counted; see $dump" >&2; exit 1; }
        ((non2xx == 0)) || { echo "COUNT $sc: $non2xx requests did not answer 2xx" >&2; exit 1; }
        ipr=$((ir / n))
        # COUNT_CACHE=1: simulated first-level data and last-level cache misses (reads + writes)
        d1=-; ll=-
        if [[ ${COUNT_CACHE:-0} == 1 ]]; then
            read -r d1 ll < <(awk -v n="$n" '/^events:/ { for (i = 2; i <= NF; i++) ev[i] = $i }
                /^(summary|totals):/ { for (i = 2; i <= NF; i++) v[ev[i]] = $i }
                END { printf "%.0f %.0f\n", (v["D1mr"] + v["D1mw"]) / n, (v["DLmr"] + v["DLmw"]) / n }' "$dump")
        fi
        [[ $sc == bare ]] && BARE_IR=$ipr
        [[ $sc == hot ]] && HOT_IR=$ipr
        ratio=$([[ -n $BARE_IR ]] && awk -v a="$ipr" -v b="$BARE_IR" 'BEGIN { printf "%.2f", a / b }' || echo -)
        # × hot: the 5 % targets (100 providers, 1,000 routes) are against the hot token
        vs_hot=$([[ -n $HOT_IR && $sc != bare ]] && awk -v a="$ipr" -v b="$HOT_IR" 'BEGIN { printf "%.3f", a / b }' || echo -)
        printf '| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n' "$sc" "$ipr" "$ratio" "$vs_hot" "$sys" "$cs" "$pf" "$d1" "$ll" >>"$CTABLE"
        log "COUNT $sc: $ipr instructions/req over $n requests (×bare $ratio), syscalls/req $sys, ctx switches/req $cs, page faults/req $pf"
    done
    cat "$CTABLE"
    exit 0
fi

# run_scenario ROUND SC [TARGET]: one wrk run of SC (a fresh gateway where SC needs one)
run_scenario() {
    scenario "$2"
    EXTRA_PID=$S_EXTRA
    run_one "$1" "${3:-idfabric}" "$2" "$S_PID" "$S_URL" "$S_ADMIN" "$S_SCRIPT" "${S_ARGS[@]}"
    EXTRA_PID=""
    if [[ -n $S_FRESH ]]; then stop_tracked "$S_FRESH"; fi
}

for r in $(seq 1 "$ROUNDS"); do
    log "---- round $r of $ROUNDS"
    # The baselines get the same Authorization header (not checked), as in the issue's
    # reference runs, so request sizes match.
    run_scenario "$r" nginx nginx
    run_scenario "$r" bare bare-pingora
    for sc in hot noid r1000 p100 audit es256_hot session_mem session_redis; do
        if want "$sc"; then run_scenario "$r" "$sc"; fi
        if [[ $sc == hot && -n ${BASELINE:-} ]] && want hot; then run_scenario "$r" base_hot baseline; fi
    done
    if want replicas; then run_replicas "$r"; fi
    # Cache misses: a fresh gateway (empty caches) every round.
    for sc in distinct distinct_steady distinct_users es256_distinct mix; do
        if want "$sc"; then run_scenario "$r" "$sc"; fi
        if [[ $sc == distinct && -n ${BASELINE:-} ]] && want distinct; then run_scenario "$r" base_distinct baseline; fi
        if [[ $sc == distinct_users && -n ${BASELINE:-} ]] && want distinct_users; then run_scenario "$r" base_distinct_users baseline; fi
    done

    # Invalid-token flood beside valid hot traffic, on a fresh gateway (peak RSS is its own).
    want flood || continue
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
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] && commit="$commit (with uncommitted changes)"
    echo "# commit $commit; binary $IDF"
    echo "# $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "# ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS TOKENS=$TOKENS USERS=$USERS SCENARIOS=$SCENARIOS FLOOD_CONNS=$FLOOD_CONNS proxy CPU $PROXY_CPU, wrk+backend CPU $LOAD_CPU"
    echo "# wrk -t$THREADS -c$CONNS -d$DURATION --latency; medians over rounds; ratios are medians of same-round ratios"
    echo
    awk -F'\t' -f "$BENCH/summarize.awk" "$FLOOR_TSV" "$TSV"
} | tee "$RUN/table.md"
cp "$RUN/table.md" "$OUT/latest.md"
log "raw results: $RUN"
