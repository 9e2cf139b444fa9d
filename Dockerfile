# fficube in a container, for AWS Batch (see examples/aws-batch/) or any runner.
#   docker build -t fficube .
#   docker run --rm fficube sector 1 --source s3://stpubdata/tess/public/ffi --anon --dest s3://my-bucket/cubes
# Two stages: the wheel is built with the source tree, the image gets only the wheel.
FROM python:3.11-slim AS build
# A C compiler for the wheel's one kernel (src/fficube/_kernels.c); the final image needs none.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# Not root: the process needs no privilege, and a container escape gets none.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin fficube
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fficube
WORKDIR /home/fficube
# Logs and progress go to stderr unbuffered, as CloudWatch Logs expects.
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["fficube"]
CMD ["--help"]
