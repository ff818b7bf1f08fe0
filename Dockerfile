# rotator's container image: `docker build -t rotator .` (guide: docs/deploy/container.md).
#
# The base is pinned by tag (Python 3.11, Debian trixie). For a reproducible build, pin it by
# digest too: --build-arg PYTHON_IMAGE=python:3.11-slim-trixie@sha256:<digest>. Both stages use
# the same base, so the virtualenv built in the first runs on the second's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# -- builder: one virtualenv with the hash-checked dependencies and rotator's own wheel --------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
COPY requirements/main.txt requirements/build.txt requirements/
# The build backend (requirements/build.txt: setuptools, wheel, hash-checked) goes into a
# throwaway virtualenv that never reaches the final image.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: \
      -r requirements/build.txt
# The runtime virtualenv (requirements/main.txt, the PostgreSQL driver included) has no pip and
# no setuptools: the build pip installs into it. pip compiles every module's bytecode as it
# installs (never pass --no-compile here): the virtualenv is read-only at run time and
# PYTHONDONTWRITEBYTECODE is set, so without it every start would compile what it imports.
RUN python -m venv --without-pip /opt/rotator \
 && /opt/build/bin/pip --python /opt/rotator/bin/python install \
      --require-hashes --no-deps --only-binary=:all: -r requirements/main.txt
COPY pyproject.toml README.md ./
COPY rotator/ rotator/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && /opt/build/bin/pip --python /opt/rotator/bin/python install --no-deps --no-index \
      /tmp/dist/rotator-*.whl \
 && chmod -R a-w /opt/rotator

# -- runtime: the virtualenv (root-owned, read-only), a state volume, a numeric user -----------
# The configuration is mounted read-only at /etc/rotator/rotator.yaml (also the working
# directory); its server.listen must be 0.0.0.0:9402 for the port to be reachable from outside
# (the health check probes loopback either way). The state lives on the /var/lib/rotator volume.
FROM ${PYTHON_IMAGE}
# The version is pyproject.toml's (a test keeps them equal); the revision is the commit built.
ARG PYTHON_IMAGE
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Rotates Mistral AI API keys into Vault/OpenBao and AWS Secrets Manager without breaking consumers" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH="/opt/rotator/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    ROTATOR_CONFIG=/etc/rotator/rotator.yaml
COPY --from=builder /opt/rotator /opt/rotator
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/rotator \
 && install -d -o 0 -g 0 -m 0755 /etc/rotator
VOLUME ["/var/lib/rotator"]
WORKDIR /etc/rotator
USER 10001:10001
EXPOSE 9402
# The daemon handles SIGTERM itself (so also as PID 1): it drains in-flight rotations for up to
# 60 s, then cancels what is left and releases its leader lock: at worst about 110 s before it
# exits 0. Stop it with more time than that: docker stop -t 120.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/opt/rotator/bin/python", "-m", "rotator.probe"]
ENTRYPOINT ["/opt/rotator/bin/rotator"]
CMD ["--strict-permissions", "run"]
