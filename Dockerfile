# syntax=docker/dockerfile:1
# One image for the API (`hubgate serve`, the default) and the sync workers (`hubgate worker`).
# Dependencies come from requirements.lock only, every file checked against its sha256: nothing is
# resolved at build time. Refresh the lock with deploy/refresh-lock.sh (README.md, "Docker image").
#
# The base is pinned to an exact Python release on an exact Debian release. Its digest is not written
# here because it could not be verified where this file was made (no access to the image registry):
# where you can reach it, pin it too, e.g.
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm    # -> sha256:…
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:… .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtual environment with the locked dependencies, then hubgate's own wheel -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# In hash mode pip also refuses any dependency that the lock does not pin with a hash. The runtime venv
# gets no pip or setuptools of its own: the base image's pip installs into it (--python).
RUN python -m venv --without-pip /opt/hubgate \
 && python -m pip --python /opt/hubgate/bin/python install --require-hashes -r requirements.lock \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY mirror ./mirror
COPY api ./api
# hubgate itself: built by the locked setuptools, installed without its dependencies (all locked above),
# then pip check proves the lock satisfies every requirement hubgate declares.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python -m pip --python /opt/hubgate/bin/python install --no-deps --no-index /wheels/hubgate-*.whl \
 && python -m pip --python /opt/hubgate/bin/python check

# --- runtime: the base image, the virtual environment, a non-root user; no compilers, no build venv ---
FROM ${PYTHON_IMAGE}
# The base image's own setuptools and wheel are build tools nothing here needs at run time.
RUN python -m pip uninstall --no-cache-dir -y -q setuptools wheel \
 && groupadd --system --gid 10001 hubgate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin hubgate \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/hubgate /opt/hubgate
# The root filesystem may be read-only (Kubernetes): no bytecode is written at run time (pip compiled it).
ENV PATH=/opt/hubgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HUBGATE_DATA_DIR=/data \
    HUBGATE_HOST=0.0.0.0 \
    HUBGATE_PORT=8080
WORKDIR /data
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: the same image runs workers, which serve no HTTP. Compose and Kubernetes probe the API
# themselves (/readyz, /healthz).
ENTRYPOINT ["hubgate"]
CMD ["serve"]
