#!/bin/sh
# The demo workload: what an attested, measured workload can see, and a boot counter kept in
# the encrypted state volume (it survives reboots; `make demo-reset` starts over).
read -r up _ < /proc/uptime
echo "demo: first instruction at ${up} s since boot"
# A keyed check of the secret, SHA-256(check key || secret), with a check key the KBS serves
# next to it: the KBS operator, who has both, can recompute it; the host, which reads this
# console, cannot test guesses of the secret against it (a plain SHA-256 would let it).
s=/run/secrets/demo-secret c=/run/secrets/demo-check
if [ -f "$s" ] && [ -f "$c" ]; then
  echo "demo: secret demo-secret $(wc -c < "$s") bytes, check $(cat "$c" "$s" | sha256sum | cut -d' ' -f1)"
fi
# The event log is JSON-SEQ: each record starts with RS (0x1e); the last one is the separator.
echo "demo: event log has $(tr -cd '\036' < /run/cvm-agent/measure.log | wc -c) records; last: $(tr '\036' '\n' < /run/cvm-agent/measure.log | grep -v '^$' | tail -n 1)"
state=/var/lib/demo
if [ -d "$state" ]; then
  n=$(cat "$state/boot-count" 2>/dev/null || echo 0)
  n=$((n + 1))
  echo "$n" > "$state/boot-count.new" && sync && mv "$state/boot-count.new" "$state/boot-count" && sync
  echo "demo: boot-count=$n"
else
  echo "demo: no state volume at $state"
fi
