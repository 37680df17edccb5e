# stripe-reconcile: slim, non-root, every dependency pinned (requirements.lock).
#   docker build -t stripe-reconcile:0.1.0 .
#   docker run --rm -e STRIPE_SECRET_KEY_FILE=/run/secrets/stripe-key ... stripe-reconcile:0.1.0 check
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-virtualenv -r requirements.lock
COPY pyproject.toml README.md ./
COPY reconcile ./reconcile
COPY jobs ./jobs
COPY reports ./reports
# --no-deps: only the pinned set above is installed.
RUN /opt/venv/bin/pip install --no-deps .

# docker-compose's sandbox service (`--target sandbox`): the product plus the emulator and
# its `sandbox` extra (aiohttp). The production image, the last stage, holds neither.
FROM build AS sandbox-build
COPY requirements-sandbox.lock ./
RUN /opt/venv/bin/pip install --require-virtualenv -r requirements-sandbox.lock
COPY sandbox ./sandbox
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11.7-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /data --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["stripe-reconcile"]
CMD ["--help"]

FROM runtime AS sandbox
COPY --from=sandbox-build /opt/venv /opt/venv

# Last: a plain `docker build .` gives the production image.
FROM runtime AS production
COPY --from=build /opt/venv /opt/venv
