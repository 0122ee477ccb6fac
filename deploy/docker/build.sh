#!/usr/bin/env bash
# Builds the holdfast image (`make docker`): a static, version-stamped binary
# (CGO_ENABLED=0) copied onto an empty base. Nothing is pulled.
#
# Environment:
#   IMAGE     image name, tags IMAGE:VERSION and IMAGE:latest (default holdfast)
#   VERSION   version stamp (default: git describe)
#   COMMIT    commit stamp (default: git rev-parse --short HEAD)
#   GO        go command (default go)
#   TAGS      extra tags, space separated (full names)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
IMAGE=${IMAGE:-holdfast}
GO=${GO:-go}
VERSION=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)}

ctx=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" \
	-o "$ctx/holdfast" ./cmd/holdfast)
# The non-root user (the distroless "nonroot" ids), for tools that look it up.
printf 'root:x:0:0:root:/root:/sbin/nologin\nholdfast:x:65532:65532:holdfast:/nonexistent:/sbin/nologin\n' >"$ctx/passwd"
printf 'root:x:0:\nholdfast:x:65532:\n' >"$ctx/group"
cp "$here/Dockerfile" "$ctx/Dockerfile"

# BuildKit when the buildx plugin is there; the classic builder otherwise
# (both build FROM scratch without a registry).
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi
tags=(-t "$IMAGE:$VERSION" -t "$IMAGE:latest")
for t in ${TAGS:-}; do tags+=(-t "$t"); done
docker build --pull=false --build-arg VERSION="$VERSION" "${tags[@]}" "$ctx" >&2
echo "$IMAGE:$VERSION"
