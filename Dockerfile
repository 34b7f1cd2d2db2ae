# The gateway on uvloop; config mounted at /etc/gateway/gateway.yaml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && useradd --system --no-create-home gateway

COPY config/example.yaml /etc/gateway/gateway.yaml
USER gateway
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
# Listeners in the config must bind 0.0.0.0 to be reachable from outside the container.
ENTRYPOINT ["gateway", "run"]
CMD ["/etc/gateway/gateway.yaml"]
