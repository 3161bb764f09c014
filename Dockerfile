# One image for every meshbus process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MALLOC_TRIM_THRESHOLD_=1048576 MALLOC_MMAP_THRESHOLD_=1048576
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bus bus
COPY proxy proxy
COPY plugins plugins
COPY control control
COPY telemetry telemetry
COPY samples samples
RUN pip install --no-cache-dir . && useradd --create-home mesh
USER mesh
WORKDIR /home/mesh
