#!/usr/bin/env bash
# The OCI images baked into the demo/test root as an image layout (the air-gapped source):
#   scripts/mkimages.sh <layout-dir>
# Tags:
#   demo   the demo workload (images/demo/demo.sh): prints the secrets' SHA-256, the event log's
#          last record and a boot counter kept on the state volume
#   hello  busybox with a permissive launch policy (cmd and GREETING/EXIT_CODE env overrides,
#          added capabilities)
#   strict busybox that allows no overrides (the launch-policy tests)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: mkimages.sh <layout-dir>}
CVMCTL=${CVMCTL:-target/release/cvmctl}
busybox=/bin/busybox
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,etc,tmp,var/lib,run,proc,sys,dev}
cp "$busybox" "$tree/bin/busybox"
for applet in sh cat echo ls sha256sum cut tr tail head wc grep mv sync sleep id env true false printf mkdir test [ expr dd rm awk unshare mknod mkfifo; do
  ln -sf busybox "$tree/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n' > "$tree/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' > "$tree/etc/group"
cp images/demo/demo.sh "$tree/demo.sh"

rm -rf "$out"
"$CVMCTL" image build "$tree" -o "$out" --tag demo --cmd '["/bin/sh","/demo.sh"]' \
  --env PATH=/bin --label tee.launch_policy.log_redirect=Always \
  --label tee.launch_policy.allow_mount_destinations=/var/lib/demo >/dev/null
"$CVMCTL" image build "$tree" -o "$out" --tag hello \
  --cmd '["/bin/sh","-c","echo \"${GREETING:-hello} from $(id -u) in $(cat /proc/1/comm)\"; exit ${EXIT_CODE:-0}"]' \
  --env PATH=/bin --env GREETING=hello \
  --label tee.launch_policy.log_redirect=Always \
  --label tee.launch_policy.allow_cmd_override=true \
  --label tee.launch_policy.allow_env_override=GREETING,EXIT_CODE \
  --label tee.launch_policy.allow_capabilities=true \
  --label tee.launch_policy.allow_mount_destinations=/var/lib/app:/var/lib/demo >/dev/null
"$CVMCTL" image build "$tree" -o "$out" --tag strict --cmd '["/bin/sh","-c","echo strict ran"]' \
  --env PATH=/bin --label tee.launch_policy.log_redirect=Always >/dev/null
