# syntax=docker/dockerfile:1
# procsnap's image, used by the Helm chart (helm/procsnap):
#   docker build -t REGISTRY/procsnap:VERSION .
# Two stages: one compiles the C reader (exporter/native/) and installs procsnap with its
# dependencies into a virtualenv; the final image is a slim Python with that virtualenv and
# no compiler. Both stages use the same base image, so the virtualenv's interpreter links
# resolve in the final one.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# a C compiler for the extension (setup.py builds exporter/native/*.c with -Werror; the base
# image has the Python headers), clang and libbpf for the optional bpf backend
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev clang libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# what the build reads (see .dockerignore): the package metadata, the readme it names, the code
COPY pyproject.toml setup.py README.md ./
COPY exporter/ exporter/
# (the checks run from /: here /src/exporter, without the built extension, would shadow the
# installed package)
RUN python -m venv /opt/procsnap \
 && /opt/procsnap/bin/pip install --no-cache-dir . \
 && cd / \
 && /opt/procsnap/bin/python -c "from exporter.reader import native_available; assert native_available(), 'C reader not built'" \
 && /opt/procsnap/bin/procsnap --version

FROM ${PYTHON_IMAGE}
# libbpf's runtime for --backend bpf/auto (without it procsnap reads /proc and says why once)
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/procsnap /opt/procsnap
# no .pyc written at run time (the install compiled them; the chart's root filesystem is read-only)
ENV PATH=/opt/procsnap/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# procsnap writes no file and needs no particular user: nobody by default. The chart runs it
# as uid 0 with every capability dropped (see helm/procsnap/values.yaml: securityContext).
USER 65534:65534
EXPOSE 9256
ENTRYPOINT ["procsnap"]
