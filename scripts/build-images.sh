#!/usr/bin/env bash
# Builds the example and benchmark images from real binaries (Debian's busybox-static) with
# umoci, and pushes them to the local registry with skopeo: two independent tools, so the
# images berth pulls are not made by berth.
#
#   scripts/build-images.sh [REGISTRY]     # default 127.0.0.1:5000
#
# Images:
#   REGISTRY/acme/hello:1.0   a component: greets from config.json, writes a table to /data/out
#   REGISTRY/acme/true:1.0    runs `true` and nothing else (for benchmarks)
set -euo pipefail

registry="${1:-127.0.0.1:5000}"
busybox=/bin/busybox
for tool in umoci skopeo; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install $tool)" >&2; exit 1; }
done
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || {
  echo "$busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || ldd "$busybox" 2>&1 | grep -q 'not a dynamic' || {
  echo "$busybox is not static (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
umoci init --layout "$layout"

# A rootfs with busybox and its applets as symlinks.
base_rootfs() {
  local root=$1
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/data"
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
}

build() {
  local name=$1 setup=$2; shift 2
  umoci new --image "$layout:$name"
  umoci unpack --image "$layout:$name" "$work/$name"
  base_rootfs "$work/$name/rootfs"
  "$setup" "$work/$name/rootfs"
  umoci repack --image "$layout:$name" "$work/$name"
  umoci config --image "$layout:$name" "$@"
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$name" "docker://$registry/acme/$name:1.0"
  echo "pushed $registry/acme/$name:1.0"
}

hello_setup() {
  mkdir -p "$1/app"
  cat > "$1/app/run.sh" <<'SCRIPT'
#!/bin/sh
# Reads parameters.greeting from /data/config.json and writes a table to /data/out/tables.
set -e
greeting=$(sed -n 's/.*"greeting": *"\([^"]*\)".*/\1/p' /data/config.json | head -n 1)
[ -n "$greeting" ] || { echo "parameters.greeting is missing" >&2; exit 1; }
echo "$greeting from $(hostname), component $KBC_COMPONENTID, config $KBC_CONFIGID"
printf '"greeting","length"\n"%s","%s"\n' "$greeting" "${#greeting}" > /data/out/tables/greeting.csv
echo "wrote /data/out/tables/greeting.csv"
SCRIPT
  chmod 755 "$1/app/run.sh"
}

true_setup() { :; }

build hello hello_setup --config.entrypoint /bin/sh --config.cmd /app/run.sh \
  --config.workingdir /data --config.env PATH=/bin
build true true_setup --config.cmd /bin/true --config.env PATH=/bin
