# syntax=docker/dockerfile:1
# Stage 1: build wheels for hubgate and everything it needs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY mirror ./mirror
COPY api ./api
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

# Stage 2: install offline from those wheels; run as a non-root user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 hubgate && mkdir -p /data && chown hubgate /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels hubgate[postgres] && rm -rf /wheels
USER hubgate
ENV HUBGATE_DATA_DIR=/data HUBGATE_HOST=0.0.0.0 HUBGATE_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["hubgate"]
CMD ["serve"]
