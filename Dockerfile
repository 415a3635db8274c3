# syntax=docker/dockerfile:1.7
# lawm: one image for the API (`lawm serve`, the default command) and the workers (`lawm worker`).
#
#   docker build -t lawm:gpu .                          # CUDA runtime + TensorRT + onnxruntime-gpu (default)
#   docker build -t lawm:cpu --build-arg VARIANT=cpu .  # CPU only: slim Python, CPU torch, onnxruntime
#
# Both install the core and the serve and export extras (pyproject.toml): the build stage exports the
# demo model, and `lawm serve` exports a model given with LAWM_EXPORT_FROM on its first start.
#
# Stages: base-{gpu,cpu} (the OS and Python) -> deps (dependencies only, from pyproject.toml, so a
# source change does not reinstall them) -> build (the package, and models/demo exported to ONNX)
# -> runtime (the venv and the app, run as a non-root user). deploy/ runs it with Redis.

ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ----------------------------------------------------------------------------- bases
FROM ${CUDA_IMAGE} AS base-gpu
# Ubuntu 24.04's Python 3.12 (the package needs >= 3.11); versions are fixed by the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV LAWM_DEVICE=cuda \
    TORCH_SPEC="torch==2.13.0" \
    TORCH_INDEX="https://pypi.org/simple" \
    EXTRAS="serve,export,tensorrt"

FROM ${PYTHON_IMAGE} AS base-cpu
ENV LAWM_DEVICE=cpu \
    TORCH_SPEC="torch==2.13.0" \
    TORCH_INDEX="https://download.pytorch.org/whl/cpu" \
    EXTRAS="serve,export"

# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ----------------------------------------------------------------------------- dependencies
FROM base AS deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python3 -m venv /opt/venv
# Only the project metadata: this layer is rebuilt when dependencies change, not when code does.
COPY pyproject.toml ./
RUN python -c "import tomllib, os; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in os.environ['EXTRAS'].split(',') if e]; \
deps = [d for d in p['dependencies'] if not d.startswith('torch')] + [d for e in extras for d in p['optional-dependencies'][e]]; \
open('requirements.txt', 'w').write('\n'.join(deps) + '\n')"
# Versions: torch pinned by TORCH_SPEC, the rest by pyproject.toml's ranges (requirements.txt).
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}" \
    && pip install -r requirements.txt \
    && if [[ ",${EXTRAS}," == *,tensorrt,* ]]; then pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.18"; fi

# ----------------------------------------------------------------------------- the package
FROM deps AS build
COPY README.md ./
COPY training ./training
COPY exporters ./exporters
COPY service ./service
COPY configs ./configs
COPY models/demo ./models/demo
RUN --mount=type=cache,target=/root/.cache/pip pip install --no-deps . \
    && lawm export models/demo --to /app/models/repository --name demo --version 1

# ----------------------------------------------------------------------------- runtime
FROM base AS runtime
RUN groupadd --system --gid 10001 lawm \
    && useradd --system --uid 10001 --gid lawm --home-dir /app --shell /usr/sbin/nologin lawm
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /app /app
COPY --from=build --chown=10001:10001 /src/models/demo /app/models/demo
RUN install -d -o 10001 -g 10001 /app/results
WORKDIR /app
USER 10001:10001
# The API listens on LAWM_PORT (8000); a worker serves /livez, /readyz, /metrics on LAWM_WORKER_PORT (8001).
# HEALTHCHECK asks whichever LAWM_HEALTH_PORT names (compose sets 8001 for workers).
ENV LAWM_HOST=0.0.0.0 \
    LAWM_PORT=8000 \
    LAWM_WORKER_PORT=8001 \
    LAWM_HEALTH_PORT=8000 \
    LAWM_REPO=/app/models/repository \
    LAWM_RESULT_DIR=/app/results
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LAWM_HEALTH_PORT', '8000') + '/livez', timeout=4)"]
ENTRYPOINT ["lawm"]
CMD ["serve"]
