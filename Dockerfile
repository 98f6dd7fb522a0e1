# One image for every INSA service; compose picks the service with `insa run <name>`.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
# Editable install keeps migrations/ found next to the code (shared/migrate.py). The Sparkplug
# B protobuf module is generated here, not committed; grpcio-tools (the dev extra's range)
# only for that.
RUN pip install -e . \
 && pip install 'grpcio-tools>=1.85,<2' \
 && python -m grpc_tools.protoc -I shared/sparkplug --python_out=shared/sparkplug \
      --pyi_out=shared/sparkplug shared/sparkplug/sparkplug_b.proto \
 && pip uninstall --yes grpcio-tools grpcio \
 && useradd --system --uid 10001 insa
USER insa
ENTRYPOINT ["insa"]
CMD ["--help"]
