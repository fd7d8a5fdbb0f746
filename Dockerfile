# The gateway (and the demo upstream, which the compose file runs from the same image).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gateway

# The same install as the README's, without the development extras.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY upstream_demo ./upstream_demo
RUN pip install --no-cache-dir .
COPY config.yaml ./

# /app is root's and read-only to the gateway user, so the default SQLite file lives in /data,
# the one directory uid 10001 may write (mount a volume there to keep users across containers).
# DATABASE_URL=mysql://... overrides it, as the compose file does.
RUN mkdir /data && chown 10001:10001 /data
ENV DATABASE_URL=sqlite:////data/gateway.db
VOLUME ["/data"]
# All of the container's interfaces (the config's default, 127.0.0.1, is unreachable through -p);
# what is exposed outside is up to -p / ports.
ENV GATEWAY_HOST=0.0.0.0

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["gateway", "healthcheck"]
# Exec form: SIGTERM reaches the gateway, which drains requests in flight and exits 0.
ENTRYPOINT ["gateway"]
CMD ["serve"]
