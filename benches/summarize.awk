# Summarises benches/load.sh's floor.tsv (name, µs; may be empty) and runs.tsv
# (tab-separated, header line) into the floor lines, the markdown table and the target
# checks. POSIX awk (mawk) compatible: no asort.
#
#   awk -F'\t' -f benches/summarize.awk benches/out/<stamp>/floor.tsv benches/out/<stamp>/runs.tsv

function median(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function maxof(list,    n, a, i, m) {
    n = split(list, a, " "); m = ""
    for (i = 1; i <= n; i++) if (m == "" || a[i] + 0 > m) m = a[i] + 0
    return m
}
function add(arr, k, v) { arr[k] = (k in arr) ? arr[k] " " v : v }
function ms(us) { return (us == "") ? "-" : sprintf("%.2f", us / 1000) }
function fmt(x, f) { return (x == "") ? "-" : sprintf(f, x) }
# median over rounds of a[r, s1] / a[r, s2]
function ratio(a, s1, s2,    r, l) {
    l = ""
    for (r = 1; r <= maxround; r++) if (((r, s1) in a) && ((r, s2) in a) && a[r, s2] > 0) l = l " " a[r, s1] / a[r, s2]
    return median(l)
}
function diff(a, s1, s2,    r, l) {
    l = ""
    for (r = 1; r <= maxround; r++) if (((r, s1) in a) && ((r, s2) in a)) l = l " " (a[r, s1] - a[r, s2])
    return median(l)
}
function verdict(ok) { return ok ? "met" : "**not met**" }

FILENAME ~ /floor\.tsv$/ { floor[$1] = $2 + 0; next }
FNR == 1 { next }
{
    r = $1; sc = $3
    if (r + 0 > maxround) maxround = r + 0
    target[sc] = $2
    add(RPS, sc, $6); add(P50, sc, $7); add(P99, sc, $8); add(CPU, sc, $9); add(HWM, sc, $12)
    rps[r, sc] = $6; p99[r, sc] = $8; cpu[r, sc] = $9
    non2xx[sc] += $10; sockerr[sc] += $11
    if ($14 != "-") { hits[sc] += $14; misses[sc] += $15 }
    if ($16 != "" && $16 + 0 > 0) e401[sc] += $16
    if ($17 != "" && $17 != "-") add(XCPU, sc, $17)
}
function note_add(s) { note = note (note == "" ? "" : "; ") s }
# ", N% cache misses" for a scenario with verify-cache counters (a distinct-token target
# holds for misses; repeats of a cycled token list are hits)
function missed(sc) { return (sc in hits && hits[sc] + misses[sc] > 0) ? sprintf(" (%.0f%% misses)", 100 * misses[sc] / (hits[sc] + misses[sc])) : "" }
END {
    n = split("nginx bare hot base_hot noid audit r1000 p100 es256_hot session_mem session_redis replicas distinct distinct_steady base_distinct distinct_users base_distinct_users es256_distinct mix flood_valid flood_invalid", order, " ")
    label["base_hot"] = "hot token, the BASELINE binary (same config)"
    label["base_distinct"] = "distinct valid tokens, the BASELINE binary (same config)"
    label["base_distinct_users"] = "distinct users, the BASELINE binary (same config)"
    label["nginx"] = "plain reverse proxy, keepalive upstream, no auth (same bearer header sent, not checked)"
    label["bare"] = "passthrough, default settings, no auth (same bearer header sent, not checked)"
    label["hot"] = "hot RS256 token: X-Identity-* headers + minted X-Identity-Token (1 route, 4 providers)"
    label["noid"] = "hot token: X-Identity-* headers, no minted token (identity_token: false)"
    label["audit"] = "hot token + minted token, audit log on (one JSON line per request to a file)"
    label["r1000"] = "hot token, 1,000 routes (999 decoys: exact, wildcard, prefix)"
    label["p100"] = "hot token, 100 providers"
    label["es256_hot"] = "hot ES256 token (provider signing with P-256) + minted token"
    label["session_mem"] = "session cookie on an `auth: session` route, memory store"
    label["session_redis"] = "session cookie on an `auth: session` route, Redis store"
    label["replicas"] = "session cookie, 2 replicas on one Redis (wrk CONNS/2 each; CPU and rps summed)"
    label["distinct"] = "distinct RS256 tokens of one user, fresh gateway per round (cache misses)"
    label["distinct_steady"] = "distinct RS256 tokens, verification cache full (evicting), after a warm-up run: steady state"
    label["distinct_users"] = "distinct users (own sub each: a new X-Identity-Token per request), fresh gateway"
    label["es256_distinct"] = "distinct ES256 tokens of one user, fresh gateway per round"
    label["mix"] = "mix: 80% hot, 15% distinct users, 5% forged (401s counted apart), fresh gateway"
    label["flood_valid"] = "hot valid token beside an invalid-token flood"
    label["flood_invalid"] = "the flood: distinct tokens with bad signatures (expect 401)"
    rs = floor["rs256_verify"]; esv = floor["es256_verify"]; ess = floor["es256_sign"]
    if (rs != "") {
        printf "Floor (criterion `floor` group, same run, proxy core): RS256 verify %.1f µs · ES256 verify %.1f µs · ES256 sign %.1f µs\n\n", rs, esv, ess
        if ("bare" in CPU) {
            b = median(CPU["bare"])
            printf "- distinct-token target: bare Pingora + 1.5 × RS256 verify + 10 µs = %.1f + %.1f + 10 = **%.1f µs/req**\n", b, 1.5 * rs, b + 1.5 * rs + 10
            printf "- distinct-user target: that + one ES256 sign = **%.1f µs/req**\n", b + 1.5 * rs + 10 + ess
            printf "- (ES256 tokens: bare + 1.5 × ES256 verify + 10 µs = %.1f µs/req)\n", b + 1.5 * esv + 10
        }
        print ""
    } else print "Floor: not measured in this run (FLOOR=0)\n"
    print "| target | scenario | rps | p50 ms | p99 ms | CPU µs/req | CPU ×bare | CPU ×nginx | rps ×bare | proxy core busy | notes |"
    print "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for (i = 1; i <= n; i++) {
        sc = order[i]
        if (!(sc in RPS)) continue
        note = ""
        if (sc in hits && hits[sc] + misses[sc] > 0) note_add(sprintf("verify cache: %d hits, %d misses (%.0f%% misses)", hits[sc], misses[sc], 100 * misses[sc] / (hits[sc] + misses[sc])))
        if (sc ~ /distinct|flood_valid|mix/) note_add(sprintf("peak RSS (VmHWM) %.1f MiB", maxof(HWM[sc]) / 1024))
        if (sc == "flood_valid" || sc == "flood_invalid") note_add("CPU/req over valid+flood requests")
        if (sc in e401) note_add(e401[sc] " expected 401s (forged tokens)")
        if (sc in XCPU) note_add(sprintf("redis-server %.1f µs/req", median(XCPU[sc])))
        if (non2xx[sc] > 0 && sc != "flood_invalid") note_add("**" non2xx[sc] " unexpected non-2xx responses**")
        if (sockerr[sc] > 0) note_add(sockerr[sc] " socket errors")
        xb = (sc != "bare" && sc != "nginx") ? fmt(ratio(cpu, sc, "bare"), "%.2f") : "-"
        xn = (sc != "nginx") ? fmt(ratio(cpu, sc, "nginx"), "%.2f") : "-"
        rb = (sc != "bare" && sc != "nginx") ? fmt(ratio(rps, sc, "bare"), "%.2f") : "-"
        busy = ""
        if (sc == "flood_valid" || sc == "flood_invalid") busy = median(RPS["flood_valid"]) + median(RPS["flood_invalid"])
        else busy = median(RPS[sc])
        busy = fmt(100 * busy * median(CPU[sc]) / 1e6, "%.0f%%")
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", target[sc], label[sc], fmt(median(RPS[sc]), "%.0f"), ms(median(P50[sc])), ms(median(P99[sc])), fmt(median(CPU[sc]), "%.1f"), xb, xn, rb, busy, note
    }
    print ""
    print "Targets (same-round ratios and differences, medians over rounds):"
    print ""
    print "| target | measured | verdict |"
    print "| --- | --- | --- |"
    if (("hot" in CPU) && ("bare" in CPU)) {
        x = ratio(cpu, "hot", "bare"); printf "| hot token + minted token: CPU/req ≤ 1.10× bare Pingora | %.2f× | %s |\n", x, verdict(x <= 1.10)
        x = diff(p99, "hot", "bare") / 1000; printf "| p99 added over bare Pingora ≤ 0.2 ms (hot token) | %+.2f ms | %s |\n", x, verdict(x <= 0.2)
    }
    if (("audit" in CPU) && ("bare" in CPU)) { x = ratio(cpu, "audit", "bare"); printf "| audit log on: CPU/req ≤ 1.20× bare Pingora | %.2f× | %s |\n", x, verdict(x <= 1.20) }
    if (("r1000" in CPU) && ("hot" in CPU)) { x = ratio(cpu, "r1000", "hot"); printf "| 1,000 routes: CPU/req ≤ 1.05× of 1 route | %.3f× | %s |\n", x, verdict(x <= 1.05) }
    if (("p100" in CPU) && ("hot" in CPU)) { x = ratio(cpu, "p100", "hot"); printf "| 100 providers: CPU/req ≤ 1.05× of 4 | %.3f× | %s |\n", x, verdict(x <= 1.05) }
    if (("hot" in CPU) && ("nginx" in CPU)) { x = ratio(cpu, "hot", "nginx"); printf "| hot token: CPU/req ≤ 2× nginx | %.2f× | %s |\n", x, verdict(x <= 2) }
    if (("session_mem" in CPU) && ("bare" in CPU)) { x = ratio(cpu, "session_mem", "bare"); printf "| session cookie, memory store: CPU/req ≤ 1.15× bare Pingora | %.2f× | %s |\n", x, verdict(x <= 1.15) }
    if (rs != "" && ("bare" in CPU)) {
        if ("distinct" in CPU) { x = diff(cpu, "distinct", "bare"); y = 1.5 * rs + 10; printf "| distinct token: CPU/req − bare ≤ 1.5 × RS256 verify + 10 µs (%.1f µs) | %+.1f µs%s | %s |\n", y, x, missed("distinct"), verdict(x <= y) }
        if ("distinct_steady" in CPU) { x = diff(cpu, "distinct_steady", "bare"); y = 1.5 * rs + 10; printf "| the same in the steady state (cache full, warmed up) | %+.1f µs%s | %s |\n", x, missed("distinct_steady"), verdict(x <= y) }
        if ("distinct_users" in CPU) { x = diff(cpu, "distinct_users", "bare"); y = 1.5 * rs + 10 + ess; printf "| distinct user: CPU/req − bare ≤ that + ES256 sign (%.1f µs) | %+.1f µs%s | %s |\n", y, x, missed("distinct_users"), verdict(x <= y) }
        if ("es256_distinct" in CPU) { x = diff(cpu, "es256_distinct", "bare"); y = 1.5 * esv + 10; printf "| distinct ES256 token: CPU/req − bare ≤ 1.5 × ES256 verify + 10 µs (%.1f µs) | %+.1f µs%s | %s |\n", y, x, missed("es256_distinct"), verdict(x <= y) }
    }
    if ("distinct" in RPS) { x = median(RPS["distinct"]); printf "| distinct valid tokens ≥ 15,000 rps on one core | %.0f rps | %s |\n", x, verdict(x >= 15000) }
    if (("flood_valid" in RPS) && ("hot" in RPS)) {
        x = ratio(rps, "flood_valid", "hot")
        printf "| valid traffic beside the flood keeps ≥ 80%% (vs hot token alone, same round) | %.0f%%; peak RSS %.1f MiB | %s |\n", 100 * x, maxof(HWM["flood_valid"]) / 1024, verdict(x >= 0.8)
    }
    if (("bare" in CPU) && ("nginx" in CPU)) { x = ratio(cpu, "bare", "nginx"); printf "| (context) bare Pingora CPU/req vs nginx | %.2f× | - |\n", x }
    if (("audit" in CPU) && ("hot" in CPU)) { x = ratio(cpu, "audit", "hot"); printf "| (context) audit log on: CPU/req vs off | %.3f× | - |\n", x }
    if (("noid" in CPU) && ("hot" in CPU)) { x = ratio(cpu, "hot", "noid"); printf "| (context) minted X-Identity-Token CPU/req vs without | %.3f× | - |\n", x }
    if (("session_redis" in CPU) && ("session_mem" in CPU)) { x = ratio(cpu, "session_redis", "session_mem"); printf "| (context) session on Redis vs memory store, CPU/req | %.2f× | - |\n", x }
    if (("es256_hot" in CPU) && ("hot" in CPU)) { x = ratio(cpu, "es256_hot", "hot"); printf "| (context) hot ES256 token vs hot RS256 token, CPU/req | %.3f× | - |\n", x }
}
