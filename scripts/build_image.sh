#!/usr/bin/env bash
# Build the podvisor image with docker or podman (whichever is here), tagged <repo>:<git-sha> and :latest.
#   IMAGE=ghcr.io/Me/podvisor scripts/build_image.sh          # build
#   PUSH=1 IMAGE=ghcr.io/me/podvisor scripts/build_image.sh   # build and push, then print the digest to pin
# Extra build arguments: BASE_IMAGE, EXTRA_PIP, PODVISOR_WHEELS (a folder of wheels mounted at build, podman).
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE="${ENGINE:-$(command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo docker || echo podman)}"
IMAGE="$(printf '%s' "${IMAGE:-podvisor}" | tr '[:upper:]' '[:lower:]')"  # GHCR wants lowercase names
SHA="$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"

args=(--build-arg "PODVISOR_REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
      --build-arg "PODVISOR_VERSION=${VERSION}" -t "${IMAGE}:${SHA}" -t "${IMAGE}:latest")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
[ -n "${EXTRA_PIP:-}" ] && args+=(--build-arg "EXTRA_PIP=${EXTRA_PIP}")
if [ -n "${PODVISOR_WHEELS:-}" ] && [ "$ENGINE" = podman ]; then
  args+=(-v "${PODVISOR_WHEELS}:/wheels:ro" --build-arg "PODVISOR_WHEELS=/wheels")
fi
# A TLS-intercepting proxy's CA, as a build secret: used by pip during the build, never stored in a layer.
if [ -n "${HOST_CA:-}" ] && [ -s "${HOST_CA}" ]; then
  args+=(--secret "id=hostca,src=${HOST_CA}")
fi
# podman's default OCI format drops HEALTHCHECK; the docker format keeps it.
[ "$ENGINE" = podman ] && args+=(--format docker)
if [ "$ENGINE" = podman ] && [[ "${BASE_IMAGE:-}" == localhost/* ]]; then
  args+=(--pull=never)  # a base made here (the smoke test's): there is no registry to look in
fi
[ "$ENGINE" = docker ] && export DOCKER_BUILDKIT=1

echo "building ${IMAGE}:${SHA} with ${ENGINE}" >&2
"$ENGINE" build "${args[@]}" .
if [ "${PUSH:-0}" = 1 ]; then
  "$ENGINE" push "${IMAGE}:${SHA}"
  "$ENGINE" push "${IMAGE}:latest"
  digest="$("$ENGINE" inspect --format '{{index .RepoDigests 0}}' "${IMAGE}:${SHA}")"
  echo "pin by digest: ${digest}"
else
  echo "image id: $("$ENGINE" inspect --format '{{.Id}}' "${IMAGE}:${SHA}")"
fi
echo "${IMAGE}:${SHA}"
