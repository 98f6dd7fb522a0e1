# One image for every INSA service; compose picks the service with `insa run <name>`.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
# Editable install keeps migrations/ found next to the code (shared/migrate.py).
RUN pip install -e . && useradd --system --uid 10001 insa
USER insa
ENTRYPOINT ["insa"]
CMD ["--help"]
