# One image for every meshbus process; docker-compose.yml picks the command.

# Build stage: the wheel, with the proxy's request path compiled by mypyc (setup.py), which needs gcc.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY bus bus
COPY proxy proxy
COPY plugins plugins
COPY control control
COPY telemetry telemetry
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MALLOC_TRIM_THRESHOLD_=1048576 MALLOC_MMAP_THRESHOLD_=1048576
WORKDIR /src
COPY samples samples
COPY --from=build /wheels /wheels
# Every mount point docker-compose.yml uses exists here, owned by the user the processes run as:
# a named volume mounted on an image directory starts as a copy of it (owner included), while a
# mount point the image lacks is created root-owned, and `mesh` could not write there.
# /ca: meshbus-ca's keys; /tokens: bootstrap tokens; /var/lib/meshbus: a sidecar's state;
# /bus: the bus's server config and credentials (meshctl bus init).
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels && useradd --create-home mesh \
    && mkdir -p /ca /tokens /var/lib/meshbus /bus \
    && chown mesh:mesh /ca /tokens /var/lib/meshbus /bus
USER mesh
WORKDIR /home/mesh
