# The runtime image: Python 3.11, the package, and the example functions.
# Not built on the development machines (no Docker engine there); see deploy/compose.yaml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 runtime
WORKDIR /app

# The dependencies first, pinned and sha256-checked (a layer that changes only with the
# lock), then the package itself without resolving anything again.
COPY requirements-runtime.lock ./
RUN pip install --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY chaos ./chaos
RUN pip install --no-deps .

COPY config ./config
COPY functions ./functions

USER runtime
EXPOSE 8080
# A container has no embedded Redis: point it at one (RUNTIME_REDIS__URL), and listen on
# all interfaces inside the container's own network namespace.
ENV RUNTIME_HTTP__HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["runtime"]
CMD ["serve", "--functions", "functions"]
