#!/usr/bin/env bash
# README's benchmark table from the JSON reports of `ol bench --json FILE`,
# so no figure is copied by hand. One column per report, in the order given
# (the first is the one described, the others show the noise between runs),
# then the target; below it, the commit and the command of each run.
#
#   scripts/bench.sh --check --json /tmp/run1.json   (repeat for more runs)
#   scripts/bench-table.sh /tmp/run1.json [/tmp/run2.json ...]
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: $0 REPORT.json [REPORT.json ...] (from ol bench --json)" >&2
    exit 2
fi
for f in "$@"; do
    jq -e . "$f" >/dev/null || { echo "$f is not a JSON report of ol bench" >&2; exit 1; }
done

# Every row: scenario, measure, target, and a jq expression that reads the
# figure from that scenario's object of one report ("-" when it did not run).
rows=(
    'warm|p50 / p99 through the manager (ms)||"\(.manager.p50_ms * 100 | round / 100) / \(.manager.p99_ms * 100 | round / 100)"'
    'warm|p50 / p99 straight to the container'"'"'s socket (ms)||"\(.direct.p50_ms * 100 | round / 100) / \(.direct.p99_ms * 100 | round / 100)"'
    'warm|p50 ratio|≤ 1.5|"**\(.p50_ratio * 100 | round / 100)**"'
    'warm-concurrency|1 / 8 / 32 callers: p50 through the manager, a bare proxy, direct (ms)||"\([.levels[] | "\(.manager.p50_ms * 100 | round / 100), \(.proxy.p50_ms * 100 | round / 100), \(.direct.p50_ms * 100 | round / 100)"] | join(" / "))"'
    'warm-concurrency|1 / 8 / 32 callers: calls/s through the manager, a bare proxy, direct||"\([.levels[] | "\(.manager_per_s | round), \(.proxy_per_s | round), \(.direct_per_s | round)"] | join(" / "))"'
    'warm-concurrency|p50 bare proxy / direct with 1 caller (the floor of any proxy)||"\(.levels[0].proxy_p50_ratio * 100 | round / 100)"'
    'warm-concurrency|p50 ratio with 1 caller; calls/s ratio with 32|≤ 1.3; ≥ 0.8|"**\(.levels[0].p50_ratio * 100 | round / 100)**; **\(.levels[-1].throughput_ratio * 100 | round / 100)**"'
    'cold|first call, prewarmed pool: p50 / max (ms)|p50 < 50|"**\(.prewarmed.p50_ms * 10 | round / 10)** / \(.prewarmed.max_ms * 10 | round / 10)"'
    'cold|first call, no prewarming: p50 (ms)||"\(.no_prewarm.p50_ms | round)"'
    'cold|`docker run` of the runtime image: p50 (ms)||"\(.docker_run.p50_ms | round)"'
    'cold|`docker run` / prewarmed|≥ 10x|"**\(.speedup_vs_docker_run * 10 | round / 10)x**"'
    'burst|platform: mean / p50 / p99 / max (ms)||"\(.platform.latency.mean_ms | round) / \(.platform.latency.p50_ms | round) / \(.platform.latency.p99_ms | round) / \(.platform.latency.max_ms | round)"'
    'burst|ideal server: mean (ms)||"\(.ideal.latency.mean_ms * 10 | round / 10)"'
    'burst|mean ratio platform / ideal|≤ 1.3|"**\(.mean_ratio * 100 | round / 100)**"'
    'burst|errors; all clients served once (s)|0; ≤ 3|"**\(.platform.errors); \(.platform.all_served_once_s * 100 | round / 100)**"'
    'writer|records/s: journal + writer / batches of 1000 / one insert each|batched ≥ 20 000|"\(.journaled_per_s | round) / **\(.batched_per_s | round)** / \(.single_per_s | round)"'
    'soak|calls (answered as their kind should be) in s; redeploys meanwhile||"\(.calls) (\(.expected)) in \(.seconds | round) s; \(.redeploys)"'
    'soak|platform 5xx / lost records / double records|0 / 0 / 0|"**\(.platform_5xx) / \(.lost_records) / \(.double_records)**"'
    'soak|manager RSS before / after (MB)|flat (≤ +64)|"\(.rss_before_mb * 10 | round / 10) / \(.rss_after_mb * 10 | round / 10)"'
    'deploys|flask==3.0.3 into an empty cache: p50 / max (ms)||"\(.uncached.p50_ms | round) / \(.uncached.max_ms | round)"'
    'deploys|cached, resolved in a builder: p50 / max (ms)||"\(.cached_builder.p50_ms | round) / \(.cached_builder.max_ms | round)"'
    'deploys|cached, from the memo: p50 / max (ms)|p50 < 300|"**\(.cached_memo.p50_ms * 10 | round / 10)** / \(.cached_memo.max_ms * 10 | round / 10)"'
    'deploys|builder / memo, p50|≥ 5x|"**\(.memo_vs_builder | round)x**"'
)

header="| scenario | measure |"
rule="| --- | --- |"
for i in $(seq 1 "$#"); do
    if [ "$i" -eq 1 ]; then header+=" this run |"; else header+=" run $i |"; fi
    rule+=" --- |"
done
echo "$header target |"
echo "$rule --- |"
for row in "${rows[@]}"; do
    IFS='|' read -r scenario measure target expr <<<"$row"
    line="| $scenario | $measure |"
    any=""
    for f in "$@"; do
        cell=$(jq -r --arg s "$scenario" "if .[\$s] == null then \"-\" else (.[\$s] | $expr) end" "$f")
        [ "$cell" != "-" ] && any=1
        line+=" $cell |"
    done
    [ -n "$any" ] && echo "$line $target |"
done
echo
i=1
for f in "$@"; do
    name="this run"
    [ "$i" -gt 1 ] && name="run $i"
    jq -r --arg name "$name" '"\($name): commit `\(.commit)`, `\(.command)`" +
        (if (.burst // null) != null then ", burst of \(.burst.clients) clients for \(.burst.seconds) s with a \(.burst.handler_ms) ms handler" else "" end) +
        (if (.checks // []) | length > 0 then ", checks: \([.checks[] | select(.passed)] | length) of \(.checks | length) met" else "" end) + "."' "$f"
    echo
    i=$((i + 1))
done
